"""Arrival order: Stripe's at-least-once unordered webhooks, the funnel's webhooks and the CSV exports.

Each Stripe event arrives seconds after it was created, or is retried with backoff for up to three days,
or never arrives (the endpoint was failing; the nightly run finds the object anyway); some arrive twice.
On top of the time order, neighbours are swapped and a few deliveries slip a few places late, as
concurrent deliveries do.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from stripe_standin.months_facts import DAY, HOUR, Ledger
from stripe_standin.render import LATEST, render
from stripe_standin.store import Store

P_DROPPED = 0.10
P_DUPLICATED = 0.10
P_RETRIED_LATE = 0.08
P_SWAP_NEIGHBOURS = 0.06
P_SLIP_LATE = 0.04
RETRY_WINDOW = 3 * DAY  # Stripe retries a webhook for up to three days
DROPPED = -1  # a forced arrival time that means "never delivered"


@dataclass(frozen=True)
class Arrival:
    when: int
    kind: str  # "stripe" | "funnel" | "csv"
    payload: Any  # stripe: the event's JSON text; funnel: the body; csv: the text
    pinned: bool = False  # placed on purpose (see forced_arrivals): local disorder leaves it alone


def forced_arrivals(ledger: Ledger, events: list[dict[str, Any]], rng: random.Random) -> dict[str, int]:
    """Event id -> arrival time (or DROPPED) for disputes whose charge event is lost or comes after them."""
    first_event: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        first_event.setdefault((event["type"], event["data"]["object"]["id"]), event)
    forced: dict[str, int] = {}
    for dispute in ledger.disputes:
        if not dispute.charge_event_fate:
            continue
        charge_event = first_event[("charge.succeeded", dispute.charge.id)]
        opened = first_event[("charge.dispute.created", dispute.id)]
        forced[opened["id"]] = opened["created"] + rng.randint(1, 30)
        if dispute.charge_event_fate == "dropped":
            forced[charge_event["id"]] = DROPPED
        else:
            late = opened["created"] + rng.randint(10 * 60, 12 * HOUR)
            forced[charge_event["id"]] = min(late, charge_event["created"] + RETRY_WINDOW)
    return forced


def _stripe_arrivals(
    events: list[dict[str, Any]], store: Store, forced: dict[str, int], rng: random.Random
) -> list[Arrival]:
    arrivals = []
    for event in events:
        # The body as the endpoint receives it: rendered once, in the event's own API version.
        text = json.dumps(render(event, LATEST, store), ensure_ascii=False)
        fixed = forced.get(event["id"])
        if fixed is not None:
            if fixed != DROPPED:
                arrivals.append(Arrival(fixed, "stripe", text, pinned=True))
            continue
        if rng.random() < P_DROPPED:
            continue
        when = event["created"] + rng.randint(1, 40)
        if rng.random() < P_RETRIED_LATE:
            when += rng.randint(5 * 60, RETRY_WINDOW)
        arrivals.append(Arrival(when, "stripe", text))
        if rng.random() < P_DUPLICATED:
            # Delivered, but the reply was too slow: Stripe sends it again.
            arrivals.append(Arrival(when + rng.randint(30, DAY), "stripe", text))
    return arrivals


def _jostle(arrivals: list[Arrival], rng: random.Random) -> list[Arrival]:
    """Local disorder on top of the time order: swapped neighbours, and a few deliveries a few places late."""
    order = list(arrivals)
    position = 0
    while position < len(order) - 1:
        pinned = order[position].pinned or order[position + 1].pinned
        if rng.random() < P_SWAP_NEIGHBOURS and not pinned:
            order[position], order[position + 1] = order[position + 1], order[position]
            position += 1
        position += 1
    for position in range(len(order) - 1, -1, -1):
        if rng.random() < P_SLIP_LATE and not order[position].pinned:
            moved = order.pop(position)
            order.insert(min(len(order), position + rng.randint(1, 5)), moved)
    return order


def arrange(
    events: list[dict[str, Any]],
    store: Store,
    forced: dict[str, int],
    webhooks: list[tuple[int, dict[str, Any]]],
    exports: list[tuple[int, str]],
    rng: random.Random,
) -> list[tuple[str, Any]]:
    """(kind, body) in arrival order; every delivery gets its own copy of its body."""
    arrivals = _stripe_arrivals(events, store, forced, rng)
    arrivals += [Arrival(when, "funnel", json.dumps(body, ensure_ascii=False)) for when, body in webhooks]
    arrivals += [Arrival(when, "csv", text) for when, text in exports]
    arrivals.sort(key=lambda arrival: arrival.when)  # stable: same-second deliveries keep their order
    return [
        (arrival.kind, arrival.payload if arrival.kind == "csv" else json.loads(arrival.payload))
        for arrival in _jostle(arrivals, rng)
    ]

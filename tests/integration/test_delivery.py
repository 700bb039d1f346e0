"""Signed events over real HTTP, through Redis and a real worker, into the database."""

from __future__ import annotations

import time

import pytest

from tests import stripe_fixtures as sf
from tests.integration.stack import Stack, needs_redis

pytestmark = [pytest.mark.integration, needs_redis]


def test_a_signed_charge_succeeded_posted_to_the_running_stack_ends_as_a_done_row_with_its_charge(
    stack: Stack, uid: str
):
    charge_id, event_id = f"ch_{uid}", f"evt_deliver_{uid}"
    document = sf.event(
        "charge.succeeded", sf.charge(charge_id, amount=4200, currency="EUR"), event_id=event_id
    )

    response = stack.post_event(document)

    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "duplicate": False}
    row = stack.wait_for_events([event_id])[event_id]
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", 1, None)

    shown = stack.cli("events", "show", event_id, "--json")
    assert shown.returncode == 0, shown
    detail = shown.json()
    assert (detail["id"], detail["type"], detail["status"], detail["attempts"]) == (
        event_id, "charge.succeeded", "done", 1,
    )  # fmt: skip
    assert detail["processed_at"] is not None

    charges = stack.query("SELECT * FROM charges WHERE id = ?", (charge_id,))
    assert len(charges) == 1
    assert charges[0]["amount"] == 4200
    assert charges[0]["currency"] == "eur"
    assert charges[0]["status"] == "succeeded"
    assert charges[0]["paid"] == 1
    assert charges[0]["last_event_id"] == event_id


def test_the_same_event_posted_twice_is_stored_once_and_applied_once(stack: Stack, uid: str):
    charge_id, event_id = f"ch_{uid}", f"evt_twice_{uid}"
    document = sf.event("charge.succeeded", sf.charge(charge_id, amount=1999), event_id=event_id)

    first = stack.post_event(document)
    second = stack.post_event(document)
    stack.wait_for_events([event_id])
    third = stack.post_event(document)  # Stripe retrying after the event was already applied

    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert first.json() == {"received": True, "duplicate": False}
    assert second.json() == {"received": True, "duplicate": True}
    assert third.json() == {"received": True, "duplicate": True}
    time.sleep(1.0)  # room for a wrongly enqueued second message to be processed
    rows = stack.query("SELECT status, attempts FROM events WHERE id = ?", (event_id,))
    assert rows == [{"status": "done", "attempts": 1}]
    assert stack.query("SELECT amount FROM charges WHERE id = ?", (charge_id,)) == [{"amount": 1999}]


def test_a_refund_whose_events_arrive_in_reverse_order_ends_in_its_latest_state(stack: Stack, uid: str):
    charge_id, refund_id = f"ch_{uid}", f"re_{uid}"
    t0 = int(time.time()) - 120
    succeeded = sf.event(
        "charge.succeeded", sf.charge(charge_id, amount=5000), event_id=f"evt_rev1_{uid}", created=t0
    )
    refund_created = sf.event(
        "refund.created",
        sf.refund(refund_id, charge_id=charge_id, amount=5000, status="pending"),
        event_id=f"evt_rev2_{uid}",
        created=t0 + 10,
    )
    charge_refunded = sf.event(
        "charge.refunded",
        sf.charge(charge_id, amount=5000, amount_refunded=5000, refunded=True),
        event_id=f"evt_rev3_{uid}",
        created=t0 + 11,
    )
    refund_succeeded = sf.event(
        "refund.updated",
        sf.refund(refund_id, charge_id=charge_id, amount=5000, status="succeeded"),
        event_id=f"evt_rev4_{uid}",
        created=t0 + 20,
    )
    in_order = [succeeded, refund_created, charge_refunded, refund_succeeded]
    ids = [d["id"] for d in in_order]

    responses = [stack.post_event(d) for d in reversed(in_order)]
    responses.append(stack.post_event(refund_created))  # and one of them delivered twice

    assert [r.status_code for r in responses] == [200] * 5
    assert [r.json()["duplicate"] for r in responses] == [False, False, False, False, True]
    rows = stack.wait_for_events(ids)
    assert {i: (rows[i]["status"], rows[i]["attempts"]) for i in ids} == {i: ("done", 1) for i in ids}
    assert stack.count("events", "id IN (?, ?, ?, ?)", tuple(ids)) == 4

    charge = stack.query("SELECT * FROM charges WHERE id = ?", (charge_id,))
    assert len(charge) == 1
    assert (charge[0]["amount"], charge[0]["amount_refunded"], charge[0]["refunded"]) == (5000, 5000, 1)
    assert charge[0]["last_event_id"] == charge_refunded["id"]
    refunds = stack.query("SELECT * FROM refunds WHERE charge = ?", (charge_id,))
    assert len(refunds) == 1
    assert (refunds[0]["id"], refunds[0]["status"], refunds[0]["amount"]) == (refund_id, "succeeded", 5000)
    assert refunds[0]["last_event_id"] == refund_succeeded["id"]


def test_two_partial_refunds_in_the_same_second_delivered_in_reverse_order_leave_the_larger_refunded_total(
    stack: Stack, uid: str
):
    charge_id = f"ch_{uid}"
    second = int(time.time()) - 60
    first_refund = sf.event(
        "charge.refunded",
        sf.charge(charge_id, amount=5000, amount_refunded=1000),
        event_id=f"evt_part1_{uid}",
        created=second,
    )
    second_refund = sf.event(
        "charge.refunded",
        sf.charge(charge_id, amount=5000, amount_refunded=3000),
        event_id=f"evt_part2_{uid}",
        created=second,
    )

    assert stack.post_event(second_refund).status_code == 200
    stack.wait_for_events([second_refund["id"]])
    assert stack.post_event(first_refund).status_code == 200
    stack.wait_for_events([first_refund["id"]])

    charge = stack.query("SELECT amount_refunded FROM charges WHERE id = ?", (charge_id,))
    assert charge == [{"amount_refunded": 3000}], "a stale event undid the newer refunded total"

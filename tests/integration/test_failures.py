"""Events whose handler fails once (retried by the worker), always (dead), or can never apply (dead at once).

Failures are made real with SQLite triggers on the stack's database: the handler's INSERT into `charges`
raises inside the worker process, exactly as a database error would.
"""

from __future__ import annotations

import time

import pytest

from tests import stripe_fixtures as sf
from tests.integration.stack import EVENT_MAX_ATTEMPTS, Stack, needs_redis

pytestmark = [pytest.mark.integration, needs_redis]


def _replay_results_for(result, event_id: str) -> dict:
    [mine] = [r for r in result.json() if r["id"] == event_id]
    return mine


def test_an_event_its_handler_can_never_apply_ends_dead_at_once_with_a_readable_error(stack: Stack, uid: str):
    charge_id, event_id = f"ch_bad_amount_{uid}", f"evt_bad_amount_{uid}"
    document = sf.event("charge.succeeded", sf.charge(charge_id, amount="5000"), event_id=event_id)

    assert stack.post_event(document).status_code == 200

    row = stack.wait_for_events([event_id], statuses=["dead"])[event_id]
    assert row["attempts"] == 1  # unprocessable: no retry
    assert row["last_error"] == "UnprocessableEvent: charge field 'amount' is missing or malformed"
    assert stack.count("charges", "id = ?", (charge_id,)) == 0
    shown = stack.cli("events", "show", event_id, "--json")
    assert shown.returncode == 0, shown
    detail = shown.json()
    assert (detail["status"], detail["last_error"]) == ("dead", row["last_error"])
    assert "UnprocessableEvent" in detail["last_traceback"]

    dry = stack.cli("replay", "--failed", "--dry-run", "--json")

    assert dry.returncode == 0, dry
    listed = {e["id"]: e["status"] for e in dry.json()["would_replay"]}
    assert listed[event_id] == "dead"

    replayed = stack.cli("replay", "--failed", "--json")

    assert replayed.returncode == 1, replayed  # one replayed event failed
    mine = _replay_results_for(replayed, event_id)
    assert (mine["status_before"], mine["status_after"]) == ("dead", "dead")
    assert mine["error"] == "UnprocessableEvent: charge field 'amount' is missing or malformed"
    assert stack.event(event_id)["attempts"] == 2
    assert stack.count("charges", "id = ?", (charge_id,)) == 0


def test_an_event_whose_handler_fails_once_is_retried_by_the_worker_and_ends_done(stack: Stack, uid: str):
    charge_id, event_id = f"ch_flaky_{uid}", f"evt_flaky_{uid}"
    # Fails while the event is on its first attempt (the attempt is committed before the handler runs).
    stack.fail_inserts(
        f"flaky_{uid}", charge_id, when=f"(SELECT attempts FROM events WHERE id = '{event_id}') < 2"
    )
    document = sf.event("charge.succeeded", sf.charge(charge_id, amount=3100), event_id=event_id)

    assert stack.post_event(document).status_code == 200

    row = stack.wait_for_events([event_id])[event_id]
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", 2, None)
    assert stack.query("SELECT amount FROM charges WHERE id = ?", (charge_id,)) == [{"amount": 3100}]


def test_an_event_whose_handler_keeps_failing_ends_dead_and_replay_failed_applies_it_once_fixed(
    stack: Stack, uid: str
):
    charge_id, event_id = f"ch_broken_{uid}", f"evt_broken_{uid}"
    trigger = f"broken_{uid}"
    stack.fail_inserts(trigger, charge_id)
    document = sf.event("charge.succeeded", sf.charge(charge_id, amount=4100), event_id=event_id)

    assert stack.post_event(document).status_code == 200

    row = stack.wait_for_events([event_id], statuses=["dead"])[event_id]
    assert row["attempts"] == EVENT_MAX_ATTEMPTS
    assert row["last_error"].startswith("IntegrityError: ")
    assert "simulated database failure" in row["last_error"]
    time.sleep(1.0)  # the worker must not try again once the event is dead
    assert stack.event(event_id)["attempts"] == EVENT_MAX_ATTEMPTS
    assert stack.count("charges", "id = ?", (charge_id,)) == 0

    dry = stack.cli("replay", "--failed", "--dry-run", "--json")
    assert dry.returncode == 0, dry
    assert {e["id"]: e["status"] for e in dry.json()["would_replay"]}[event_id] == "dead"

    stack.stop_failing(trigger)  # the fault is fixed
    replayed = stack.cli("replay", "--failed", "--json")

    results = replayed.json()
    assert replayed.returncode == (1 if any(r["error"] for r in results) else 0), replayed
    mine = _replay_results_for(replayed, event_id)
    assert (mine["status_before"], mine["status_after"], mine["error"]) == ("dead", "done", None)
    row = stack.event(event_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", EVENT_MAX_ATTEMPTS + 1, None)
    assert stack.query("SELECT amount FROM charges WHERE id = ?", (charge_id,)) == [{"amount": 4100}]

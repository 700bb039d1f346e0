"""The on-call commands against the running stack's database: replay, dry runs, the event list."""

from __future__ import annotations

import time

import pytest

from tests import stripe_fixtures as sf
from tests.integration.stack import FakeStripe, Stack, needs_redis, now_iso

pytestmark = [pytest.mark.integration, needs_redis]


def _delivered(stack: Stack, uid: str, name: str, amount: int = 2500) -> tuple[str, str]:
    charge_id, event_id = f"ch_{name}_{uid}", f"evt_{name}_{uid}"
    document = sf.event("charge.succeeded", sf.charge(charge_id, amount=amount), event_id=event_id)
    assert stack.post_event(document).status_code == 200
    stack.wait_for_events([event_id])
    return event_id, charge_id


def _charge_facts(stack: Stack, charge_id: str) -> list[dict]:
    """The charge row as a seller sees it: every column but the bookkeeping time of the last write."""
    rows = stack.query("SELECT * FROM charges WHERE id = ?", (charge_id,))
    return [{k: v for k, v in row.items() if k != "updated_at"} for row in rows]


def _table_counts(stack: Stack) -> dict[str, int]:
    return {table: stack.count(table) for table in ("events", "charges", "refunds")}


def test_replaying_a_done_event_runs_it_again_without_duplicating_its_effect(stack: Stack, uid: str):
    event_id, charge_id = _delivered(stack, uid, "replay")
    charge_before = _charge_facts(stack, charge_id)
    counts_before = _table_counts(stack)

    replayed = stack.cli("replay", event_id)

    assert replayed.returncode == 0, replayed
    assert event_id in replayed.stdout
    assert "replayed 1 event(s), 0 failed" in replayed.stdout
    row = stack.event(event_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", 2, None)

    as_json = stack.cli("replay", event_id, "--json")

    assert as_json.returncode == 0, as_json
    [result] = as_json.json()
    assert (result["id"], result["status_before"], result["status_after"], result["error"]) == (
        event_id, "done", "done", None,
    )  # fmt: skip
    assert result["fetched_from_stripe"] is False
    assert stack.event(event_id)["attempts"] == 3
    assert _charge_facts(stack, charge_id) == charge_before
    assert _table_counts(stack) == counts_before


def test_a_dry_run_replay_of_a_time_window_prints_a_json_object_and_changes_nothing(stack: Stack, uid: str):
    since = now_iso()
    first, _ = _delivered(stack, uid, "window1")
    second, _ = _delivered(stack, uid, "window2")
    until = now_iso(+1)
    events_before = stack.query("SELECT * FROM events ORDER BY id")
    charges_before = stack.query("SELECT * FROM charges ORDER BY id")

    dry = stack.cli("replay", "--since", since, "--until", until, "--dry-run", "--json")

    assert dry.returncode == 0, dry
    document = dry.json()
    assert isinstance(document, dict)
    assert document["dry_run"] is True
    assert [(e["id"], e["status"], e["attempts"]) for e in document["would_replay"]] == [
        (first, "done", 1), (second, "done", 1),
    ]  # fmt: skip

    human = stack.cli("replay", "--since", since, "--until", until, "--dry-run")

    assert human.returncode == 0, human
    assert "2 event(s) would be replayed (dry run; nothing changed)" in human.stdout
    assert stack.query("SELECT * FROM events ORDER BY id") == events_before
    assert stack.query("SELECT * FROM charges ORDER BY id") == charges_before


def test_events_json_prints_the_event_log_as_one_json_array(stack: Stack, uid: str):
    event_id, _ = _delivered(stack, uid, "listed")

    listed = stack.cli("events", "--json")

    assert listed.returncode == 0, listed
    rows = listed.json()
    assert isinstance(rows, list)
    assert len(rows) == stack.count("events")
    [mine] = [r for r in rows if r["id"] == event_id]
    assert (mine["type"], mine["status"], mine["attempts"], mine["last_error"]) == (
        "charge.succeeded",
        "done",
        1,
        None,
    )

    filtered = stack.cli("events", "--status", "done", "--type", "charge.succeeded", "--json")

    assert filtered.returncode == 0, filtered
    statuses = {(r["status"], r["type"]) for r in filtered.json()}
    assert statuses == {("done", "charge.succeeded")}
    assert event_id in {r["id"] for r in filtered.json()}


def test_replaying_an_id_missing_from_the_log_fetches_it_from_stripe_stores_it_and_applies_it(
    stack: Stack, fake_stripe: FakeStripe, uid: str
):
    charge_id, event_id = f"ch_fetched_{uid}", f"evt_fetched_{uid}"
    fake_stripe.events[event_id] = sf.event(
        "charge.succeeded", sf.charge(charge_id, amount=777, currency="gbp"), event_id=event_id,
        created=int(time.time()) - 3600,
    )  # fmt: skip

    replayed = stack.cli("replay", event_id, "--json")

    assert replayed.returncode == 0, replayed
    [result] = replayed.json()
    assert (result["id"], result["status_before"], result["status_after"], result["error"]) == (
        event_id, None, "done", None,
    )  # fmt: skip
    assert result["fetched_from_stripe"] is True
    assert (f"/v1/events/{event_id}", f"Bearer {stack.api_key}") in fake_stripe.requests
    row = stack.event(event_id)
    assert (row["status"], row["attempts"]) == ("done", 1)
    charge = stack.query("SELECT amount, currency FROM charges WHERE id = ?", (charge_id,))
    assert charge == [{"amount": 777, "currency": "gbp"}]


def test_events_lists_the_newest_first_and_json_works_before_the_show_subcommand(stack: Stack, uid: str):
    older, _ = _delivered(stack, uid, "older")
    newer, _ = _delivered(stack, uid, "newer")

    listed = stack.cli("events", "--limit", "2", "--json")

    assert listed.returncode == 0, listed
    assert [e["id"] for e in listed.json()] == [newer, older]

    shown = stack.cli("events", "--json", "show", newer)

    assert shown.returncode == 0, shown
    assert shown.json()["id"] == newer and shown.json()["status"] == "done"

    missing = stack.cli("events", "--json", "show", f"evt_missing_{uid}")

    assert missing.returncode == 5, missing
    assert missing.json()["exit_code"] == 5 and "not in the event log" in missing.json()["error"]
    assert "Traceback" not in missing.stderr


def test_a_replay_window_over_the_confirmation_threshold_needs_yes_without_a_terminal(stack: Stack, uid: str):
    since = now_iso()
    ids = [_delivered(stack, uid, f"bulk{i:02d}", amount=100 + i)[0] for i in range(51)]
    until = now_iso(+1)
    attempts_before = {i: stack.event(i)["attempts"] for i in ids}

    refused = stack.cli("replay", "--since", since, "--until", until)  # stdin is not a terminal

    assert refused.returncode == 2, refused
    assert "--yes" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert {i: stack.event(i)["attempts"] for i in ids} == attempts_before

    replayed = stack.cli("replay", "--since", since, "--until", until, "--yes", "--json", timeout=120)

    assert replayed.returncode == 0, replayed
    assert sorted(r["id"] for r in replayed.json()) == sorted(ids)
    assert {i: stack.event(i)["attempts"] for i in ids} == {i: n + 1 for i, n in attempts_before.items()}

"""On-call commands: `events`, `events show`, `replay` (ids, --failed, windows, ids fetched from Stripe)."""

import contextlib
import json

import httpx
import pytest
import respx
from sqlmodel import func, select

from models import Charge, Event
from tests.stripe_fixtures import charge, event
from worker import runtime
from worker.jobs import processing
from worker.ops import cli
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict

API = "http://127.0.0.1:12111"


@pytest.fixture
def cli_db(worker_db, monkeypatch):
    monkeypatch.setenv("STRIPE_API_BASE", API)
    monkeypatch.setenv("LOG_FORMAT", "text")
    runtime.get_settings.cache_clear()
    runtime.stripe_client.cache_clear()
    yield worker_db
    runtime.get_settings.cache_clear()
    runtime.stripe_client.cache_clear()


def add(db, document, *, process=True):
    store_event(db, event_from_dict(document), json.dumps(document))
    if process:
        # An unprocessable event ends stored as dead, which is what some of these tests look at.
        with contextlib.suppress(processing.EventGaveUp):
            processing.process_event(db, document["id"], max_attempts=5)


def run_json(capsys, *argv):
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def charges(db) -> int:
    with db.session() as session:
        return session.exec(select(func.count()).select_from(Charge)).one()


def test_events_json_lists_rows_with_status_and_filters(cli_db, capsys):
    add(cli_db, event("charge.succeeded", charge("ch_1"), event_id="evt_1"))
    add(cli_db, event("refund.created", {"id": "re_x", "object": "refund"}, event_id="evt_2"))
    code, rows = run_json(capsys, "events")
    assert code == 0
    assert {(r["id"], r["status"]) for r in rows} == {("evt_1", "done"), ("evt_2", "dead")}
    _, dead = run_json(capsys, "events", "--status", "dead")
    assert [r["id"] for r in dead] == ["evt_2"]
    assert dead[0]["last_error"].startswith("UnprocessableEvent")
    _, typed = run_json(capsys, "events", "--type", "charge.succeeded")
    assert [r["id"] for r in typed] == ["evt_1"]


def test_events_show_prints_the_payload_and_a_missing_id_is_an_error(cli_db, capsys):
    add(cli_db, event("charge.succeeded", charge("ch_1", amount=4200), event_id="evt_show"))
    code, detail = run_json(capsys, "events", "show", "evt_show")
    assert code == 0
    assert detail["payload"]["data"]["object"]["amount"] == 4200
    # Not found has its own exit code (5); it used to be 1, like any failure.
    assert cli.main(["events", "show", "evt_missing"]) == 5
    assert "not in the event log" in capsys.readouterr().err


def test_events_table_output_is_readable(cli_db, capsys):
    add(cli_db, event("charge.succeeded", charge("ch_1"), event_id="evt_table"))
    assert cli.main(["events"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["RECEIVED_AT", "ID", "TYPE", "STATUS", "ATTEMPTS", "LAST_ERROR"]
    assert "evt_table" in out[1] and "done" in out[1]


def test_replaying_a_done_event_reruns_it_without_duplicating_its_effect(cli_db, capsys):
    add(cli_db, event("charge.succeeded", charge("ch_r", amount=999), event_id="evt_r"))
    code, results = run_json(capsys, "replay", "evt_r")
    assert code == 0
    assert results == [
        {
            "id": "evt_r",
            "account": None,
            "type": "charge.succeeded",
            "status_before": "done",
            "status_after": "done",
            "fetched_from_stripe": False,
            "error": None,
        }
    ]
    assert charges(cli_db) == 1
    with cli_db.session() as session:
        assert session.get(Event, ("evt_r", "")).attempts == 2


def test_replay_failed_reruns_failed_and_dead_events_and_reports_what_still_fails(cli_db, capsys):
    add(cli_db, event("charge.succeeded", charge("ch_ok"), event_id="evt_ok"))
    add(cli_db, event("charge.succeeded", charge("ch_bad", currency=None), event_id="evt_bad"))
    code, results = run_json(capsys, "replay", "--failed")
    assert code == 1
    assert [(r["id"], r["status_after"]) for r in results] == [("evt_bad", "dead")]
    assert "currency" in results[0]["error"]


def test_a_dry_run_lists_the_window_and_changes_nothing(cli_db, capsys):
    add(cli_db, event("charge.succeeded", charge("ch_w"), event_id="evt_w"))
    code, report = run_json(capsys, "replay", "--since", "2000-01-01", "--until", "2999-01-01", "--dry-run")
    assert code == 0
    assert report["dry_run"] is True
    assert [r["id"] for r in report["would_replay"]] == ["evt_w"]
    with cli_db.session() as session:
        assert session.get(Event, ("evt_w", "")).attempts == 1


def test_a_window_replay_respects_type_and_limit(cli_db, capsys):
    for i in range(3):
        add(cli_db, event("charge.succeeded", charge(f"ch_{i}"), event_id=f"evt_win{i}"))
    add(cli_db, event("customer.created", {"id": "cus_1", "object": "customer"}, event_id="evt_other"))
    code, results = run_json(
        capsys, "replay", "--since", "2000-01-01", "--type", "charge.succeeded", "--limit", "2"
    )
    assert code == 0
    assert [r["id"] for r in results] == ["evt_win0", "evt_win1"]


def test_an_event_unknown_locally_is_fetched_from_stripe_stored_and_applied(cli_db, capsys, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_replaykey99")
    runtime.get_settings.cache_clear()
    remote = event("charge.succeeded", charge("ch_remote", amount=31_400), event_id="evt_remote")
    with respx.mock:
        route = respx.get(f"{API}/v1/events/evt_remote").mock(return_value=httpx.Response(200, json=remote))
        # A one-time payment: Stripe knows no invoice for its payment intent.
        links = respx.get(f"{API}/v1/invoice_payments").mock(
            return_value=httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        )
        # The charge carries no email: whose it is comes from its Stripe customer.
        customer = respx.get(f"{API}/v1/customers/cus_test1").mock(
            return_value=httpx.Response(
                200, json={"id": "cus_test1", "object": "customer", "email": "Remote@Example.com"}
            )
        )
        code, results = run_json(capsys, "replay", "evt_remote")
    assert route.call_count == 1 and links.call_count == 1 and customer.call_count == 1

    assert code == 0
    assert results[0]["fetched_from_stripe"] is True and results[0]["status_after"] == "done"
    with cli_db.session() as session:
        assert session.get(Charge, "ch_remote").amount == 31_400
        assert session.get(Charge, "ch_remote").customer_email == "remote@example.com"

        assert json.loads(session.get(Event, ("evt_remote", "")).payload)["id"] == "evt_remote"


def test_an_unknown_event_that_stripe_does_not_have_is_reported_without_a_secret(cli_db, capsys, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_replaykey99")
    runtime.get_settings.cache_clear()
    with respx.mock:
        respx.get(f"{API}/v1/events/evt_gone").mock(
            return_value=httpx.Response(
                404,
                json={
                    "error": {
                        "type": "invalid_request_error",
                        "code": "resource_missing",
                        "message": "No such event: 'evt_gone'",
                    }
                },
            )
        )
        code = cli.main(["replay", "evt_gone"])
    captured = capsys.readouterr()
    assert code == 1
    assert "No such event" in captured.out
    assert "sk_test_replaykey99" not in captured.out + captured.err


def test_an_unknown_event_without_an_api_key_says_what_is_missing(cli_db, capsys):
    code, results = run_json(capsys, "replay", "evt_nowhere")
    assert code == 1
    assert "STRIPE_API_KEY" in results[0]["error"]


def test_replay_needs_exactly_one_selector(cli_db, capsys):
    assert cli.main(["replay"]) == 2
    assert cli.main(["replay", "evt_1", "--failed"]) == 2
    assert "exactly one" in capsys.readouterr().err


def test_sweep_json_reports_what_it_enqueued(cli_db, capsys):
    code, report = run_json(capsys, "sweep")
    assert code == 0
    assert report == {"enqueued": {}, "total": 0, "errors": 0}

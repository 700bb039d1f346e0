"""Alerts reach the Slack-compatible sink; a sink that is down never blocks event processing."""

import json
from datetime import timedelta

import httpx
import pytest
import respx
from sqlalchemy import update
from sqlmodel import select

from models import Alert, Event
from models.types import utcnow
from tests.unit.test_refund_notes_and_alerts import duplicate_refund_events
from tests.unit.test_sales_view import deliver
from worker import runtime
from worker.jobs import alert_sink, processing
from worker.ops import cli
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict

SINK = "https://hooks.example.test/services/T000/B000/secretpart"


def raise_alert(db) -> int:
    for document in duplicate_refund_events():
        deliver(db, document)
    with db.session() as session:
        return session.exec(select(Alert.id)).one()


def alert(db, alert_id) -> Alert:
    with db.session() as session:
        return session.get(Alert, alert_id)


@respx.mock
def test_an_alert_is_posted_to_the_sink_once_with_what_to_do(db):
    alert_id = raise_alert(db)
    route = respx.post(SINK).mock(return_value=httpx.Response(200, text="ok"))
    assert alert_sink.deliver(db, alert_id, SINK) == "sent"
    assert alert_sink.deliver(db, alert_id, SINK) == "already_claimed"
    assert route.call_count == 1
    text = json.loads(route.calls[0].request.content)["text"]
    assert "Access at risk" in text and "ch_first" in text and f"alerts ack {alert_id}" in text
    assert alert(db, alert_id).delivery_status == "sent"


@respx.mock
def test_a_sink_that_is_down_leaves_the_alert_pending_with_a_readable_error_and_no_secret(db):
    alert_id = raise_alert(db)
    respx.post(SINK).mock(return_value=httpx.Response(503, text="unavailable"))
    with pytest.raises(alert_sink.SinkUnavailable) as raised:
        alert_sink.deliver(db, alert_id, SINK)
    stored = alert(db, alert_id)
    assert (stored.delivery_status, stored.delivery_attempts) == ("pending", 1)
    assert "503" in stored.last_delivery_error
    assert "secretpart" not in stored.last_delivery_error and "secretpart" not in str(raised.value)


@respx.mock
def test_when_the_sink_comes_back_the_clock_delivers_what_is_left(db):
    alert_id = raise_alert(db)
    respx.post(SINK).mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(200)])
    with pytest.raises(alert_sink.SinkUnavailable):
        alert_sink.deliver(db, alert_id, SINK)
    assert alert_sink.undelivered(db) == []  # just tried: left to Dramatiq's own retries for now
    with db.session() as session:
        session.execute(update(Alert).values(claimed_at=utcnow() - timedelta(minutes=20)))
    assert alert_sink.undelivered(db) == [alert_id]
    assert alert_sink.deliver(db, alert_id, SINK) == "sent"


def test_without_a_sink_configured_alerts_are_kept_in_the_database_only(db):
    alert_id = raise_alert(db)
    assert alert_sink.deliver(db, alert_id, None) == "not_configured"
    assert alert(db, alert_id).status == "open"


def test_processing_hands_new_alerts_to_the_sink_only_after_commit_and_survives_its_failure(db):
    handed: list[list[int]] = []
    events = duplicate_refund_events()
    for document in events[:-1]:
        deliver(db, document)
    last = events[-1]
    store_event(db, event_from_dict(last), json.dumps(last))

    def sink_down(ids):
        handed.append(ids)
        raise ConnectionError("redis down")

    # The alert was already raised by an earlier event of the refund; this one raises none.
    outcome = processing.process_event(db, last["id"], max_attempts=3, on_alerts=sink_down)
    assert outcome.status == "done" and handed == []


def test_an_event_that_raises_an_alert_is_done_even_when_handing_it_over_fails(db):
    events = duplicate_refund_events()
    for document in events[:3]:
        deliver(db, document)
    refunded = events[3]  # refund.created: the first event that names the refund

    store_event(db, event_from_dict(refunded), json.dumps(refunded))
    handed = []

    def sink_down(ids):
        handed.append(ids)
        raise ConnectionError("redis down")

    processing.process_event(db, refunded["id"], max_attempts=3, on_alerts=sink_down)
    with db.session() as session:
        assert session.get(Event, (refunded["id"], "")).status == "done"
        assert [a.id for a in session.exec(select(Alert)).all()] == handed[0]


@pytest.fixture
def cli_db(worker_db, monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "text")
    runtime.get_settings.cache_clear()
    yield worker_db
    runtime.get_settings.cache_clear()


def run_json(capsys, *argv):
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_notes_json_has_the_contract_fields(cli_db, capsys):
    raise_alert(cli_db)
    code, notes = run_json(capsys, "notes", "MIKA@example.com")
    assert code == 0
    [note] = notes
    assert {
        k: note[k] for k in ("customer_email", "refund_id", "charge_id", "amount", "currency", "status")
    } == {
        "customer_email": "mika@example.com",
        "refund_id": "re_dup",
        "charge_id": "ch_second",
        "amount": 19_800,
        "currency": "usd",
        "status": "succeeded",
    }
    assert note["text"].startswith("2026-09-21 refund of 198.00 USD") and note["created_at"].endswith("Z")


def test_alerts_can_be_listed_acknowledged_and_resolved_by_name(cli_db, capsys):
    alert_id = raise_alert(cli_db)
    code, listed = run_json(capsys, "alerts", "--status", "open")
    assert code == 0 and [a["id"] for a in listed] == [alert_id]
    contract = {
        "id",
        "kind",
        "status",
        "customer_email",
        "product",
        "refund_id",
        "charge_id",
        "kept_charge_id",
        "created_at",
    }
    assert contract <= set(listed[0]) and listed[0]["kept_charge_id"] == "ch_first"

    _, acked = run_json(capsys, "alerts", "ack", str(alert_id), "--by", "Yuki")
    assert (acked["status"], acked["acknowledged_by"]) == ("acknowledged", "Yuki")
    _, resolved = run_json(
        capsys, "alerts", "resolve", str(alert_id), "--by", "Yuki", "--note", "re-granted access"
    )
    assert (resolved["status"], resolved["resolution_note"]) == ("resolved", "re-granted access")
    _, still_open = run_json(capsys, "alerts", "--status", "open")
    assert still_open == []


def test_acknowledging_an_unknown_alert_is_a_clear_error(cli_db, capsys):
    assert cli.main(["alerts", "ack", "999", "--by", "Yuki"]) == 5
    assert "there is no alert 999" in capsys.readouterr().err

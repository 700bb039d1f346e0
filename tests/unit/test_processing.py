"""The actor path: load the event, run its handler, mark it done; failures, retries and replays."""

import json

import pytest
from sqlmodel import func, select

from handlers import DISPATCH, Handler
from models import Charge, Event, Refund
from tests.stripe_fixtures import charge, event, refund
from worker.jobs import processing
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict


def store(db, document) -> None:
    store_event(db, event_from_dict(document), json.dumps(document))


def get_event(db, event_id, account=""):
    with db.session() as session:
        return session.get(Event, (event_id, account))


def count(db, model) -> int:
    with db.session() as session:
        return session.exec(select(func.count()).select_from(model)).one()


def test_an_event_sent_to_the_actor_ends_done_with_its_charge_recorded(stub_broker, stub_worker, worker_db):
    from worker.jobs.actors import process_event

    store(
        worker_db, event("charge.succeeded", charge("ch_a", amount=12_345, currency="jpy"), event_id="evt_a")
    )
    process_event.send("evt_a", "")
    stub_broker.join(process_event.queue_name, fail_fast=True)
    stub_worker.join()

    row = get_event(worker_db, "evt_a")
    assert (row.status, row.attempts, row.last_error) == ("done", 1, None)
    assert row.processed_at is not None
    with worker_db.session() as session:
        recorded = session.get(Charge, "ch_a")
    assert (recorded.amount, recorded.currency, recorded.status, recorded.customer) == (
        12_345,
        "jpy",
        "succeeded",
        "cus_test1",
    )


def test_an_unprocessable_event_is_dead_at_once_and_not_retried(stub_broker, stub_worker, worker_db):
    from worker.jobs.actors import process_event

    store(worker_db, event("charge.succeeded", charge("ch_bad", amount="a lot"), event_id="evt_bad"))
    process_event.send("evt_bad", "")
    stub_broker.join(process_event.queue_name, fail_fast=False)
    stub_worker.join()

    row = get_event(worker_db, "evt_bad")
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == "UnprocessableEvent: charge field 'amount' is missing or malformed"
    assert "Traceback" in row.last_traceback
    assert count(worker_db, Charge) == 0


def test_a_failing_event_is_failed_with_its_error_then_dead_after_the_last_attempt(db, monkeypatch):
    def broken(_ctx):
        raise RuntimeError("temporary trouble")

    monkeypatch.setitem(DISPATCH, "charge.succeeded", Handler(apply=broken))
    store(db, event("charge.succeeded", charge(), event_id="evt_flaky"))

    with pytest.raises(RuntimeError):
        processing.process_event(db, "evt_flaky", max_attempts=2)
    row = get_event(db, "evt_flaky")
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "RuntimeError: temporary trouble")

    with pytest.raises(processing.EventGaveUp):
        processing.process_event(db, "evt_flaky", max_attempts=2)
    assert (get_event(db, "evt_flaky").status, get_event(db, "evt_flaky").attempts) == ("dead", 2)


def test_a_failure_rolls_back_everything_the_handler_wrote(db, monkeypatch):
    from handlers.payments import record_charge

    def writes_then_fails(ctx):
        record_charge(ctx)
        raise RuntimeError("after the write")

    monkeypatch.setitem(DISPATCH, "charge.succeeded", Handler(apply=writes_then_fails))
    store(db, event("charge.succeeded", charge("ch_half"), event_id="evt_half"))
    with pytest.raises(RuntimeError):
        processing.process_event(db, "evt_half", max_attempts=5)
    assert count(db, Charge) == 0
    assert get_event(db, "evt_half").status == "failed"


def test_a_transient_failure_then_success_ends_done_with_the_error_cleared(db, monkeypatch):
    from handlers.payments import record_charge

    calls = []

    def fails_once(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("stripe timed out")
        record_charge(ctx)

    monkeypatch.setitem(DISPATCH, "charge.succeeded", Handler(apply=fails_once))
    store(db, event("charge.succeeded", charge("ch_retry"), event_id="evt_retry"))
    with pytest.raises(ConnectionError):
        processing.process_event(db, "evt_retry", max_attempts=5)
    outcome = processing.process_event(db, "evt_retry", max_attempts=5)
    row = get_event(db, "evt_retry")
    assert (outcome.status, row.status, row.attempts, row.last_error, row.last_traceback) == (
        "done",
        "done",
        2,
        None,
        None,
    )


def test_a_second_message_for_a_done_event_changes_nothing(db):
    store(db, event("charge.succeeded", charge("ch_twice"), event_id="evt_twice"))
    processing.process_event(db, "evt_twice", max_attempts=5)
    outcome = processing.process_event(db, "evt_twice", max_attempts=5)
    assert outcome.skipped and outcome.status == "done"
    assert get_event(db, "evt_twice").attempts == 1


def test_a_forced_replay_reruns_the_handler_without_duplicating_its_effect(db):
    store(db, event("charge.succeeded", charge("ch_replay", amount=777), event_id="evt_replay"))
    processing.process_event(db, "evt_replay", max_attempts=5)
    processing.process_event(db, "evt_replay", max_attempts=5, force=True)
    assert get_event(db, "evt_replay").attempts == 2
    assert count(db, Charge) == 1
    with db.session() as session:
        assert session.get(Charge, "ch_replay").amount == 777


def test_an_event_type_without_a_handler_ends_ignored(db):
    store(db, event("customer.updated", {"id": "cus_1", "object": "customer"}, event_id="evt_cust"))
    outcome = processing.process_event(db, "evt_cust", max_attempts=5, force=True)
    assert outcome.status == "ignored"


def test_an_unknown_event_id_is_reported_not_retried(db):
    with pytest.raises(processing.EventNotFound):
        processing.process_event(db, "evt_nowhere", max_attempts=5)


def test_events_about_one_charge_converge_whatever_order_they_arrive_in(db):
    paid = event("charge.succeeded", charge("ch_order"), event_id="evt_paid", created=1_000)
    refunded = event(
        "charge.refunded",
        charge("ch_order", amount_refunded=5000, refunded=True),
        event_id="evt_refunded",
        created=2_000,
    )
    for document in (refunded, paid):  # newest first
        store(db, document)
        processing.process_event(db, document["id"], max_attempts=5)
    with db.session() as session:
        row = session.get(Charge, "ch_order")
    assert (row.amount_refunded, row.refunded, row.last_event_id) == (5000, True, "evt_refunded")


def test_the_several_events_of_one_refund_give_one_refund_row_with_its_latest_status(db):
    documents = [
        event("refund.created", refund("re_one", status="pending"), event_id="evt_r1", created=100),
        event("charge.refund.updated", refund("re_one", status="succeeded"), event_id="evt_r2", created=200),
        event("refund.failed", refund("re_one", status="failed"), event_id="evt_r3", created=300),
        event("refund.created", refund("re_one", status="pending"), event_id="evt_r1", created=100),
    ]
    for document in reversed(documents):
        store(db, document)
        processing.process_event(db, document["id"], max_attempts=5, force=True)
    assert count(db, Refund) == 1
    with db.session() as session:
        assert session.get(Refund, "re_one").status == "failed"


def test_a_pre_2022_charge_refunded_event_records_its_inline_refunds(db):
    inline = charge("ch_old", amount_refunded=2000, refunded=False)
    inline["refunds"] = {"object": "list", "data": [refund("re_inline", charge_id="ch_old", amount=2000)]}
    store(db, event("charge.refunded", inline, event_id="evt_old", api_version="2020-08-27"))
    processing.process_event(db, "evt_old", max_attempts=5)
    with db.session() as session:
        assert session.get(Refund, "re_inline").amount == 2000
        assert session.get(Charge, "ch_old").amount_refunded == 2000


def test_two_events_of_the_same_second_keep_the_later_state_whichever_is_applied_last(db):
    more = event(
        "charge.refunded",
        charge("ch_tie", amount_refunded=3000, refunded=True),
        event_id="evt_t2",
        created=500,
    )
    less = event("charge.refunded", charge("ch_tie", amount_refunded=1000), event_id="evt_t1", created=500)
    pending = event("refund.created", refund("re_tie", status="pending"), event_id="evt_t3", created=500)
    done = event("refund.updated", refund("re_tie", status="succeeded"), event_id="evt_t4", created=500)
    for document in (more, less, done, pending):
        store(db, document)
        processing.process_event(db, document["id"], max_attempts=5)
    with db.session() as session:
        tied_charge, tied_refund = session.get(Charge, "ch_tie"), session.get(Refund, "re_tie")
    assert (tied_charge.amount_refunded, tied_charge.refunded, tied_refund.status) == (
        3000,
        True,
        "succeeded",
    )

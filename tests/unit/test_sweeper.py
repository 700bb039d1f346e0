"""The sweeper finds events whose queue message was lost and enqueues each once."""

import json
from datetime import timedelta

from models import Event, EventStatus
from models.types import utcnow
from tests.stripe_fixtures import charge, event
from worker.jobs.sweeper import sweep
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict
from worker.settings import Settings

SETTINGS = Settings(
    sweep_received_grace_seconds=30, sweep_processing_stale_seconds=900, sweep_failed_stale_seconds=1800
)


def add(db, event_id: str, status: str, age_seconds: int) -> None:
    document = event("charge.succeeded", charge(), event_id=event_id)
    store_event(db, event_from_dict(document), json.dumps(document))
    with db.session() as session:
        row = session.get(Event, (event_id, ""))
        row.status = status
        row.received_at = row.updated_at = utcnow() - timedelta(seconds=age_seconds)


def collect():
    sent = []
    return sent, lambda event_id, account: sent.append(event_id)


def test_received_events_older_than_the_grace_are_enqueued_when_the_queue_is_empty(db):
    add(db, "evt_lost", EventStatus.RECEIVED, age_seconds=60)
    add(db, "evt_fresh", EventStatus.RECEIVED, age_seconds=5)
    sent, enqueue = collect()
    result = sweep(db, enqueue, SETTINGS, queue_depth=0)
    assert sent == ["evt_lost"]
    assert result.enqueued == {"received": 1}


def test_while_the_queue_has_a_backlog_young_received_events_are_left_to_it(db):
    add(db, "evt_behind_backlog", EventStatus.RECEIVED, age_seconds=120)
    add(db, "evt_long_lost", EventStatus.RECEIVED, age_seconds=3600)
    sent, enqueue = collect()
    sweep(db, enqueue, SETTINGS, queue_depth=250)
    assert sent == ["evt_long_lost"]


def test_stale_processing_and_failed_events_are_enqueued_again_and_finished_ones_never(db):
    add(db, "evt_worker_died", EventStatus.PROCESSING, age_seconds=1000)
    add(db, "evt_working", EventStatus.PROCESSING, age_seconds=10)
    add(db, "evt_retry_lost", EventStatus.FAILED, age_seconds=2000)
    add(db, "evt_retry_pending", EventStatus.FAILED, age_seconds=60)
    for status in (EventStatus.DONE, EventStatus.IGNORED, EventStatus.DEAD):
        add(db, f"evt_{status}", status, age_seconds=99_999)
    sent, enqueue = collect()
    result = sweep(db, enqueue, SETTINGS, queue_depth=0)
    assert sorted(sent) == ["evt_retry_lost", "evt_worker_died"]
    assert result.enqueued == {"processing": 1, "failed": 1}


def test_a_sweep_pages_through_more_than_one_batch(db, monkeypatch):
    monkeypatch.setattr("worker.jobs.sweeper.BATCH", 7)
    for i in range(20):
        add(db, f"evt_many{i:02d}", EventStatus.RECEIVED, age_seconds=100)
    sent, enqueue = collect()
    assert sweep(db, enqueue, SETTINGS, queue_depth=0).total == 20
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 20


def test_a_sweep_while_redis_is_still_down_stops_and_reports_it(db):
    add(db, "evt_a", EventStatus.RECEIVED, age_seconds=100)

    def down(*_):
        raise ConnectionError("redis down")

    result = sweep(db, down, SETTINGS, queue_depth=0)
    assert (result.total, result.errors) == (0, 1)

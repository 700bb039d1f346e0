"""Redis dies while webhooks arrive: nothing is lost, nothing is applied twice."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests import stripe_fixtures as sf
from tests.integration.stack import Stack, needs_redis

pytestmark = [pytest.mark.integration, needs_redis]

N = 20


def _charge_event(uid: str, n: int) -> dict:
    return sf.event(
        "charge.succeeded",
        sf.charge(f"ch_out{n:02d}_{uid}", amount=100 + n),
        event_id=f"evt_out{n:02d}_{uid}",
    )


def test_webhooks_that_arrive_while_redis_is_down_are_stored_and_after_a_sweep_each_is_done_exactly_once(
    stack: Stack, uid: str
):
    documents = [_charge_event(uid, n) for n in range(N)]
    ids = [d["id"] for d in documents]
    worker_pid = stack.worker.pid

    stack.kill_redis()
    started = time.monotonic()
    responses = [stack.post_event(d) for d in documents]
    elapsed = time.monotonic() - started

    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses]
    assert all(r.json() == {"received": True, "duplicate": False} for r in responses)
    assert elapsed < N * 2, f"{N} webhooks took {elapsed:.1f}s with Redis down"
    rows = stack.events(ids)
    assert {i: (rows[i]["status"], rows[i]["attempts"]) for i in ids} == {i: ("received", 0) for i in ids}

    stack.start_redis()  # same port, empty (no persistence): every message is gone
    stranded = stack.count("events", "status = 'received'")
    assert stranded == N, "rows other than this test's were left `received` by an earlier test"
    swept = stack.cli("sweep", "--json", SWEEP_RECEIVED_GRACE_SECONDS="0")

    assert swept.returncode == 0, swept
    assert swept.json() == {"enqueued": {"received": N}, "total": N, "errors": 0}
    # Dramatiq's consumer reconnects by itself (it restarts its consumer threads every 3 s while Redis is
    # unreachable); the worker process is the one started with the stack.
    assert stack.worker.alive() and stack.worker.pid == worker_pid
    rows = stack.wait_for_events(ids)
    assert {i: (rows[i]["status"], rows[i]["attempts"]) for i in ids} == {i: ("done", 1) for i in ids}
    charges = stack.query("SELECT id, amount FROM charges WHERE id LIKE ?", (f"ch_out%_{uid}",))
    assert sorted((c["id"], c["amount"]) for c in charges) == [
        (f"ch_out{n:02d}_{uid}", 100 + n) for n in range(N)
    ]

    # The receiver's own Redis connection recovers too: a new event is enqueued at once, no sweep needed.
    after = sf.event("charge.succeeded", sf.charge(f"ch_after_{uid}"), event_id=f"evt_after_{uid}")
    assert stack.post_event(after).status_code == 200
    assert stack.wait_for_events([after["id"]])[after["id"]]["attempts"] == 1

    # A second sweep finds nothing, and nothing ran twice.
    again = stack.cli("sweep", "--json", SWEEP_RECEIVED_GRACE_SECONDS="0")
    assert again.returncode == 0, again
    assert again.json()["total"] == 0
    time.sleep(0.5)
    rows = stack.events(ids)
    assert {rows[i]["attempts"] for i in ids} == {1}


def test_a_sweep_while_redis_is_still_down_says_so_and_exits_4_without_a_traceback(stack: Stack, uid: str):
    document = _charge_event(uid, 0)
    stack.kill_redis()
    try:
        assert stack.post_event(document).status_code == 200

        swept = stack.cli("sweep", "--json", SWEEP_RECEIVED_GRACE_SECONDS="0")

        assert swept.returncode == 4, swept
        assert "Traceback" not in swept.stderr, swept
        report = swept.json()
        assert report["errors"] >= 1 and report["total"] == 0, swept
    finally:
        stack.start_redis()
        # Leave nothing stranded for the other tests.
        cleanup = stack.cli("sweep", SWEEP_RECEIVED_GRACE_SECONDS="0")
        assert cleanup.returncode == 0, cleanup
        stack.wait_for_events([document["id"]])


def test_a_webhook_is_answered_within_seconds_even_while_redis_hangs(stack: Stack, uid: str):
    document = _charge_event(uid, 1)
    os.kill(stack.redis.pid, signal.SIGSTOP)  # Redis accepts connections (the kernel does) but never answers
    try:
        started = time.monotonic()
        try:
            response = stack.post_event(document, timeout=5.0)
        except httpx.TimeoutException:
            response = None
        elapsed = time.monotonic() - started

        assert response is not None, f"no answer within 5 s (gave up after {elapsed:.1f}s)"
        assert response.status_code == 200
        assert elapsed < 3.0, f"answered after {elapsed:.1f}s"
    finally:
        os.kill(stack.redis.pid, signal.SIGCONT)
        # The receiver's pending enqueue goes through once Redis answers; make sure the event is applied
        # (sweep in case it was not) before the next test.
        try:
            stack.wait_for_events([document["id"]], timeout=15)
        except AssertionError:
            stack.cli("sweep", SWEEP_RECEIVED_GRACE_SECONDS="0")
            stack.wait_for_events([document["id"]])

"""Breaking one real component at a time (a worker process, the database's disk, Stripe's API, the alert
sink) and checking what a user sees once it is back: every event done once, one note, one alert.

These tests run their own stack (the harness in `stack.py`, started by the module's `_session_stack`
below, which the conftest's `stack` fixture then restarts pieces of as usual): its Stripe calls go to the
local Stripe stand-in, where faults are injected and requests counted, and its alerts to a local sink.
Redis dying while webhooks arrive is `test_redis_outage.py`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from stripe_standin import StandinServer, Store
from tests import stripe_fixtures as sf
from tests.integration.faults_helpers import (
    AlertSink,
    DuplicateRefund,
    children,
    disk_writes_fail,
    dramatiq_worker_children,
    run_dramatiq_maintenance_as_if_a_minute_passed,
    unacked_messages,
)
from tests.integration.stack import DEAD_LETTER_KEY, QUEUE_KEY, REDIS_SERVER, Stack, needs_redis, wait_until

pytestmark = [pytest.mark.integration, needs_redis]

STRIPE_MAX_ATTEMPTS = 3
STRIPE_TIMEOUT_SECONDS = 1.0
STRIPE_MAX_BACKOFF_SECONDS = 1.0
EVENT_MAX_ATTEMPTS = 3
FAULT_SETTINGS = {
    "STRIPE_MAX_ATTEMPTS": str(STRIPE_MAX_ATTEMPTS),
    "STRIPE_TIMEOUT_SECONDS": str(STRIPE_TIMEOUT_SECONDS),
    "STRIPE_MAX_BACKOFF_SECONDS": str(STRIPE_MAX_BACKOFF_SECONDS),
    "EVENT_MAX_ATTEMPTS": str(EVENT_MAX_ATTEMPTS),
    "ALERT_TIMEOUT_SECONDS": "2",
}


@pytest.fixture(scope="module")
def standin(api_key: str) -> Iterator[StandinServer]:
    """Stripe's API on 127.0.0.1, accepting only this run's key."""
    server = StandinServer(Store(), api_key=api_key).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[AlertSink]:
    server = AlertSink()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def _session_stack(
    tmp_path_factory, standin: StandinServer, sink: AlertSink, api_key: str
) -> Iterator[Stack]:
    """Overrides the conftest's session stack for this module: same harness, Stripe at the stand-in."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed; the integration tests run a real one")
    stack = Stack(tmp_path_factory.mktemp("faults"), api_key=api_key, stripe_api_base=standin.url)
    stack.env.update(FAULT_SETTINGS, ALERT_WEBHOOK_URL=sink.url)
    try:
        stack.start_redis()
        migrated = stack.cli("migrate")
        assert migrated.returncode == 0, f"migrate failed:\n{migrated}"
        stack.start_web()
        stack.start_worker()
        yield stack
    finally:
        stack.stop_all()
        stack.close_database()


@pytest.fixture(autouse=True)
def _no_faults_left(standin: StandinServer, sink: AlertSink) -> Iterator[None]:
    standin.reset()
    sink.reset()
    yield
    standin.faults.clear()
    sink.answer(200)


def _needs_sqlite(stack: Stack) -> None:
    if stack.backend != "sqlite":
        pytest.skip("the fault is made on the SQLite file's writes; PostgreSQL is another server")


# --- what a user sees ---------------------------------------------------------------------------------


def _post_all(stack: Stack, documents: list[dict]) -> None:
    responses = [stack.post_event(d) for d in documents]
    assert [r.status_code for r in responses] == [200] * len(documents), [r.text for r in responses]


def _records(stack: Stack, scenario: DuplicateRefund) -> dict:
    """The customer's sales view, refund notes and alerts, as on-call staff see them (the CLI)."""
    sales = stack.cli("sales", "--customer", scenario.email, "--json")
    notes = stack.cli("notes", scenario.email, "--json")
    alerts = stack.cli("alerts", "--json")
    for result in (sales, notes, alerts):
        assert result.returncode == 0, result
    return {
        "sales": sorted((r["charge_id"], r["amount"], r["refunded_amount"]) for r in sales.json()),
        "notes": [(n["refund_id"], n["charge_id"], n["status"]) for n in notes.json()],
        "alerts": [
            (a["kind"], a["refund_id"], a["charge_id"], a["kept_charge_id"])
            for a in alerts.json()
            if a["customer_email"] == scenario.email
        ],
    }


def _expected_records(scenario: DuplicateRefund) -> dict:
    return {
        "sales": [
            (scenario.first_charge, scenario.amount, 0),
            (scenario.second_charge, scenario.amount, scenario.amount),
        ],
        "notes": [(scenario.refund_id, scenario.second_charge, "succeeded")],
        "alerts": [("access_revocation", scenario.refund_id, scenario.second_charge, scenario.first_charge)],
    }


def _alert_row(stack: Stack, scenario: DuplicateRefund) -> dict:
    [alert] = stack.query("SELECT * FROM alerts WHERE customer_email = ?", (scenario.email,))
    return alert


def _times_of_requests_to(standin: StandinServer, path: str, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each request for `path` reached the stand-in (monotonic clock), from now on."""
    arrived: list[float] = []
    record = standin.requests.record

    def timed(method: str, request_path: str) -> None:
        if request_path == path:
            arrived.append(time.monotonic())
        record(method, request_path)

    monkeypatch.setattr(standin.requests, "record", timed)
    return arrived


# --- 1. a worker process killed inside a handler ------------------------------------------------------


def test_a_worker_killed_inside_a_handler_leaves_the_event_processing_and_after_a_sweep_it_is_applied_once(
    stack: Stack, standin: StandinServer, sink: AlertSink, uid: str
):
    scenario = DuplicateRefund(uid)
    standin.store.add(scenario.refund())
    _post_all(stack, scenario.purchases())
    stack.wait_for_events([d["id"] for d in scenario.purchases()])
    refunded = scenario.charge_refunded()
    event_id = refunded["id"]
    # Stripe hangs on the refunds list the charge.refunded handler fetches: every try (each gives up after
    # STRIPE_TIMEOUT_SECONDS and is retried) keeps the worker inside the handler.
    standin.faults.add(kind="delay", path="/v1/refunds", delay=30, count=100)

    _post_all(stack, [refunded])
    wait_until(
        lambda: (
            standin.requests.count("GET", "/v1/refunds") >= 1
            and (stack.event(event_id) or {}).get("status") == "processing"
        ),
        "the worker to be inside the charge.refunded handler, waiting for Stripe",
        watch=stack.running(),
    )
    old_worker = stack.worker
    [child] = dramatiq_worker_children(old_worker)
    os.kill(child, signal.SIGKILL)  # as the OOM killer would
    # Dramatiq's parent process shuts down when one of its workers dies; the platform restarts it.
    wait_until(
        lambda: not old_worker.alive(), "the dramatiq parent to exit after its worker died", timeout=20
    )
    standin.faults.clear()

    row = stack.event(event_id)
    assert (row["status"], row["attempts"]) == ("processing", 1)
    assert stack.count("refunds", "id = ?", (scenario.refund_id,)) == 0  # nothing half-written
    assert stack.count("alerts", "customer_email = ?", (scenario.email,)) == 0
    [stuck] = [m for m in unacked_messages(stack.redis_client()) if m.args and m.args[0] == event_id]
    assert stuck.actor == "process_event"

    stack.start_worker()
    # A new worker does not get the dead one's message: Dramatiq's Redis broker gives it back only after
    # a 60 s heartbeat timeout (not configurable without changing worker/jobs/broker.py), and then only on a
    # random 0.1% of its commands. Nor does the sweeper with its default 900 s for `processing` rows.
    default_sweep = stack.cli("sweep", "--json")
    assert default_sweep.returncode == 0, default_sweep
    assert default_sweep.json()["total"] == 0
    assert stack.event(event_id)["status"] == "processing"

    # On-call (or the clock, once SWEEP_PROCESSING_STALE_SECONDS has passed) sweeps the stuck event.
    swept = stack.cli("sweep", "--json", SWEEP_PROCESSING_STALE_SECONDS="1")

    assert swept.returncode == 0, swept
    assert swept.json() == {"enqueued": {"processing": 1}, "total": 1, "errors": 0}
    row = stack.wait_for_events([event_id])[event_id]
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", 2, None)

    _post_all(stack, scenario.refund_events())
    stack.wait_for_events([d["id"] for d in scenario.refund_events()])
    # Later, Dramatiq's own maintenance gives the dead worker's message back too: a second delivery of a
    # done event, which the worker must skip.
    run_dramatiq_maintenance_as_if_a_minute_passed(stack.redis_client(), stuck.worker_id, "events")
    wait_until(
        lambda: (
            not any(
                m.redis_message_id == stuck.redis_message_id for m in unacked_messages(stack.redis_client())
            )
            and stack.redis_client().llen(QUEUE_KEY) == 0
            and not stack.redis_client().hexists("dramatiq:events.msgs", stuck.redis_message_id)
        ),
        "the dead worker's message to be redelivered and acked",
        watch=stack.running(),
    )

    assert stack.event(event_id)["attempts"] == 2  # skipped, not applied again
    assert _records(stack, scenario) == _expected_records(scenario)
    assert stack.count("refunds", "id = ?", (scenario.refund_id,)) == 1
    alert = _alert_row(stack, scenario)
    wait_until(lambda: sink.posts_for(alert["id"]), "the alert to reach the sink", watch=stack.running())
    time.sleep(0.5)
    assert [p.answered for p in sink.posts_for(alert["id"])] == [200]


# --- 2. the database cannot be written ----------------------------------------------------------------


def test_while_the_database_cannot_be_written_the_receiver_answers_503_and_stripes_retry_is_applied_once(
    stack: Stack, uid: str
):
    _needs_sqlite(stack)
    charge_id = f"ch_dbdown_{uid}"
    paid = sf.charge(charge_id, amount=2500, billing_details={"email": f"db.{uid}@example.com"})
    document = sf.event("charge.succeeded", paid, event_id=f"evt_dbdown_{uid}")
    body, headers = sf.signed(document, stack.webhook_secret)  # Stripe resends the same signed body
    queue_before = stack.queue_snapshot()
    assert children(stack.web.pid) == []  # the receiver is one process: the one whose disk fails

    # The receiver's disk stops taking writes (as a full or failing disk would): SQLite's commit fails
    # with "disk I/O error". Unlike file permissions this holds for root, and unlike a lock held past
    # the 30 s busy timeout it fails at once.
    with disk_writes_fail(stack.web.pid):
        answers = [stack.post(body, headers) for _ in range(2)]

    assert [(r.status_code, r.json()) for r in answers] == [
        (503, {"error": "database unavailable, retry later"})
    ] * 2
    assert stack.event(document["id"]) is None  # nothing half-written
    assert stack.count("charges", "id = ?", (charge_id,)) == 0
    assert stack.queue_snapshot() == queue_before  # nothing enqueued

    retried = stack.post(body, headers)  # Stripe's retry, after the disk is back

    assert retried.status_code == 200, retried.text
    assert retried.json() == {"received": True, "duplicate": False}
    row = stack.wait_for_events([document["id"]])[document["id"]]
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", 1, None)
    assert stack.query("SELECT amount FROM charges WHERE id = ?", (charge_id,)) == [{"amount": 2500}]
    again = stack.post(body, headers)
    assert (again.status_code, again.json()) == (200, {"received": True, "duplicate": True})


def test_while_the_workers_database_writes_fail_the_event_waits_received_and_a_sweep_applies_it_once(
    stack: Stack, uid: str
):
    _needs_sqlite(stack)
    charge_id = f"ch_wdbdown_{uid}"
    paid = sf.charge(charge_id, amount=2600, billing_details={"email": f"wdb.{uid}@example.com"})
    document = sf.event("charge.succeeded", paid, event_id=f"evt_wdbdown_{uid}")
    [child] = dramatiq_worker_children(stack.worker)
    rejected_before = stack.queue_snapshot()[DEAD_LETTER_KEY]

    with disk_writes_fail(child):
        response = stack.post_event(document)  # the receiver's disk is fine
        # The worker cannot even claim the event; Dramatiq retries the message (EVENT_MAX_ATTEMPTS times,
        # 0.1-0.5 s apart here) and then gives it up.
        wait_until(
            lambda: stack.queue_snapshot()[DEAD_LETTER_KEY] > rejected_before,
            "Dramatiq to give up the message", watch=stack.running(),
        )  # fmt: skip

    assert response.status_code == 200, response.text
    row = stack.event(document["id"])
    assert (row["status"], row["attempts"]) == ("received", 0)  # no attempt was recorded: none applied
    assert stack.count("charges", "id = ?", (charge_id,)) == 0

    # The clock's next sweep (its grace is 30 s when the queue is empty) enqueues it again.
    swept = stack.cli("sweep", "--json", SWEEP_RECEIVED_GRACE_SECONDS="0")

    assert swept.returncode == 0, swept
    assert swept.json() == {"enqueued": {"received": 1}, "total": 1, "errors": 0}
    row = stack.wait_for_events([document["id"]])[document["id"]]
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", 1, None)
    assert stack.query("SELECT amount FROM charges WHERE id = ?", (charge_id,)) == [{"amount": 2600}]


# --- 3. Stripe's API rate-limits, errors, then hangs --------------------------------------------------


def test_an_event_whose_stripe_fetch_gets_429s_500s_then_timeouts_ends_dead_and_replay_applies_it_once(
    stack: Stack, standin: StandinServer, uid: str, monkeypatch: pytest.MonkeyPatch
):
    scenario = DuplicateRefund(uid)
    standin.store.add(scenario.refund())
    refunded = scenario.charge_refunded()  # the customer's only purchase: a note, no alert
    event_id = refunded["id"]
    per_attempt = STRIPE_MAX_ATTEMPTS
    standin.faults.add(kind="rate_limit", path="/v1/refunds", count=per_attempt, retry_after=1)
    standin.faults.add(kind="api_error", path="/v1/refunds", count=per_attempt)
    standin.faults.add(kind="delay", path="/v1/refunds", count=per_attempt, delay=STRIPE_TIMEOUT_SECONDS + 1)

    arrived = _times_of_requests_to(standin, "/v1/refunds", monkeypatch)

    _post_all(stack, [refunded])
    row = stack.wait_for_events([event_id], statuses=["dead"])[event_id]

    # Retry-After: 1 was waited between the 429s (full jitter alone would average 0.25 s and 0.5 s).
    gaps = [round(later - earlier, 2) for earlier, later in zip(arrived[:2], arrived[1:3], strict=True)]
    assert min(gaps) >= 0.95, gaps
    total = EVENT_MAX_ATTEMPTS * STRIPE_MAX_ATTEMPTS
    assert standin.requests.count("GET", "/v1/refunds") == total
    assert row["attempts"] == EVENT_MAX_ATTEMPTS
    assert row["last_error"].startswith("APIConnectionError: "), row["last_error"]
    assert "ReadTimeout" in row["last_error"], row["last_error"]
    assert stack.api_key not in row["last_error"] and stack.api_key not in row["last_traceback"]
    assert stack.count("refunds", "id = ?", (scenario.refund_id,)) == 0
    retried = stack.worker.stderr_path.read_text(errors="replace")
    for error in ("RateLimitError", "APIError", "APIConnectionError"):
        assert f"Stripe call failed ({error}), retrying" in retried, error
    time.sleep(1.0)  # bounded: nothing tries again once the event is dead
    assert standin.requests.count("GET", "/v1/refunds") == total
    assert stack.event(event_id)["attempts"] == EVENT_MAX_ATTEMPTS

    replayed = stack.cli("replay", event_id, "--json")  # Stripe is fine again

    assert replayed.returncode == 0, replayed
    [result] = replayed.json()
    assert (result["status_before"], result["status_after"], result["error"]) == ("dead", "done", None)
    assert standin.requests.count("GET", "/v1/refunds") == total + 1
    row = stack.event(event_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", EVENT_MAX_ATTEMPTS + 1, None)
    notes = stack.cli("notes", scenario.email, "--json")
    assert notes.returncode == 0, notes
    assert [(n["refund_id"], n["status"]) for n in notes.json()] == [(scenario.refund_id, "succeeded")]
    assert stack.count("refunds", "id = ?", (scenario.refund_id,)) == 1


# --- 4. the alert sink is down ------------------------------------------------------------------------


def test_an_alert_raised_while_the_sink_is_down_is_stored_and_delivered_exactly_once_when_the_sink_is_back(
    stack: Stack, standin: StandinServer, sink: AlertSink, uid: str
):
    scenario = DuplicateRefund(uid)
    standin.store.add(scenario.refund())
    sink.answer(503)

    _post_all(stack, scenario.events())

    rows = stack.wait_for_events([d["id"] for d in scenario.events()])
    assert {r["attempts"] for r in rows.values()} == {1}  # the sink being down failed no event
    alert = wait_until(
        lambda: (a := _alert_row(stack, scenario))["delivery_attempts"] >= 1
        and a["delivery_status"] == "pending" and a,
        "the first delivery to fail", watch=stack.running(),
    )  # fmt: skip
    sink.answer(200)  # back; Dramatiq's retry of deliver_alert (2-4 s after the failure) will send it

    assert [p.answered for p in sink.posts_for(alert["id"])] == [503]
    assert "503" in alert["last_delivery_error"], alert["last_delivery_error"]
    assert sink.url not in alert["last_delivery_error"]  # the webhook URL is a secret
    assert _records(stack, scenario) == _expected_records(scenario)
    delivered = wait_until(
        lambda: (a := _alert_row(stack, scenario))["delivery_status"] == "sent" and a,
        "the alert to be delivered", watch=stack.running(),
    )  # fmt: skip
    time.sleep(1.0)  # room for a wrong second delivery
    assert [p.answered for p in sink.posts_for(alert["id"])] == [503, 200]
    assert delivered["delivery_attempts"] == 2 and delivered["last_delivery_error"] is None
    assert stack.count("alerts", "customer_email = ?", (scenario.email,)) == 1
    token = sink.url.rsplit("/", 1)[-1]  # the webhook URL is a secret: in no log of any process
    assert not [p.name for p in stack.log_dir.iterdir() if token in p.read_text(errors="replace")]

"""A burst of 10,000 signed events through the real receiver and two Dramatiq worker processes.

Its own stack (redis-server, `python -m worker web`, `python -m worker worker --processes 2 --threads 4`)
on its own database: a SQLite file, or with TEST_DATABASE_URL a PostgreSQL database `<name>_load` (not
the session stack's `<name>_stack`, which this test leaves alone). No STRIPE_API_KEY: the payment
handlers then skip every fetch (`ctx.stripe is None`), so nothing needs a reachable Stripe API.

Prints the receive rate and the end-to-end rate (first POST to the last event finished). Bounded:
the whole test gives up after TEST_BUDGET_SECONDS with a message saying where it stood. About 2.5
minutes per backend on a quiet 2-core machine.

On PostgreSQL, two events of one customer applied at the same moment could leave a refund without a
note, or with a note older than its refund; advisory locks (models.db.advisory_lock) now prevent it,
and the two race tests at the end drive both cases deterministically.

"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from models.db import make_engine, normalise_url
from tests.bench.pipeline_events import Answer, build_mix, post_all
from tests.integration import stack as stack_module
from tests.integration.stack import PYTHON, ManagedProcess, Stack, free_port, needs_redis, wait_until

pytestmark = pytest.mark.integration
needs_postgresql = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"),
    reason="PostgreSQL only (TEST_DATABASE_URL): SQLite's BEGIN IMMEDIATE serialises the two transactions",
)

CHARGES = 6_000
SINGLE_REFUNDS = 1_200  # charges with one full refund (2 events each)
DOUBLE_REFUNDS = 150  # charges with two partial refunds (4 events each)
UNKNOWN = 1_000  # types no handler takes: stored `ignored`
UNIQUE_EVENTS = CHARGES + 2 * SINGLE_REFUNDS + 4 * DOUBLE_REFUNDS + UNKNOWN  # 10,000
DUPLICATE_SHARE = 0.10
SEED = 20261128
CONCURRENCY = 32
WORKER_PROCESSES = 2
WORKER_THREADS = 4

TEST_BUDGET_SECONDS = 225.0  # the whole test after start-up: the burst, then every event finished
BAD_STATUSES = ("failed", "dead", "received", "processing")


def _load_database_url(sqlite_path: Path) -> str:
    """Like stack.stack_database_url, but PostgreSQL gets `<name>_load`, apart from the session stack."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        return f"sqlite:///{sqlite_path}"
    url = make_url(normalise_url(base))
    name = f"{url.database}_load"
    _admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    return url.set(database=name).render_as_string(hide_password=False)


def _admin(url, *statements: str) -> None:
    admin = make_engine(url.set(database="postgres").render_as_string(hide_password=False))
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        admin.dispose()


def _ready_workers(process: ManagedProcess) -> int:
    return process.stderr_path.read_text(errors="replace").count("Worker process is ready for action")


@pytest.fixture
def load_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setattr(stack_module, "stack_database_url", _load_database_url)
    stack = Stack(tmp_path, api_key="unused", stripe_api_base="http://127.0.0.1:9")
    # No key at all (an empty one would still make a Stripe reader); and a closed loopback port for the
    # API, so an unexpected fetch fails at once instead of going anywhere.
    stack.env.pop("STRIPE_API_KEY")
    stack.env["STRIPE_API_BASE"] = f"http://127.0.0.1:{free_port()}"
    try:
        stack.start_redis()
        migrated = stack.cli("migrate")
        assert migrated.returncode == 0, f"migrate failed:\n{migrated}"
        stack.start_web()
        argv = [PYTHON, "-m", "worker", "worker", "--processes", str(WORKER_PROCESSES)]
        stack.worker = stack._spawn("worker", [*argv, "--threads", str(WORKER_THREADS)])
        wait_until(
            lambda: _ready_workers(stack.worker) >= WORKER_PROCESSES,
            f"{WORKER_PROCESSES} dramatiq worker processes to be ready",
            watch=[stack.worker],
        )
        yield stack
    finally:
        stack.stop_all()
        stack.close_database()
        if stack.backend == "postgresql":
            url = make_url(normalise_url(stack.database_url))
            _admin(url, f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)")


def _epoch(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text through a raw query
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC).timestamp()


def _summary(answers: list[Answer]) -> str:
    statuses = Counter(a.status for a in answers)
    samples = [f"{a.event_id}: {a.status} {a.error}" for a in answers if a.status != 200][:10]
    return f"HTTP statuses {dict(statuses)}; first problems: {samples}"


@needs_redis
def test_a_burst_of_ten_thousand_events_with_duplicates_is_stored_and_applied_exactly_once(
    load_stack: Stack,
) -> None:
    stack = load_stack
    started = time.monotonic()
    deadline = started + TEST_BUDGET_SECONDS

    mix = build_mix(
        "ld", charges=CHARGES, single_refunds=SINGLE_REFUNDS, double_refunds=DOUBLE_REFUNDS, unknown=UNKNOWN
    )
    assert len(mix.events) == UNIQUE_EVENTS
    rng = random.Random(SEED)
    unique = [(document["id"], json.dumps(document).encode()) for document in mix.events]
    items = unique + rng.sample(unique, int(UNIQUE_EVENTS * DUPLICATE_SHARE))
    rng.shuffle(items)
    sends = Counter(event_id for event_id, _ in items)

    # --- the burst --------------------------------------------------------------------------------
    first_post_wall = time.time()
    try:
        answers = asyncio.run(
            asyncio.wait_for(
                post_all("127.0.0.1", stack.web_port, items, stack.webhook_secret, concurrency=CONCURRENCY),
                timeout=deadline - time.monotonic(),
            )
        )
    except TimeoutError:
        pytest.fail(
            f"posting {len(items)} webhooks did not finish within the test's {TEST_BUDGET_SECONDS:g}s "
            f"(the receiver is too slow or stuck)\n{stack.web.tail()}"
        )
    first_sent = min(a.sent for a in answers)
    last_answered = max(a.answered for a in answers)
    receive_seconds = last_answered - first_sent
    assert len(answers) == len(items)
    assert all(a.status == 200 for a in answers), _summary(answers)
    fresh = Counter(a.event_id for a in answers if a.duplicate is False)
    repeated = Counter(a.event_id for a in answers if a.duplicate is True)
    assert all(a.duplicate in (True, False) for a in answers), _summary(answers)
    wrong = {i: (fresh[i], repeated[i], n) for i, n in sends.items() if fresh[i] != 1 or repeated[i] != n - 1}
    assert not wrong, (
        f"(answered new, answered duplicate, sent) per event, first 10: {list(wrong.items())[:10]}"
    )

    # --- every event finished -----------------------------------------------------------------------
    last_counts: dict[str, int] = {}

    def finished() -> bool:
        rows = stack.query("SELECT status, count(*) AS n FROM events GROUP BY status")
        last_counts.clear()
        last_counts.update({row["status"]: row["n"] for row in rows})
        return sum(last_counts.get(s, 0) for s in ("done", "ignored", "dead")) >= UNIQUE_EVENTS

    try:
        wait_until(
            finished,
            f"all {UNIQUE_EVENTS} events to be finished",
            timeout=max(1.0, deadline - time.monotonic()),
            watch=stack.running(),
            interval=0.25,
        )
    except AssertionError as exc:
        raise AssertionError(
            f"gave up after {time.monotonic() - started:.0f}s of a {TEST_BUDGET_SECONDS:g}s budget; "
            f"events by status: {last_counts}\n{exc}"
        ) from None
    detected_wall = time.time()
    last_done = _epoch(stack.query("SELECT max(processed_at) AS t FROM events")[0]["t"])
    end_to_end_seconds = max(last_done or detected_wall, first_post_wall + receive_seconds) - first_post_wall

    latencies = sorted(a.answered - a.sent for a in answers)
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    retried = stack.count("events", "attempts > 1")
    failures_logged = stack.worker.stderr_path.read_text(errors="replace").count("event failed")
    print(
        f"\n[load {stack.backend}] {len(items)} POSTs ({UNIQUE_EVENTS} unique events, "
        f"{len(items) - UNIQUE_EVENTS} repeats), {CONCURRENCY} connections, "
        f"{WORKER_PROCESSES} worker processes x {WORKER_THREADS} threads\n"
        f"[load {stack.backend}] receive: {len(items) / receive_seconds:.0f} requests/s, "
        f"{UNIQUE_EVENTS / receive_seconds:.0f} unique events/s ({receive_seconds:.1f}s); "
        f"latency p50 {1000 * p50:.0f} ms, p99 {1000 * p99:.0f} ms, max {1000 * latencies[-1]:.0f} ms\n"
        f"[load {stack.backend}] end to end (first POST to last event finished): "
        f"{UNIQUE_EVENTS / end_to_end_seconds:.0f} events/s ({end_to_end_seconds:.1f}s); "
        f"events retried: {retried}, failures logged: {failures_logged}"
    )

    # --- stored once, finished, effects once -----------------------------------------------------------
    bad = {s: last_counts[s] for s in BAD_STATUSES if last_counts.get(s)}
    if bad:
        rows = stack.query(
            "SELECT id, type, status, attempts, last_error FROM events "
            "WHERE status NOT IN ('done', 'ignored') LIMIT 10"
        )
        raise AssertionError(f"events not done or ignored: {bad}; for example {rows}")
    stored = stack.query("SELECT id, status, count(*) AS n FROM events GROUP BY id, status")
    assert len(stored) == UNIQUE_EVENTS and all(row["n"] == 1 for row in stored)
    status_of = {row["id"]: row["status"] for row in stored}
    assert {i for i, s in status_of.items() if s == "done"} == mix.handled_ids
    assert {i for i, s in status_of.items() if s == "ignored"} == mix.ignored_ids

    charges = stack.query("SELECT id FROM charges")
    assert len(charges) == len(mix.charge_ids) and {r["id"] for r in charges} == mix.charge_ids
    refunds = stack.query("SELECT id, status FROM refunds")
    assert len(refunds) == len(mix.refund_ids) and {r["id"] for r in refunds} == mix.refund_ids
    behind = {r["id"]: r["status"] for r in refunds if r["status"] != mix.refund_status[r["id"]]}
    assert not behind, f"refunds not at their newest status (first 10): {list(behind.items())[:10]}"

    assert stack.count("customers") == CHARGES  # one email per charge
    assert stack.count("alerts") == 0  # no customer bought anything twice
    # Nothing left in the queue: every message acknowledged, none rejected.
    wait_until(
        lambda: not any(stack.queue_snapshot().values()),
        "the events queue to be empty",
        timeout=max(1.0, min(15.0, deadline - time.monotonic())),
    )

    # One note per refund, saying what its refund row says (last: see the two races below).
    notes = stack.query("SELECT refund_id, status FROM customer_notes WHERE kind = 'refund'")
    assert (
        len(notes) == len({r["refund_id"] for r in notes})
        and {r["refund_id"] for r in notes} <= mix.refund_ids
    )
    missing = sorted(mix.refund_ids - {r["refund_id"] for r in notes})
    stale = sorted(
        (r["refund_id"], r["status"]) for r in notes if r["status"] != mix.refund_status[r["refund_id"]]
    )
    if missing or stale:
        problem = (
            f"of {len(mix.refund_ids)} refunds, {len(missing)} have no refund note "
            f"(first 10: {missing[:10]}) and {len(stale)} have a note with an older status than the "
            f"refund's own (first 10: {stale[:10]})"
        )
        raise AssertionError(problem)


# --- the two races behind the notes the burst can leave wrong on PostgreSQL ------------------------------
#
# Each event is applied in one READ COMMITTED transaction that first writes its own facts, then rewrites
# the notes of every refund of the customer's charges from what it reads. Two events of one customer
# applied at the same time by two worker threads therefore each read the other's facts as they were before
# it committed. Handlers now take advisory locks per charge and per customer (models.db.advisory_lock);
# below, two sessions on two threads are interleaved at the point where that lock must make them wait.


@pytest.fixture
def race_db() -> Iterator:
    from models import Database

    url = make_url(normalise_url(os.environ["TEST_DATABASE_URL"]))
    name = f"{url.database}_load_race"
    _admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    db = Database(url.set(database=name).render_as_string(hide_password=False))
    try:
        db.create_all()
        yield db
    finally:
        db.dispose()
        _admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _apply(session, event_type: str, obj: dict, event_id: str, created: int) -> None:
    from handlers import HandlerContext, handler_for
    from tests.stripe_fixtures import event

    document = event(event_type, obj, event_id=event_id, created=created)
    handler_for(event_type).apply(HandlerContext(event=document, account="", session=session))


@needs_postgresql
def test_a_refund_applied_while_its_charge_is_being_applied_still_gets_a_note(race_db) -> None:
    import threading

    from sqlmodel import Session

    from models import CustomerNote, Refund
    from tests.stripe_fixtures import charge, refund

    paid = charge(
        "ch_race1", amount=1000, customer="cus_race1", billing_details={"email": "race1@example.com"}
    )
    errors: list[BaseException] = []

    def the_refund() -> None:  # a second worker thread, while the charge is still being applied
        try:
            with Session(race_db.engine) as second:
                _apply(
                    second,
                    "refund.updated",
                    refund("re_race1", charge_id="ch_race1", amount=1000),
                    "evt_race1r",
                    1_100,
                )
                second.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    with Session(race_db.engine) as first:
        _apply(first, "charge.succeeded", paid, "evt_race1c", 1_000)  # not committed yet
        thread = threading.Thread(target=the_refund, daemon=True)
        thread.start()
        wait_until(
            lambda: _waiting_for_a_lock(race_db), "the refund to wait for the charge's lock", timeout=10
        )
        first.commit()
    thread.join(timeout=10)
    assert not thread.is_alive() and not errors, errors
    with Session(race_db.engine) as session:
        assert session.get(Refund, "re_race1") is not None
        assert session.get(CustomerNote, "refund:re_race1") is not None, "the refund has no note"


@needs_postgresql
def test_a_refund_note_is_not_overwritten_from_a_stale_read_by_an_event_about_another_refund(race_db) -> None:
    import threading

    from sqlmodel import Session

    from models import CustomerNote, Refund
    from tests.stripe_fixtures import charge, refund

    paid = charge(
        "ch_race2", amount=1000, customer="cus_race2", billing_details={"email": "race2@example.com"}
    )

    def half(refund_id: str, status: str) -> dict:
        return refund(refund_id, charge_id="ch_race2", amount=500, status=status)

    with Session(race_db.engine) as session:
        _apply(session, "charge.succeeded", paid, "evt_race2c", 1_000)
        _apply(session, "refund.created", half("re_race2a", "pending"), "evt_race2ac", 1_100)
        _apply(session, "refund.created", half("re_race2b", "pending"), "evt_race2bc", 1_200)
        session.commit()

    errors: list[BaseException] = []

    def other_refund() -> None:  # reads re_race2b as pending, then waits for its note row's lock
        try:
            with Session(race_db.engine) as session:
                _apply(session, "refund.updated", half("re_race2a", "succeeded"), "evt_race2au", 1_101)
                session.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    with Session(race_db.engine) as newer:
        _apply(newer, "refund.updated", half("re_race2b", "succeeded"), "evt_race2bu", 1_201)
        thread = threading.Thread(target=other_refund, daemon=True)
        thread.start()
        wait_until(
            lambda: _waiting_for_a_lock(race_db),
            "the other event to wait for the note's row lock",
            timeout=10,
        )
        newer.commit()
    thread.join(timeout=10)
    assert not thread.is_alive() and not errors, errors
    with Session(race_db.engine) as session:
        assert session.get(Refund, "re_race2b").status == "succeeded"
        assert session.get(CustomerNote, "refund:re_race2b").status == "succeeded", "the note is stale"


def _waiting_for_a_lock(db) -> bool:
    with db.engine.connect() as connection:
        waiting = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).scalar()
    return bool(waiting)

"""The clock: no job waits for another, a missed nightly run is caught up at start, and two clocks on
one database run each night's reconciliation once.

The clocks here run for a few seconds in this process, with intervals of a tenth of a second; the
nightly job is made due a couple of minutes ago, so it runs at start-up as a catch-up.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from models import Database, ReconcileRun
from tests.conftest import TEST_DATABASE_URL
from worker.jobs import clock


def _two_minutes_ago() -> tuple[str, datetime]:
    """RECONCILE_AT two minutes ago (UTC, HH:MM), and the moment it last fell on."""
    due = (datetime.now(UTC) - timedelta(minutes=2)).replace(second=0, microsecond=0)
    return due.strftime("%H:%M"), due


def _done_run(database: Database, window_end: datetime) -> None:
    with database.session() as session:
        session.add(
            ReconcileRun(
                window_start=window_end - timedelta(days=2),
                window_end=window_end,
                status="done",
                finished_at=window_end + timedelta(minutes=3),
            )
        )


def _done_runs(database: Database) -> int:
    with database.session() as session:
        return len(session.exec(select(ReconcileRun).where(ReconcileRun.status == "done")).all())


def _run_clock_for(seconds: float, jobs: list, **kwargs) -> None:
    """run_forever in this (the main) thread, stopped after `seconds`, as the clock process runs it."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        clock.run_forever(jobs, stop, **kwargs)
    finally:
        timer.cancel()


class Ticks:
    """A job that records when it ran."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> int:
        self.at.append(time.monotonic())
        return len(self.at)

    def between(self, start: float, end: float) -> int:
        return sum(1 for t in self.at if start <= t <= end)


class Slow:
    """A job that takes `seconds`, recording when it started and ended."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: list[float] = []
        self.ended: list[float] = []

    def __call__(self) -> str:
        self.started.append(time.monotonic())
        time.sleep(self.seconds)
        self.ended.append(time.monotonic())
        return "slow job done"


def test_a_slow_job_does_not_delay_the_sweepers_ticks():
    sweep, slow = Ticks(), Slow(2.0)

    _run_clock_for(3.0, [clock.Job("sweep", 0.1, sweep), clock.Job("slow", 3600, slow)])

    assert len(slow.started) == 1 and len(slow.ended) == 1, "the slow job runs once, at start-up"
    during = sweep.between(slow.started[0], slow.ended[0])
    # Ten turns a second: about 20 while the slow job runs. Inline, there would be none.
    assert during >= 10, f"the sweeper ran {during} times during the slow job's 2 s"


def test_a_slow_nightly_run_does_not_delay_the_sweeper_or_the_alert_delivery(worker_db):
    at, due = _two_minutes_ago()
    _done_run(worker_db, due - timedelta(days=1))  # last night's run: tonight's is due
    sweep, deliver, nightly = Ticks(), Ticks(), Slow(2.0)
    jobs = [
        clock.Job("sweep", 0.1, sweep),
        clock.DailyJob("reconcile", at, nightly),  # as `python -m worker clock` builds it
        clock.Job("deliver alerts", 0.1, deliver),
    ]

    _run_clock_for(3.0, jobs)

    assert len(nightly.started) == 1, "the missed nightly run is caught up at start"
    assert len(nightly.ended) == 1
    window = (nightly.started[0], nightly.ended[0])
    assert sweep.between(*window) >= 10, sweep.between(*window)
    assert deliver.between(*window) >= 10, deliver.between(*window)


def test_a_nightly_run_missed_while_the_clock_was_down_is_caught_up_at_start_once(worker_db, caplog):
    caplog.set_level(logging.INFO, logger="worker.jobs.clock")
    at, due = _two_minutes_ago()
    _done_run(worker_db, due - timedelta(days=1))
    runs = Ticks()

    _run_clock_for(1.5, [clock.DailyJob("reconcile", at, runs)])

    assert len(runs.at) == 1
    assert f"reconcile due at {due.isoformat()} was missed; running it now" in caplog.text


@pytest.mark.parametrize(
    "last_done, minutes_since_due, expected",
    [
        (timedelta(days=-1), 2, "caught up"),  # last night's run; tonight's missed 2 minutes ago
        (timedelta(days=-3), 2, "caught up"),  # several nights missed: one run (its window covers them)
        (timedelta(days=-1), 5 * 60 + 59, "caught up"),  # within the 6-hour grace
        (timedelta(days=-1), 6 * 60 + 1, None),  # beyond it: the next night's run covers the gap
        (timedelta(seconds=1), 2, None),  # tonight's run is done (by this clock or another)
        (timedelta(seconds=0), 2, None),  # ... its window ends at the scheduled time itself
        (None, 2, None),  # never run: the first run is at its time
    ],
)
def test_which_missed_runs_are_caught_up(last_done, minutes_since_due, expected):
    job = clock.DailyJob("reconcile", "03:00", lambda: None)
    due = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    now = due + timedelta(minutes=minutes_since_due)

    missed = job.missed_run(now, None if last_done is None else due + last_done)

    assert missed == (due if expected else None)


def test_the_latest_scheduled_time_is_today_or_yesterday():
    job = clock.DailyJob("reconcile", "03:00", lambda: None)
    assert job.latest_at_or_before(datetime(2026, 11, 2, 3, 0, tzinfo=UTC)) == datetime(
        2026, 11, 2, 3, 0, tzinfo=UTC
    )
    assert job.latest_at_or_before(datetime(2026, 11, 2, 2, 59, tzinfo=UTC)) == datetime(
        2026, 11, 1, 3, 0, tzinfo=UTC
    )
    assert job.next_after(datetime(2026, 11, 2, 3, 0, tzinfo=UTC)) == datetime(2026, 11, 3, 3, 0, tzinfo=UTC)


def test_the_last_successful_run_is_the_newest_done_window(db):
    assert clock.last_successful_reconcile(db) is None
    end = datetime(2026, 11, 2, 3, 0, 1, tzinfo=UTC)
    _done_run(db, end)
    with db.session() as session:  # a failed run after it does not count
        session.add(ReconcileRun(window_start=end, window_end=end + timedelta(days=1), status="failed"))
    assert clock.last_successful_reconcile(db) == end


@pytest.fixture
def shared_databases(db, tmp_path):
    """Two Database objects on one database, as two clock processes would have."""
    url = TEST_DATABASE_URL or f"sqlite:///{tmp_path / 'clock.db'}"
    first, second = Database(url), Database(url)
    if not TEST_DATABASE_URL:
        first.create_all()
    yield first, second
    first.dispose()
    second.dispose()


def test_the_lock_is_held_by_one_holder_at_a_time_across_database_objects(shared_databases):
    first, second = shared_databases
    with clock.exclusive(first, "reconcile") as held:
        assert held
        with clock.exclusive(second, "reconcile") as other:
            assert not other
        with clock.exclusive(second, "something else") as unrelated:
            assert unrelated
    with clock.exclusive(second, "reconcile") as after:
        assert after


def test_two_clocks_on_one_database_run_the_nightly_job_once(shared_databases, caplog):
    caplog.set_level(logging.INFO, logger="worker.jobs.clock")
    at, due = _two_minutes_ago()
    first, second = shared_databases
    _done_run(first, due - timedelta(days=1))
    started: list[str] = []

    def nightly(name: str, database: Database):
        def run() -> str:
            started.append(name)
            window_end = datetime.now(UTC)
            time.sleep(0.5)  # long enough for the other clock to try while this one holds the lock
            _done_run(database, window_end)
            return f"done by {name}"

        return run

    stop = threading.Event()
    clocks = [
        threading.Thread(
            target=clock.run_forever,
            args=([clock.DailyJob("reconcile", at, nightly(name, database))], stop),
            kwargs={"database": database, "tick_seconds": 0.1},
            name=f"clock {name}",
        )
        for name, database in (("A", first), ("B", second))
    ]
    for thread in clocks:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while caplog.text.count("reconcile: ") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in clocks:
            thread.join(15)

    assert len(started) == 1, started
    assert _done_runs(first) == 2  # last night's and tonight's
    assert caplog.text.count(f"reconcile: done by {started[0]}") == 1
    assert caplog.text.count("reconcile: skipped") == 1, caplog.text


def test_a_clock_that_takes_the_lock_after_another_finished_skips_the_run(shared_databases):
    """The clock that loses the race may take the lock after the winner released it."""
    at, due = _two_minutes_ago()
    first, second = shared_databases
    _done_run(first, due + timedelta(seconds=1))  # tonight's run, finished by another clock
    runs = Ticks()
    job = clock.DailyJob("reconcile", at, runs)

    result = clock._Nightly(job, lambda: second, clock.last_successful_reconcile)()

    assert runs.at == []
    assert result.startswith("skipped: the run due at")


def test_a_clock_that_cannot_take_the_lock_skips_the_run(shared_databases):
    at, _ = _two_minutes_ago()
    first, second = shared_databases
    runs = Ticks()
    job = clock.DailyJob("reconcile", at, runs)

    with clock.exclusive(first, "reconcile"):
        result = clock._Nightly(job, lambda: second, clock.last_successful_reconcile)()

    assert runs.at == [] and result == "skipped: another clock is running it"
    assert clock._Nightly(job, lambda: second, clock.last_successful_reconcile)() == 1


def test_a_failing_job_is_logged_and_the_clock_goes_on(caplog):
    sweep = Ticks()

    def broken() -> None:
        raise RuntimeError("Stripe is down")

    _run_clock_for(0.6, [clock.Job("broken", 0.1, broken), clock.Job("sweep", 0.1, sweep)])

    assert "broken failed; will run again at its next turn" in caplog.text
    assert caplog.text.count("Stripe is down") >= 2  # tried again at its next turns
    assert len(sweep.at) >= 3

"""The `clock` process: the sweeper and alert re-delivery every minute, the nightly run at RECONCILE_AT.

Built on APScheduler (a BackgroundScheduler; the main thread only waits for SIGTERM/SIGINT):

- Every run of every job gets a thread of its own, and each job has `max_instances=1`: a nightly run
  that takes minutes against the real API never delays a sweep, and a job never overlaps itself (a
  sweep still running when its next turn comes skips that turn; `coalesce` folds a backlog of missed
  turns into one run).
- The nightly job is a cron trigger at RECONCILE_AT (UTC) with a misfire grace of `DailyJob.grace`
  (6 hours): a run that starts late (a stalled machine) still runs within it. APScheduler's memory
  job store forgets a misfire across restarts, so at start-up the clock reads when the job last
  succeeded (for the nightly reconciliation: the newest `done` row of `reconcile_runs`) and, when the
  most recent RECONCILE_AT has passed since then and is no more than the grace ago, runs it at once.
  Later than that, the next night's run covers the gap (its window starts at the last successful
  run's end less 48 hours), so nothing is lost, only delayed, and no run starts in the middle of a
  working day.
- A lock (`exclusive`) lets only one clock run a nightly job at a time; the one that takes it checks
  again that no other clock finished this night's run meanwhile. Two clocks started by mistake (or
  one left over during a deploy) run each night's reconciliation once.

A job that raises is logged and tried again at its next turn; the clock itself never dies of a job's
failure.

With MIRROR_NOTES_TO_STRIPE=true the clock also writes changed refund histories to Stripe customers'
metadata every minute (`optional_jobs`, `mirror_notes_once`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

if TYPE_CHECKING:
    from models import Database
    from worker.settings import Settings

log = logging.getLogger(__name__)

# How late a nightly run may still start, counted from its RECONCILE_AT: after a restart, or late
# within a running clock. Long enough for a clock that was down for the night's deploy window.
NIGHTLY_GRACE = timedelta(hours=6)
# On SIGTERM, how long running jobs get to finish before the process exits without them (a nightly
# run stopped this way resumes from its saved cursor next time; a sweep is simply run again).
STOP_GRACE_SECONDS = 10.0


@dataclass
class Job:
    """Every `interval_seconds`, first at start-up."""

    name: str
    interval_seconds: float
    run: Callable[[], object]


@dataclass
class DailyJob:
    """Once a day at `at` (HH:MM, UTC), caught up at start when missed (see the module's docstring).

    `last_done(database)` says when the job last succeeded (None: never); without it, the clock uses
    `LAST_DONE[name]` (the nightly reconciliation's is built in) and, failing that, never catches up.
    `exclusive`: only one clock at a time runs it (a database-wide lock: `exclusive()`).
    """

    name: str
    at: str
    run: Callable[[], object]
    last_done: Callable[[Database], datetime | None] | None = None
    grace: timedelta = NIGHTLY_GRACE
    exclusive: bool = True

    @property
    def hour_minute(self) -> tuple[int, int]:
        hour, minute = (int(part) for part in self.at.split(":"))
        return hour, minute

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The most recent scheduled time not after `moment`."""
        hour, minute = self.hour_minute
        candidate = moment.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
        return candidate if candidate <= moment else candidate - timedelta(days=1)

    def next_after(self, moment: datetime) -> datetime:
        return self.latest_at_or_before(moment) + timedelta(days=1)

    def missed_run(self, now: datetime, last_done: datetime | None) -> datetime | None:
        """The scheduled time to catch up at start-up, or None.

        Caught up: the most recent scheduled time is at most `grace` ago and the last success ended
        before it. A job that never succeeded has nothing to catch up: its first run is at its time.
        """
        due = self.latest_at_or_before(now)
        if last_done is None or last_done >= due or now - due > self.grace:
            return None
        return due


def last_successful_reconcile(database: Database) -> datetime | None:
    """The end of the newest window a reconciliation finished (`reconcile_runs`, status `done`).

    The window's end is the moment the run started listing, so a run that ended at or after a
    scheduled time covers that night (the (status, window_end) index answers this).
    """
    from sqlmodel import func, select

    from models import ReconcileRun

    with database.session() as session:
        return session.exec(
            select(func.max(ReconcileRun.window_end)).where(ReconcileRun.status == "done")
        ).first()


# How each daily job's last success is read, for jobs that do not say (cli.py builds the nightly job).
LAST_DONE: dict[str, Callable[[Database], datetime | None]] = {"reconcile": last_successful_reconcile}


# --- jobs a setting turns on ------------------------------------------------------------------------

NOTES_MIRROR_JOB = "mirror notes to stripe"
NOTES_MIRROR_INTERVAL_SECONDS = 60.0


def optional_jobs(settings: Settings, database: Callable[[], Database] | None = None) -> list[Job]:
    """The jobs only a setting turns on: today the refund-history mirror (MIRROR_NOTES_TO_STRIPE).

    `run_forever` adds them to the jobs it is given, so `python -m worker clock` runs them without its
    list naming them. `database` (default: the process's own) is the one they work on.
    """
    if not settings.mirror_notes_to_stripe:
        return []

    def mirror() -> object:
        return mirror_notes_once(settings, database() if database else None)

    return [Job(NOTES_MIRROR_JOB, NOTES_MIRROR_INTERVAL_SECONDS, mirror)]


def mirror_notes_once(settings: Settings, database: Database | None = None, client=None) -> object:
    """One turn of the mirror: customers whose refund notes changed, written to Stripe's metadata.

    A poll of the stored notes rather than an actor enqueued after each commit: the notes and
    `stripe_note_mirrors` say what is still to write, so nothing is lost when an enqueue would have
    been (a crash after commit, Redis down), and a turn repeated writes nothing twice (unchanged
    histories are skipped; see handlers/stripe_notes_mirror.py). Under a lock, like the nightly run,
    so two clocks do not send the same request at once.
    """
    from zoneinfo import ZoneInfo

    from handlers.stripe_notes_mirror import mirror_changed_customers
    from worker import runtime, stripe_api

    database = database or runtime.database()
    with exclusive(database, "stripe-notes-mirror") as held:
        if not held:
            return "skipped: another clock is running it"
        try:
            client = client or runtime.stripe_client()
        except stripe_api.StripeNotConfigured:
            log.warning("%s: STRIPE_API_KEY is not set; nothing written", NOTES_MIRROR_JOB)
            return "skipped: STRIPE_API_KEY is not set"
        reader = stripe_api.StripeReader(settings, client)
        return mirror_changed_customers(database, reader, timezone=ZoneInfo(settings.display_timezone))


# --- the lock ---------------------------------------------------------------------------------------

_in_process_locks: dict[str, threading.Lock] = {}
_in_process_guard = threading.Lock()


@contextlib.contextmanager
def exclusive(database: Database, name: str) -> Iterator[bool]:
    """Try to take the lock named `name` for this database; yields whether this caller holds it.

    Never waits: a clock that does not get it skips this run. Each form is released by the operating
    system or the server when its holder dies, so a killed clock never leaves a stale lock behind
    (a `running` row in a table would, and would need a staleness rule that could let a slow but
    alive run be doubled):

    - PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a connection of its own, in
      autocommit mode so it is never left idle in a transaction during a long run; released on unlock
      or when the connection closes.
    - SQLite file: an exclusive `flock` on `<database file>.<name>.lock`, beside the database. Every
      process that can open a SQLite file runs on this machine (SQLite is not for network file
      systems), so this covers every clock that shares the database; `flock` locks belong to the open
      file, so two clocks in one process (tests) exclude each other too.
    - in-memory SQLite: visible to one process only, so a lock of this process.
    """
    if database.dialect == "postgresql":
        with _advisory_lock(database, f"clock:{name}") as held:
            yield held
        return
    path = database.engine.url.database
    if path in (None, "", ":memory:"):
        with _in_process_guard:
            lock = _in_process_locks.setdefault(name, threading.Lock())
        held = lock.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                lock.release()
        return
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    lock_path = Path(path).with_name(f"{Path(path).name}.{safe}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for on-call staff
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _advisory_lock(database: Database, key: str) -> Iterator[bool]:
    from sqlalchemy import text

    with database.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        held = bool(
            connection.execute(
                text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": key}
            ).scalar()
        )
        try:
            yield held
        finally:
            if held:
                try:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), {"key": key}
                    )
                except Exception:  # the connection is gone, and the lock with it
                    log.warning("could not release the clock's lock %s (its connection is gone)", key)


# --- running the jobs -------------------------------------------------------------------------------


class _ThreadPerRun(BaseExecutor):
    """Runs each job run in a daemon thread of its own.

    APScheduler's ThreadPoolExecutor would do the same with one pool per job, but its threads are
    joined when the interpreter exits, so SIGTERM during a nightly run would keep the process alive
    until the run ends; here, the clock waits `STOP_GRACE_SECONDS` for running jobs and then exits.
    """

    def __init__(self) -> None:
        super().__init__()
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()

    def _do_submit_job(self, job, run_times) -> None:
        def target() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)
            finally:
                with self._threads_lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=target, name=f"clock: {job.id}", daemon=True)
        with self._threads_lock:
            self._threads.add(thread)
        thread.start()

    def running(self) -> list[threading.Thread]:
        with self._threads_lock:
            return [t for t in self._threads if t.is_alive()]

    def join(self, timeout: float) -> list[threading.Thread]:
        """Wait up to `timeout` seconds for running jobs; return those still running."""
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            for thread in self.running():
                while thread.is_alive() and not deadline.is_set():
                    thread.join(0.1)
        finally:
            timer.cancel()
        return self.running()


def _logged(name: str, run: Callable[[], object]) -> Callable[[], None]:
    def logged() -> None:
        try:
            result = run()
        except Exception:
            log.exception("%s failed; will run again at its next turn", name)
        else:
            log.info("%s: %s", name, result)

    return logged


@dataclass
class _Nightly:
    """A daily job's run: under its lock, and only if no other clock has done this night's run."""

    job: DailyJob
    database: Callable[[], Database]
    last_done: Callable[[Database], datetime | None] | None
    lock: Callable[[Database, str], contextlib.AbstractContextManager[bool]] = field(default=exclusive)

    def read_last_done(self) -> datetime | None:
        return None if self.last_done is None else self.last_done(self.database())

    def __call__(self) -> object:
        if not self.job.exclusive:
            return self.job.run()
        with self.lock(self.database(), self.job.name) as held:
            if not held:
                return "skipped: another clock is running it"
            due = self.job.latest_at_or_before(datetime.now(UTC))
            done = self.read_last_done()
            if done is not None and done >= due:
                return f"skipped: the run due at {due.isoformat()} is done (up to {done.isoformat()})"
            return self.job.run()


def _handle_stop_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set `stop` (only the main thread can take signals); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def run_forever(
    jobs: list[Job | DailyJob],
    stop: threading.Event | None = None,
    tick_seconds: float = 1.0,
    *,
    database: Database | None = None,
    stop_grace_seconds: float = STOP_GRACE_SECONDS,
    settings: Settings | None = None,
) -> None:
    """Run `jobs` until `stop` is set (or SIGTERM/SIGINT, when called from the main thread).

    `database` (default: the process's own) is where daily jobs take their lock and read when they
    last succeeded. `tick_seconds` is how often the main thread checks `stop` (the scheduler has its
    own timing). The jobs `settings` (default: the process's own) turn on are added (`optional_jobs`).
    """
    stop = stop or threading.Event()
    restore_signals = _handle_stop_signals(stop)
    apscheduler_log = logging.getLogger("apscheduler")
    if apscheduler_log.level == logging.NOTSET:
        # "Running job"/"executed successfully" every minute; its warnings (a missed or skipped run)
        # and errors still show.
        apscheduler_log.setLevel(logging.WARNING)

    def the_database() -> Database:
        if database is not None:
            return database
        from worker import runtime

        return runtime.database()

    if settings is None:
        from worker.settings import get_settings

        settings = get_settings()
    named = {job.name for job in jobs}
    jobs = [*jobs, *(job for job in optional_jobs(settings, the_database) if job.name not in named)]
    executor = _ThreadPerRun()
    scheduler = BackgroundScheduler(
        executors={"default": executor},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=UTC,
    )
    now = datetime.now(UTC)
    for job in jobs:
        if isinstance(job, DailyJob):
            _add_daily(scheduler, job, the_database, now)
        else:
            scheduler.add_job(
                _logged(job.name, job.run),
                IntervalTrigger(seconds=job.interval_seconds, timezone=UTC),
                id=job.name,
                name=job.name,
                next_run_time=now,  # first at start-up
                misfire_grace_time=None,  # a late turn still runs (once: coalesce)
            )
    scheduler.start()
    log.info("clock started: %s", ", ".join(job.name for job in jobs))
    try:
        while not stop.wait(tick_seconds):
            pass
    finally:
        scheduler.shutdown(wait=False)
        left = executor.join(stop_grace_seconds)
        restore_signals()
        if left:
            log.warning(
                "clock stopping while %s still running (a nightly run resumes from its cursor next time)",
                ", ".join(thread.name for thread in left),
            )
    log.info("clock stopped")


def _add_daily(scheduler: BackgroundScheduler, job: DailyJob, database: Callable[[], Database], now) -> None:
    nightly = _Nightly(job, database, job.last_done or LAST_DONE.get(job.name))
    first = job.next_after(now)
    try:
        missed = job.missed_run(now, nightly.read_last_done())
    except Exception:
        log.exception("%s: could not read when it last ran; no catch-up at start", job.name)
        missed = None
    if missed is not None:
        log.warning("%s due at %s was missed; running it now", job.name, missed.isoformat())
        first = missed
    hour, minute = job.hour_minute
    scheduler.add_job(
        _logged(job.name, nightly),
        CronTrigger(hour=hour, minute=minute, timezone=UTC),
        id=job.name,
        name=job.name,
        next_run_time=first,
        misfire_grace_time=int(job.grace.total_seconds()),
    )
    log.info("%s scheduled for %s", job.name, job.next_after(now).isoformat())

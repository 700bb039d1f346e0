"""Real `python -m worker clock` processes: two of them run a night's reconciliation once, and a run
missed while the clock was down is caught up when it starts.

The nightly run is the real one (`run_reconcile`), listing from the local Stripe stand-in, on a
database of its own (SQLite here; its own PostgreSQL database on the PostgreSQL leg). Nothing answers
at REDIS_URL: the sweeps say so and the clock goes on.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import select

from models import Database, ReconcileRun
from models.db import make_engine, normalise_url
from tests.conftest import TEST_DATABASE_URL
from tests.integration.stack import PYTHON, FakeStripe, ManagedProcess, Stack, free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    if not TEST_DATABASE_URL:
        yield f"sqlite:///{tmp_path / 'clock.db'}"
        return
    url = make_url(normalise_url(TEST_DATABASE_URL))
    name = f"{url.database}_clock"
    admin = make_engine(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


class Clocks:
    def __init__(self, root: Path, database_url: str, stripe: FakeStripe, reconcile_at: str) -> None:
        self.root = root
        self.log_dir = root / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.env = Stack.base_env(
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing there
            BROKER="redis",
            STRIPE_API_KEY="sk_test_" + uuid.uuid4().hex + "Clock",
            STRIPE_API_BASE=stripe.url,
            STRIPE_MAX_ATTEMPTS="1",
            RECONCILE_AT=reconcile_at,
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
        )
        self.processes: list[ManagedProcess] = []
        self.database = Database(database_url)

    def migrate(self) -> None:
        done = ManagedProcess("migrate", [PYTHON, "-m", "worker", "migrate"], env=self.env, cwd=self.root,
                              log_dir=self.log_dir)  # fmt: skip
        assert done.popen.wait(60) == 0, done.tail()

    def start(self, name: str) -> ManagedProcess:
        process = ManagedProcess(name, [PYTHON, "-m", "worker", "clock"], env=self.env, cwd=self.root,
                                 log_dir=self.log_dir)  # fmt: skip
        self.processes.append(process)
        return process

    @staticmethod
    def messages(process: ManagedProcess) -> list[str]:
        lines = process.stderr_path.read_text(errors="replace").splitlines()
        return [json.loads(line)["msg"] for line in lines if line.startswith("{")]

    def results(self, process: ManagedProcess) -> list[str]:
        return [m for m in self.messages(process) if m.startswith("reconcile: ")]

    def done_runs(self) -> list[ReconcileRun]:
        with self.database.session() as session:
            return list(session.exec(select(ReconcileRun).where(ReconcileRun.status == "done")).all())

    def add_done_run(self, window_end: datetime) -> None:
        with self.database.session() as session:
            session.add(
                ReconcileRun(
                    window_start=window_end - timedelta(days=2),
                    window_end=window_end,
                    status="done",
                    finished_at=window_end + timedelta(minutes=1),
                )
            )

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()
        self.database.dispose()


@pytest.fixture
def clocks_at(tmp_path: Path, database_url: str, fake_stripe: FakeStripe):
    made: list[Clocks] = []

    def make(reconcile_at: str) -> Clocks:
        clocks = Clocks(tmp_path, database_url, fake_stripe, reconcile_at)
        made.append(clocks)
        clocks.migrate()
        return clocks

    yield make
    for clocks in made:
        clocks.stop_all()


def _next_minute(lead_seconds: float = 12) -> datetime:
    """The next whole minute at least `lead_seconds` away (time for two clocks to start)."""
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return minute if (minute - now).total_seconds() >= lead_seconds else minute + timedelta(minutes=1)


def test_two_clock_processes_run_the_nightly_reconciliation_once(clocks_at):
    at = _next_minute()
    clocks = clocks_at(at.strftime("%H:%M"))
    first, second = clocks.start("clock-a"), clocks.start("clock-b")
    for process in (first, second):
        wait_until(lambda p=process: any("reconcile scheduled for" in m for m in clocks.messages(p)),
                   f"{process.name} to start", watch=[process])  # fmt: skip

    seconds_to_go = (at - datetime.now(UTC)).total_seconds()
    wait_until(
        lambda: clocks.results(first) and clocks.results(second),
        f"both clocks to reach the nightly run at {at:%H:%M} UTC",
        timeout=seconds_to_go + 30,
        watch=[first, second],
    )

    runs = clocks.done_runs()
    assert len(runs) == 1, [(r.id, r.window_start, r.window_end) for r in runs]
    assert runs[0].window_end >= at
    results = clocks.results(first) + clocks.results(second)
    assert sum(r.startswith("reconcile: skipped") for r in results) == 1, results
    for process in (first, second):
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(20) == 0, process.tail()
        assert "clock stopped" in clocks.messages(process)


def test_a_clock_started_after_a_missed_nightly_run_runs_it_at_once(clocks_at):
    due = (datetime.now(UTC) - timedelta(minutes=2)).replace(second=0, microsecond=0)
    clocks = clocks_at(due.strftime("%H:%M"))
    clocks.add_done_run(due - timedelta(days=1, seconds=-5))  # last night's run; tonight's was missed
    started = time.monotonic()
    process = clocks.start("clock")

    wait_until(lambda: clocks.results(process), "the missed run to be caught up", watch=[process])

    assert time.monotonic() - started < 25
    assert f"reconcile due at {due.isoformat()} was missed; running it now" in clocks.messages(process)
    runs = clocks.done_runs()
    assert len(runs) == 2 and runs[-1].window_end >= due, runs
    # A second clock started now finds tonight's run done: nothing to catch up.
    again = clocks.start("clock-again")
    wait_until(lambda: any("reconcile scheduled for" in m for m in clocks.messages(again)),
               "the second clock to start", watch=[again])  # fmt: skip
    time.sleep(1)
    assert clocks.results(again) == []
    assert len(clocks.done_runs()) == 2

"""The `clock` process: runs scheduled jobs in-process (the sweeper every minute, the nightly run).

One clock process per deployment. A job that raises is logged and tried again at its next turn; the
clock itself never dies of a job's failure.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Every `interval_seconds`, first at start-up."""

    name: str
    interval_seconds: float
    run: Callable[[], object]
    next_run: float = 0.0

    def due(self, now: float) -> bool:
        if now < self.next_run:
            return False
        self.next_run = now + self.interval_seconds
        return True


@dataclass
class DailyJob:
    """Once a day at `at` (HH:MM, UTC)."""

    name: str
    at: str
    run: Callable[[], object]
    next_run: float | None = None

    def next_after(self, moment: datetime) -> datetime:
        hour, minute = (int(part) for part in self.at.split(":"))
        candidate = moment.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return candidate if candidate > moment else candidate + timedelta(days=1)

    def due(self, now: float) -> bool:
        if self.next_run is None:
            self.next_run = self.next_after(datetime.fromtimestamp(now, UTC)).timestamp()
            log.info("%s scheduled for %s", self.name, datetime.fromtimestamp(self.next_run, UTC).isoformat())
        if now < self.next_run:
            return False
        self.next_run = self.next_after(datetime.fromtimestamp(now, UTC)).timestamp()
        return True


def run_forever(jobs: list, stop: threading.Event | None = None, tick_seconds: float = 1.0) -> None:
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("clock started: %s", ", ".join(job.name for job in jobs))
    while not stop.is_set():
        now = time.time()
        for job in jobs:
            if job.due(now):
                try:
                    result = job.run()
                    log.info("%s: %s", job.name, result)
                except Exception:
                    log.exception("%s failed; will run again at its next turn", job.name)
        stop.wait(tick_seconds)
    log.info("clock stopped")

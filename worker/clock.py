"""The `clock` process: runs scheduled jobs in-process (the sweeper every minute).

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

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    interval_seconds: float
    run: Callable[[], object]
    next_run: float = 0.0


def run_forever(jobs: list[Job], stop: threading.Event | None = None, tick_seconds: float = 1.0) -> None:
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("clock started: %s", ", ".join(f"{j.name} every {j.interval_seconds:g}s" for j in jobs))
    while not stop.is_set():
        now = time.monotonic()
        for job in jobs:
            if now >= job.next_run:
                job.next_run = now + job.interval_seconds
                try:
                    result = job.run()
                    log.info("%s: %s", job.name, result)
                except Exception:
                    log.exception("%s failed; will run again at its next turn", job.name)
        stop.wait(tick_seconds)
    log.info("clock stopped")

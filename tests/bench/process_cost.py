"""CPU per event of the actor's body alone: `processing.process_event` in this process, one thread.

No receiver, Redis or Dramatiq: the events of tests/bench/pipeline_events.py are stored straight into a
fresh database, then applied one by one, as the actor would. Three rounds of fresh events; the figure
is the lowest round's CPU per event (the least disturbed by other work on the machine), with the
statements SQLAlchemy itself executed per event (Prepared statements, models/prepared.py, bypass it).

On PostgreSQL it also counts the read system calls the process made per event (/proc/self/io
`syscr`): each wait for the server's answer is one, so it is the event's round trips to the server
(give or take a partial read). `--compare` runs each round twice, alternately: as shipped, and with
every statement waiting for its answer and a ping before every transaction (what the worker did
before pipelined transactions, models/db.py); the figures are then per mode.

Run from the repository root:
    .venv/bin/python tests/bench/process_cost.py [--events 600] [--database-url URL] [--compare]
Default database: a new SQLite file in a temporary folder. A PostgreSQL URL must name an empty
database the script may fill (its tables are created; nothing is dropped).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests`, `worker` and `models` importable
    sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy import event as sqlalchemy_event  # noqa: E402

from models import Database  # noqa: E402
from models import db as db_module  # noqa: E402
from tests.bench.pipeline_bench import _mix, store_directly  # noqa: E402
from worker.jobs import processing  # noqa: E402

MODES = {
    "as shipped": (True, db_module.PING_AFTER_IDLE_SECONDS),
    "unpipelined, ping each time": (False, 0.0),
}


def _reads() -> int:
    """Read system calls this process has made (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600, help="events per round (3 rounds)")
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    parser.add_argument(
        "--compare", action="store_true", help="also run each round unpipelined, pinging each time"
    )
    args = parser.parse_args(argv)
    modes = list(MODES) if args.compare else ["as shipped"]

    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/process_cost.db"
        db = Database(url)
        db.create_all()
        logging.disable(logging.CRITICAL)  # the actor logs one line per event; not measured here
        tag = f"pc{int(time.time())}"
        rounds = [
            (mode, _mix(f"{tag}r{n}m{m}", args.events).events)
            for n in range(3)
            for m, mode in enumerate(modes)
        ]
        store_directly(db, [document for _, documents in rounds for document in documents])

        statements: collections.Counter[str] = collections.Counter()
        current = [""]
        sqlalchemy_event.listen(
            db.engine, "before_cursor_execute", lambda *_args: statements.update([current[0]])
        )
        results = []
        for mode, documents in rounds:
            processing.PIPELINED_TRANSACTIONS, db_module.PING_AFTER_IDLE_SECONDS = MODES[mode]
            statements.clear()
            by_type: collections.Counter[str] = collections.Counter()
            reads_before = _reads()
            cpu_started, started = time.process_time(), time.perf_counter()
            for document in documents:
                current[0] = document["type"]
                by_type[document["type"]] += 1
                processing.process_event(db, document["id"], "", max_attempts=10)
            cpu = time.process_time() - cpu_started
            wall = time.perf_counter() - started
            reads = _reads() - reads_before
            results.append(
                {
                    "mode": mode,
                    "events": len(documents),
                    "cpu_ms_per_event": round(1000 * cpu / len(documents), 3),
                    "events_per_second": round(len(documents) / wall, 1),
                    "read_syscalls_per_event": round(reads / len(documents), 1),
                    "sqlalchemy_statements_per_event": {
                        kind: round(statements[kind] / count, 1) for kind, count in by_type.items()
                    },
                }
            )
        processing.PIPELINED_TRANSACTIONS, db_module.PING_AFTER_IDLE_SECONDS = MODES["as shipped"]
        db.dispose()

    best = {
        mode: min((r for r in results if r["mode"] == mode), key=lambda r: r["cpu_ms_per_event"])
        for mode in modes
    }
    print(json.dumps({"database": db.dialect, "rounds": results, "best": best}, indent=1))
    print()
    for mode, r in best.items():
        walls = sorted(x["events_per_second"] for x in results if x["mode"] == mode)
        print(
            f"{db.dialect} {mode}: {r['cpu_ms_per_event']:.2f} ms of CPU per event (lowest of 3 rounds), "
            f"{r['read_syscalls_per_event']:.1f} read syscalls per event, one thread "
            f"{walls[1]:.0f} events/s (median; {walls[0]:.0f}-{walls[-1]:.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

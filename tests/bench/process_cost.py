"""CPU per event of the actor's body alone: `processing.process_event` in this process, one thread.

No receiver, Redis or Dramatiq: the events of tests/bench/pipeline_events.py are stored straight into a
fresh database, then applied one by one, as the actor would. Three rounds of fresh events; the figure
is the lowest round's CPU per event (the least disturbed by other work on the machine), with the
statements SQLAlchemy itself executed per event (Prepared statements, models/prepared.py, bypass it).

Run from the repository root:
    .venv/bin/python tests/bench/process_cost.py [--events 600] [--database-url URL]
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
from tests.bench.pipeline_bench import _mix, store_directly  # noqa: E402
from worker.jobs import processing  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600, help="events per round (3 rounds)")
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/process_cost.db"
        db = Database(url)
        db.create_all()
        logging.disable(logging.CRITICAL)  # the actor logs one line per event; not measured here
        tag = f"pc{int(time.time())}"
        rounds = [_mix(f"{tag}r{n}", args.events).events for n in range(3)]
        store_directly(db, [document for documents in rounds for document in documents])

        statements: collections.Counter[str] = collections.Counter()
        current = [""]
        sqlalchemy_event.listen(
            db.engine, "before_cursor_execute", lambda *_args: statements.update([current[0]])
        )
        results = []
        for documents in rounds:
            statements.clear()
            by_type: collections.Counter[str] = collections.Counter()
            cpu_started, started = time.process_time(), time.perf_counter()
            for document in documents:
                current[0] = document["type"]
                by_type[document["type"]] += 1
                processing.process_event(db, document["id"], "", max_attempts=10)
            cpu = time.process_time() - cpu_started
            wall = time.perf_counter() - started
            results.append(
                {
                    "events": len(documents),
                    "cpu_ms_per_event": round(1000 * cpu / len(documents), 3),
                    "events_per_second": round(len(documents) / wall, 1),
                    "sqlalchemy_statements_per_event": {
                        kind: round(statements[kind] / count, 1) for kind, count in by_type.items()
                    },
                }
            )
        db.dispose()

    best = min(results, key=lambda r: r["cpu_ms_per_event"])
    print(json.dumps({"database": db.dialect, "rounds": results, "best": best}, indent=1))
    print(f"\n{db.dialect}: {best['cpu_ms_per_event']:.2f} ms of CPU per event (lowest of 3 rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

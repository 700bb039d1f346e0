"""Scale-out: events per second with 1, 2 and 4 worker processes on PostgreSQL, in the same run.

Everything on 127.0.0.1, started here and stopped here (also on Ctrl-C, SIGTERM or an error), with the
machinery of tests/bench/pipeline_bench.py: for each process count, a fresh database (`migrate`), N
signed events stored and enqueued by the real receiver over HTTP (the same mix: charge.succeeded for
distinct customers, refund.created + refund.updated for some), the receiver stopped, then
`python -m worker worker --processes P --threads T` drains them and every event must end `done`.

So that P processes start together, the queue is parked (renamed) while the worker starts, and put
back once every process has polled Redis (each registers in Dramatiq's heartbeat set). The figure for
a drain is its steady rate: messages per second between the moments 10% and 90% of them had been
taken off the queue (start-up and the last few in flight are left out); the full drain's rate is shown
beside it. `--rounds R` repeats the sequence 1, 2, 4 (interleaved, so a busy spell of the machine
touches every count alike); each count's figure is the median of its rounds, with the range, and the
ratio to the median with 1 process. CPU per event of the workers, the PostgreSQL server and the
whole machine are reported, with how busy the machine was: on this 2-core machine the processes share
two cores with PostgreSQL and Redis, and that is where it stops.

Run from the repository root:
    TEST_DATABASE_URL=$(scripts/postgres.sh) .venv/bin/python tests/bench/scaleout_bench.py [--json]
Exit status: 0 measured; 1 the run had errors; 2 it could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests`, `worker` and `models` importable
    sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from models.db import make_engine  # noqa: E402
from tests.bench.pipeline_bench import (  # noqa: E402
    POLL_SECONDS,
    Bench,
    BenchError,
    _admin,
    _bench_database,
    _healthy,
    _ints,
    _machine_cpu,
    _mix,
    _terminate,
    _tree_cpu,
    postmaster_of,
    say,
)
from tests.bench.pipeline_events import post_all  # noqa: E402
from tests.integration.stack import PYTHON, QUEUE_KEY, REDIS_SERVER, free_port, wait_until  # noqa: E402
from tests.stripe_fixtures import TEST_SECRET  # noqa: E402

PARKED_KEY = QUEUE_KEY + ".parked"
HEARTBEATS_KEY = "dramatiq:__heartbeats__"


def store(bench: Bench, database_url: str, tag: str) -> int:
    """Migrate a fresh database, post the events through the receiver; returns how many."""
    env = {**bench.env, "DATABASE_URL": database_url}
    bench.redis.flushdb()
    migrated = subprocess.run(
        [PYTHON, "-m", "worker", "migrate"], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=bench.remaining(120),
    )  # fmt: skip
    if migrated.returncode != 0:
        raise BenchError(f"migrate failed:\n{migrated.stderr[-3000:]}")
    mix = _mix(tag, bench.events)
    port = free_port()
    web = bench.spawn(
        f"web-{tag}", [PYTHON, "-m", "worker", "web", "--host", "127.0.0.1", "--port", str(port)], env
    )
    try:
        wait_until(lambda: _healthy(port), "the receiver to answer", timeout=bench.remaining(30), watch=[web])
        items = [(document["id"], json.dumps(document).encode()) for document in mix.events]
        posting = post_all("127.0.0.1", port, items, TEST_SECRET, concurrency=32)
        answers = asyncio.run(asyncio.wait_for(posting, timeout=bench.remaining(180)))
    finally:
        bench.stop(web)
    bad = [a for a in answers if a.status != 200 or a.duplicate is not False]
    if bad:
        raise BenchError(f"{len(bad)} webhooks not stored as new, e.g. {bad[:3]}")
    return len(mix.events)


def drain(bench: Bench, database_url: str, processes: int, n: int) -> dict:
    """Start P worker processes on a parked queue; release it when all poll; time the drain."""
    env = {**bench.env, "DATABASE_URL": database_url}
    if bench.redis.llen(QUEUE_KEY) != n:
        raise BenchError(f"{bench.redis.llen(QUEUE_KEY)} messages waiting, expected {n}")
    bench.redis.rename(QUEUE_KEY, PARKED_KEY)
    polling_before = set(bench.redis.zrange(HEARTBEATS_KEY, 0, -1))  # the receiver's, from enqueueing
    argv = [
        PYTHON, "-m", "worker", "worker", "--processes", str(processes), "--threads", str(bench.threads),
    ]  # fmt: skip
    worker = bench.spawn(f"worker-{processes}p", argv, env)
    try:
        wait_until(
            lambda: len(set(bench.redis.zrange(HEARTBEATS_KEY, 0, -1)) - polling_before) >= processes,
            f"{processes} worker processes to poll Redis",
            timeout=bench.remaining(60),
            watch=[worker],
        )
        deadline = time.monotonic() + bench.remaining(600)
        marks: dict[float, float] = {}
        machine_before, worker_before = _machine_cpu(), _tree_cpu(worker.pid)
        postgres_before = bench.postgres_cpu()
        started = time.monotonic()
        bench.redis.rename(PARKED_KEY, QUEUE_KEY)
        while left := bench.queue_left():
            now = time.monotonic()
            taken = n - bench.redis.llen(QUEUE_KEY)
            for share in (0.1, 0.9):
                if share not in marks and taken >= share * n:
                    marks[share] = now
            if not worker.alive():
                raise BenchError(f"the worker exited with {left} messages left\n{worker.tail()}")
            if now > deadline:
                raise BenchError(f"timed out with {left} messages left\n{worker.tail()}")
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
        worker_cpu = _tree_cpu(worker.pid) - worker_before
        postgres_cpu = bench.postgres_cpu() - postgres_before
        machine_cpu = _machine_cpu() - machine_before
    finally:
        bench.stop(worker)
    rejected = bench.redis.zcard("dramatiq:events.XQ")
    if rejected:
        raise BenchError(f"{rejected} messages were rejected (dead-lettered)")
    marks.setdefault(0.9, marks.get(0.1, started))
    steady = 0.8 * n / (marks[0.9] - marks[0.1]) if marks[0.9] > marks.get(0.1, 0) else n / seconds
    return {
        "processes": processes,
        "messages": n,
        "seconds": round(seconds, 3),
        "per_second": round(steady, 1),
        "full_drain_per_second": round(n / seconds, 1),
        "worker_cpu_ms_per_event": round(1000 * worker_cpu / n, 3),
        "postgres_cpu_ms_per_event": round(1000 * postgres_cpu / n, 3),
        "machine_cpu_ms_per_event": round(1000 * machine_cpu / n, 3),
        "machine_busy_cores": round(machine_cpu / seconds, 2),
    }


def check_done(database_url: str, n: int) -> dict:
    """Every event `done`; and what the database holds after them (bytes per event, tables and indexes,
    from a database that held nothing else: a first approximation of the disk a day of events takes)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT status, count(*) FROM events GROUP BY status").all()
            connection.exec_driver_sql("CHECKPOINT")
            size = connection.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
            largest = connection.exec_driver_sql(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC LIMIT 4"
            ).all()
    finally:
        engine.dispose()
    statuses = dict(rows)
    if statuses != {"done": n}:
        raise BenchError(f"events by status {statuses}, expected all {n} done")
    return {"database_bytes": size, "largest_tables_bytes": dict(largest)}


def redis_bytes_per_message(bench: Bench, count: int = 20_000) -> dict:
    """Redis memory a waiting `process_event` message takes: `count` enqueued as the receiver does
    (worker/jobs/broker.py `enqueue_many`; event ids of Stripe's length, 28 characters), on the bench's
    empty redis-server, `used_memory` before and after."""
    import dramatiq

    from worker.jobs.broker import EVENTS_QUEUE, broker, enqueue_many

    bench.redis.flushdb()

    def process_event(event_id: str, account: str = "") -> None:  # the real actor's name and queue
        return None

    actor = broker.actors.get("process_event") or dramatiq.actor(
        process_event, queue_name=EVENTS_QUEUE, broker=broker
    )
    before = bench.redis.info("memory")["used_memory"]
    ids = [(f"evt_1Q{i:022d}", "") for i in range(count)]
    for start in range(0, count, 500):
        enqueue_many(broker, actor, ids[start : start + 500])
    after = bench.redis.info("memory")["used_memory"]
    waiting = bench.redis.llen(QUEUE_KEY)
    bench.redis.flushdb()
    return {"messages": waiting, "bytes_per_message": round((after - before) / count)}


def _empty_size(base: str) -> int:
    url, admin = _bench_database(base)
    try:
        migrated = subprocess.run(
            [PYTHON, "-m", "worker", "migrate"], env={**os.environ, "DATABASE_URL": url}, cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if migrated.returncode != 0:
            raise BenchError(f"migrate failed:\n{migrated.stderr[-3000:]}")
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                return connection.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
        finally:
            engine.dispose()
    finally:
        with contextlib.suppress(Exception):
            _admin(admin, f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")


def run(args: argparse.Namespace, workdir: Path) -> dict:
    base = args.postgres_url or os.environ.get("TEST_DATABASE_URL")
    if not base:
        raise BenchError("pass --postgres-url or set TEST_DATABASE_URL ($(scripts/postgres.sh))")
    bench = Bench(workdir, events=args.events, threads=args.threads, deadline=time.monotonic() + args.timeout)
    os.environ.update({k: bench.env[k] for k in ("REDIS_URL", "BROKER", "LOG_FORMAT", "LOG_LEVEL")})
    report: dict = {
        "events": args.events,
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
        "drains": [],
    }
    url = admin = None
    try:
        bench.start_redis()
        report["redis"] = redis_bytes_per_message(bench)
        for round_ in range(args.rounds):
            for processes in args.processes:
                url, admin = _bench_database(base)
                bench.postmaster = bench.postmaster or postmaster_of(url)
                say(f"round {round_ + 1}, {processes} processes: storing {args.events} events, then draining")
                n = store(bench, url, f"so{round_}p{processes}")
                result = drain(bench, url, processes, n)
                report["database"] = check_done(url, n)
                result["round"] = round_ + 1
                report["drains"].append(result)
                say(
                    f"  {result['per_second']:.0f} events/s steady ({result['full_drain_per_second']:.0f} "
                    f"full drain), machine {result['machine_busy_cores']:.2f} cores busy"
                )
    finally:
        bench.stop_all()
        if admin is not None:
            with contextlib.suppress(Exception):
                _admin(admin, f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")
    summary = {}
    for processes in args.processes:
        drains = [d for d in report["drains"] if d["processes"] == processes]
        rates = sorted(d["per_second"] for d in drains)
        summary[processes] = {
            "median_per_second": statistics.median(rates),
            "range": [rates[0], rates[-1]],
            "full_drain_median": statistics.median(d["full_drain_per_second"] for d in drains),
            "worker_cpu_ms_per_event": statistics.median(d["worker_cpu_ms_per_event"] for d in drains),
            "postgres_cpu_ms_per_event": statistics.median(d["postgres_cpu_ms_per_event"] for d in drains),
            "machine_cpu_ms_per_event": statistics.median(d["machine_cpu_ms_per_event"] for d in drains),
            "machine_busy_cores": statistics.median(d["machine_busy_cores"] for d in drains),
        }
    one = summary[args.processes[0]]["median_per_second"]
    for figures in summary.values():
        figures["ratio_to_first"] = round(figures["median_per_second"] / one, 3)
    report["summary"] = summary
    if "database" in report:  # bytes per event, over an empty migrated database's own size
        empty = report.setdefault("empty_database_bytes", _empty_size(base))
        report["database"]["bytes_per_event"] = round(
            (report["database"]["database_bytes"] - empty) / args.events
        )
    command = [".venv/bin/python", "tests/bench/scaleout_bench.py", "--events", str(args.events)]
    command += ["--threads", str(args.threads), "--rounds", str(args.rounds)]
    command += ["--processes", ",".join(map(str, args.processes))]
    report["reproduce"] = "TEST_DATABASE_URL=$(scripts/postgres.sh) " + shlex.join(command)
    return report


def print_report(report: dict) -> None:
    machine = report["machine"]
    print(
        f"\nScale-out on PostgreSQL: {report['events']} events per drain, {report['threads']} threads per "
        f"process, {machine['cpus']} CPUs, load average before {machine['load_before'][0]:.2f}"
    )
    first = next(iter(report["summary"]))
    for processes, s in report["summary"].items():
        print(
            f"  {processes} process{'es' if processes > 1 else '  '}  {s['median_per_second']:7.1f} events/s "
            f"(median of rounds, {s['range'][0]:.0f}-{s['range'][1]:.0f}; full drain "
            f"{s['full_drain_median']:.0f})  x{s['ratio_to_first']:.2f} of {first}  CPU per event: "
            f"workers {s['worker_cpu_ms_per_event']:.2f} ms, "
            f"PostgreSQL {s['postgres_cpu_ms_per_event']:.2f}, machine {s['machine_cpu_ms_per_event']:.2f}; "
            f"machine busy {s['machine_busy_cores']:.2f} cores"
        )
    database = report.get("database")
    if database:
        print(
            f"  PostgreSQL: {database['bytes_per_event']} bytes per event stored (tables and indexes, "
            f"database size over an empty one); largest: "
            + ", ".join(f"{t} {b / 2**20:.1f} MB" for t, b in database["largest_tables_bytes"].items())
        )
    redis = report["redis"]
    print(
        f"  Redis: {redis['bytes_per_message']} bytes per waiting process_event message "
        f"({redis['messages']} enqueued as the receiver does)"
    )
    print(f"\nReproduce: {report['reproduce']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events per drain")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--processes", type=_ints, default=[1, 2, 4], help="process counts, e.g. 1,2,4")
    parser.add_argument("--rounds", type=int, default=3, help="times each process count is measured")
    parser.add_argument("--postgres-url", default=None, help="default: $TEST_DATABASE_URL")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    if REDIS_SERVER is None:
        say("redis-server is not installed")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    try:
        report = run(args, workdir)
    except BenchError as exc:
        say(f"scale-out bench failed: {exc}\n(logs kept in {workdir})")
        return 1
    except TimeoutError:
        say(f"scale-out bench failed: posting the events timed out (logs kept in {workdir})")
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:
        say(f"scale-out bench interrupted ({exc or 'Ctrl-C'}); everything it started is stopped")
        shutil.rmtree(workdir, ignore_errors=True)
        return 130
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

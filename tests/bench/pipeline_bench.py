"""End-to-end events per second per worker process, on SQLite and PostgreSQL, against the queue's ceiling.

Everything on 127.0.0.1, started here and stopped here (also on Ctrl-C, SIGTERM or an error):

  ceiling   N messages for a no-op actor (tests/bench/pipeline_events.py `noop_worker`: the same broker,
            queue, options and arguments as `process_event`) are enqueued on a fresh redis-server; then
            ONE dramatiq worker process with the same thread count drains them.
  pipeline  per backend, on a fresh database (`migrate`): the real receiver (`python -m worker web`)
            stores and enqueues N signed events over HTTP (charge.succeeded for distinct charges,
            refund.created + refund.updated for some of them: tests/bench/pipeline_events.py); the
            receiver is stopped; then ONE worker process (`python -m worker worker --processes 1
            --threads T`) drains them, and every event must end `done`.

`--threads 1,2,4,8` measures each thread count in turn, each with its own ceiling runs (a no-op drain
before the first backend and after each one; the ceiling is their median, so the ratio is always to a
ceiling measured in the same run with the same threads). `--backends` picks the databases.

`--stripe`: the realistic path. A local Stripe stand-in (`python -m stripe_standin`, empty) is
started and the receiver and worker get STRIPE_API_KEY and STRIPE_API_BASE pointing at it, so each
charge event takes the path it takes in production with a key: its claim committed first, its fetch
(`handlers.payments.fetch_charge_links`: database lookups, then GET /v1/invoice_payments for the
charge's payment intent, over HTTP) outside any transaction, then the writes. Without it no key is
set and the handlers fetch nothing (the lower bound of the work per event).

A drain is timed from the worker's first fetch (the queue's length first drops below N: worker start-up
is not counted) to the moment no message is left waiting, delayed or unacknowledged (polled every 2 ms).
Figures: events/s per worker process for each backend, the no-op ceiling, and their ratio (target
>= 0.5). The CPU the worker process used and the CPU the whole machine used during each drain are
shown: on a machine shared with other work the figures are lower, and the report says how busy it was.

--profile then applies a further batch of stored events in this process, one at a time, under cProfile
(the same `processing.process_event` the actor calls, without Dramatiq), and prints where the time goes.

PostgreSQL: pass --postgres-url or set TEST_DATABASE_URL (`scripts/postgres.sh` starts a throwaway server
and prints one); the bench uses a database of its own, `<name>_pipeline_bench`, and drops it afterwards.
Without either, only SQLite is measured.

Run from the repository root:
    TEST_DATABASE_URL=$(scripts/postgres.sh) .venv/bin/python tests/bench/pipeline_bench.py [--json]
Exit status: 0 measured; 1 the run had errors (non-200 answers, events not done, a timeout); 2 it could
not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import platform
import pstats
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests`, `worker` and `models` importable
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from models.db import make_engine, normalise_url  # noqa: E402
from tests.bench.pipeline_events import build_mix, noop_worker, post_all  # noqa: E402
from tests.integration.stack import (  # noqa: E402
    DEAD_LETTER_KEY,
    DELAY_QUEUE_KEY,
    MESSAGE_HASHES,
    PYTHON,
    QUEUE_KEY,
    REDIS_SERVER,
    ManagedProcess,
    Stack,
    free_port,
    wait_until,
)
from tests.stripe_fixtures import TEST_SECRET  # noqa: E402

MSGS_KEY = MESSAGE_HASHES[0]  # "dramatiq:events.msgs": a message stays here until it is acknowledged
POLL_SECONDS = 0.002
SEED = 20261128


class BenchError(Exception):
    """The run cannot give a valid figure (exit status 1)."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _terminate(signum, _frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


# --- CPU accounting (Linux /proc) ---------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    return 0.0


def _tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (the dramatiq CLI forks its worker processes)."""
    total = _process_cpu(pid)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _tree_cpu(int(child))
    return total


def postmaster_of(database_url: str) -> int | None:
    """The pid of the local PostgreSQL server behind `database_url` (the parent of this connection's
    backend): its process tree is what that server spends, apart from any other server on the machine."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with contextlib.suppress(OSError, IndexError, ValueError):
                return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    finally:
        engine.dispose()
    return None


def _machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (all cores, not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


# --- the bench ----------------------------------------------------------------------------------------


class Bench:
    def __init__(
        self, workdir: Path, *, events: int, threads: int, deadline: float, processes: int = 1
    ) -> None:
        self.workdir = workdir
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir()
        self.events = events
        self.threads = threads
        self.worker_processes = processes
        self.deadline = deadline
        self.processes: list[ManagedProcess] = []
        self.redis_port = free_port()
        self.redis = redis.Redis(port=self.redis_port, socket_timeout=5, socket_connect_timeout=1)
        self.env = Stack.base_env(
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            BROKER="redis",
            STRIPE_WEBHOOK_SECRET=TEST_SECRET,
            # No STRIPE_API_KEY: the handlers fetch nothing. A closed loopback port, in case one tried.
            STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
        )
        self.runs = 0
        self.postmaster: int | None = None

    def remaining(self, cap: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError("out of time (--timeout)")
        return min(cap, left)

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, env=env, cwd=REPO_ROOT, log_dir=self.log_dir)
        self.processes.append(process)
        return process

    def stop(self, process: ManagedProcess) -> None:
        process.stop()
        self.processes.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes.clear()

    def postgres_cpu(self) -> float:
        """CPU seconds of the bench's PostgreSQL server (0 when the bench has none)."""
        return _tree_cpu(self.postmaster) if self.postmaster else 0.0

    def start_standin(self) -> None:
        """An empty local Stripe stand-in; the receiver and worker get a key and its address."""
        port = free_port()
        argv = [PYTHON, "-m", "stripe_standin", "--host", "127.0.0.1", "--port", str(port)]
        process = self.spawn("stripe-standin", argv, self.env)
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{port}/v1/charges?limit=1"),
            "the Stripe stand-in to answer",
            timeout=self.remaining(30),
            watch=[process],
        )
        self.env.update(STRIPE_API_KEY="sk_test_pipeline_bench", STRIPE_API_BASE=f"http://127.0.0.1:{port}")

    def start_redis(self) -> None:
        assert REDIS_SERVER is not None
        argv = [
            REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", str(self.workdir),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning",
        ]  # fmt: skip
        process = self.spawn("redis", argv, self.env)
        self.redis_pid = process.pid

        def answers() -> bool:
            with contextlib.suppress(redis.RedisError):
                return bool(self.redis.ping())
            return False

        wait_until(answers, "redis-server to answer", timeout=self.remaining(30), watch=[process])

    def queue_left(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(QUEUE_KEY).llen(DELAY_QUEUE_KEY)
        for name in MESSAGE_HASHES[:2]:
            pipe.hlen(name)
        return sum(pipe.execute())

    def drain(self, name: str, argv: list[str], env: dict[str, str], n: int) -> dict:
        """Start one worker process on a queue holding `n` messages; time it from first fetch to empty."""
        waiting = self.redis.llen(QUEUE_KEY)
        if waiting != n:
            raise BenchError(f"{name}: {waiting} messages waiting in the queue, expected {n}")
        worker = self.spawn(name, argv, env)
        timeout = self.remaining(600)
        deadline = time.monotonic() + timeout
        try:

            def check(what: str) -> None:
                if not worker.alive():
                    raise BenchError(f"{name} exited while {what}\n{worker.tail()}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{name}: timed out after {timeout:.0f}s while {what}\n{worker.tail()}")

            while self.redis.llen(QUEUE_KEY) >= n:
                check("starting (no message fetched yet)")
                time.sleep(POLL_SECONDS)
            started = time.monotonic()
            machine_before, worker_before = _machine_cpu(), _tree_cpu(worker.pid)
            postgres_before, redis_before = self.postgres_cpu(), _tree_cpu(self.redis_pid)
            while self.queue_left():
                check(f"draining ({self.queue_left()} messages left)")
                time.sleep(POLL_SECONDS)
            seconds = time.monotonic() - started
            worker_cpu = _tree_cpu(worker.pid) - worker_before
            machine_cpu = _machine_cpu() - machine_before
            postgres_cpu = self.postgres_cpu() - postgres_before
            redis_cpu = _tree_cpu(self.redis_pid) - redis_before
        finally:
            self.stop(worker)
        rejected = self.redis.zcard(DEAD_LETTER_KEY)
        if rejected:
            raise BenchError(f"{name}: {rejected} messages were rejected (dead-lettered)")
        return {
            "messages": n,
            "seconds": round(seconds, 3),
            "per_second": round(n / seconds, 1),
            "worker_cpu_seconds": round(worker_cpu, 2),
            "worker_cpu_ms_per_message": round(1000 * worker_cpu / n, 3),
            "postgres_cpu_ms_per_message": round(1000 * postgres_cpu / n, 3),
            "redis_cpu_ms_per_message": round(1000 * redis_cpu / n, 3),
            "machine_cpu_ms_per_message": round(1000 * machine_cpu / n, 3),
            "machine_cpu_seconds": round(machine_cpu, 2),
            "machine_busy_cores": round(machine_cpu / seconds, 2),
        }

    # --- the ceiling ----------------------------------------------------------------------------------

    def noop_ceiling(self) -> dict:
        from worker.jobs.broker import enqueue_many

        self.redis.flushdb()
        actor = noop_worker()
        keys = [(f"evt_noop{i:07d}", "") for i in range(self.events)]
        for start in range(0, len(keys), 500):
            enqueue_many(actor.broker, actor, keys[start : start + 500])
        argv = [
            PYTHON, "-m", "dramatiq", "tests.bench.pipeline_events:noop_worker",
            "--processes", "1", "--threads", str(self.threads),
        ]  # fmt: skip
        self.runs += 1
        return self.drain(f"noop-worker-{self.runs}", argv, self.env, self.events)

    # --- the real pipeline ----------------------------------------------------------------------------

    def pipeline(self, backend: str, database_url: str, *, profile_events: int) -> dict:
        env = {**self.env, "DATABASE_URL": database_url}
        self.redis.flushdb()
        migrated = subprocess.run(
            [PYTHON, "-m", "worker", "migrate"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=self.remaining(120),
        )
        if migrated.returncode != 0:
            raise BenchError(f"{backend}: migrate failed:\n{migrated.stderr[-3000:]}")

        mix = _mix(f"b{backend[:2]}", self.events)
        web_port = free_port()
        web = self.spawn(
            f"web-{backend}",
            [PYTHON, "-m", "worker", "web", "--host", "127.0.0.1", "--port", str(web_port)],
            env,
        )
        try:
            wait_until(
                lambda: _healthy(web_port), "the receiver to answer", timeout=self.remaining(30), watch=[web]
            )
            items = [(document["id"], json.dumps(document).encode()) for document in mix.events]
            posting = post_all("127.0.0.1", web_port, items, TEST_SECRET, concurrency=32)
            answers = asyncio.run(asyncio.wait_for(posting, timeout=self.remaining(180)))
        finally:
            self.stop(web)
        bad = [a for a in answers if a.status != 200 or a.duplicate is not False]
        if bad:
            raise BenchError(f"{backend}: {len(bad)} webhooks not stored as new, e.g. {bad[:3]}")

        n = len(mix.events)
        argv = [
            PYTHON, "-m", "worker", "worker",
            "--processes", str(self.worker_processes), "--threads", str(self.threads),
        ]  # fmt: skip
        result = self.drain(f"worker-{backend}", argv, env, n)

        engine = make_engine(database_url)
        try:
            with engine.connect() as connection:
                rows = connection.exec_driver_sql("SELECT status, count(*) FROM events GROUP BY status").all()
                statuses = {status: count for status, count in rows}
                retried = connection.exec_driver_sql(
                    "SELECT count(*) FROM events WHERE attempts > 1"
                ).scalar()
        finally:
            engine.dispose()
        if statuses != {"done": n}:
            raise BenchError(f"{backend}: events by status {statuses}, expected all {n} done")
        result.update(backend=backend, events_by_status=statuses, events_retried=retried)
        if profile_events:
            result["profile"] = profile_in_process(
                database_url, profile_events, self.log_dir / f"{backend}.log"
            )
        return result


def _mix(run: str, events: int):
    """Exactly `events` events in a shuffled order (fixed seed), as they might arrive: charges c, one full
    refund for c/5 of them and two partial ones for c/40 (about 1.5 c events; the surplus is cut from
    the charges nothing refunds, which come last)."""
    charges = max(1, math.ceil(events / 1.4))
    mix = build_mix(
        run, charges=charges, single_refunds=charges // 5, double_refunds=charges // 40, unknown=0
    )
    del mix.events[events:]
    random.Random(SEED).shuffle(mix.events)
    return mix


def _healthy(port: int) -> bool:
    return _answers(f"http://127.0.0.1:{port}/healthz")


def _answers(url: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": "Bearer sk_test_pipeline_bench"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


# --- where the time goes: the actor's body in this process, under cProfile ----------------------------

_GROUPS = (
    ("database driver (sqlite3 / psycopg, incl. waits)", ("sqlite3", "psycopg")),
    ("SQLAlchemy + SQLModel (ORM, Core, pool)", ("sqlalchemy", "sqlmodel")),
    ("handlers/ (incl. the sales view)", ("/handlers/",)),
    ("worker/ + models/ (processing, logging set-up)", ("/worker/", "/models/")),
    ("logging + json", ("logging", "json")),
)


# Cumulative time per event in these (path suffix, function): which step of an event costs what.
_STEPS = (
    ("worker/jobs/processing.py", "process_event", "the whole event (claim, handler, done mark)"),
    ("handlers/customers.py", "refresh_customers", "refresh the customer's notes and alerts"),
    ("handlers/sales_view.py", "load_customer_facts", "  of which: read the customer's payments"),
    ("handlers/customers.py", "_write_note", "  of which: write refund notes"),
    ("handlers/customers.py", "emails_for_charges", "find the customers of the charges"),
    ("models/db.py", "upsert_many", "upsert the charge or refund"),
    ("sqlalchemy/orm/session.py", "commit", "commit"),
    ("worker/jobs/processing.py", "_claim", "claim the event row"),
)


def store_directly(db, documents: list[dict]) -> None:
    """Store events `received`, as the receiver would, without HTTP: for measuring the actor alone."""
    from datetime import UTC, datetime

    from models import Event

    now = datetime.now(UTC)
    with db.session() as session:
        for document in documents:
            session.add(
                Event(
                    id=document["id"],
                    type=document["type"],
                    api_version=document["api_version"],
                    created=datetime.fromtimestamp(document["created"], UTC),
                    payload=json.dumps(document),
                    status="received",
                    received_at=now,
                    updated_at=now,
                )
            )


def profile_in_process(database_url: str, count: int, log_path: Path) -> dict:
    """Store `count` more events and apply them one by one with `processing.process_event`, profiled."""
    import logging

    from models import Database
    from worker.jobs import processing
    from worker.ops.logs import configure_logging

    configure_logging("INFO", "json")  # as the worker does, but into a file
    handler = logging.getLogger().handlers[0]
    log_file = open(log_path, "a")  # noqa: SIM115 (closed below)
    handler.setStream(log_file)

    db = Database(database_url)
    mix = _mix("pf", count)
    try:
        store_directly(db, mix.events)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for document in mix.events:
            processing.process_event(db, document["id"], "", max_attempts=10)
        profiler.disable()
        seconds = time.perf_counter() - started
    finally:
        db.dispose()
        handler.setStream(sys.stderr)
        log_file.close()

    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())  # tottime of every function
    groups = dict.fromkeys([name for name, _ in _GROUPS] + ["other"], 0.0)
    for (filename, _line, function), entry in stats.stats.items():
        where = f"{filename} {function}"
        name = next((name for name, marks in _GROUPS if any(m in where for m in marks)), "other")
        groups[name] += entry[2]
    steps = {}
    for suffix, function, label in _STEPS:
        cumulative = sum(
            entry[3] for (filename, _line, name), entry in stats.stats.items()
            if name == function and filename.endswith(suffix)
        )  # fmt: skip
        steps[label] = round(1000 * cumulative / len(mix.events), 2)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
    top = [line for line in text.getvalue().splitlines() if line.strip()][-19:]
    return {
        "events": len(mix.events),
        "seconds": round(seconds, 3),
        "per_second_one_thread": round(len(mix.events) / seconds, 1),
        "ms_per_event": round(1000 * seconds / len(mix.events), 2),
        "ms_per_event_in": steps,
        "share_of_time": {name: round(value / total, 3) for name, value in groups.items()},
        "top_cumulative": top,
    }


# --- the run ------------------------------------------------------------------------------------------


def _bench_database(base: str) -> tuple[str, object]:
    url = make_url(normalise_url(base))
    name = f"{url.database}_pipeline_bench"
    admin = make_url(url.set(database="postgres").render_as_string(hide_password=False))
    _admin(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    return url.set(database=name).render_as_string(hide_password=False), admin


def _admin(admin_url, *statements: str) -> None:
    engine = make_engine(admin_url.render_as_string(hide_password=False))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def run(args: argparse.Namespace, workdir: Path) -> dict:
    postgres_url = args.postgres_url or os.environ.get("TEST_DATABASE_URL")
    backends = args.backends or (["sqlite", "postgresql"] if postgres_url else ["sqlite"])
    if "postgresql" in backends and not postgres_url:
        raise BenchError("postgresql: pass --postgres-url or set TEST_DATABASE_URL ($(scripts/postgres.sh))")
    deadline = time.monotonic() + args.timeout
    bench = Bench(workdir, events=args.events, threads=args.threads[0], deadline=deadline)
    if args.unpipelined:
        bench.env["WORKER_PIPELINED_TRANSACTIONS"] = "0"
    # The no-op actor is declared in this process too (to enqueue for it): on this Redis.
    os.environ.update({k: bench.env[k] for k in ("REDIS_URL", "BROKER", "LOG_FORMAT", "LOG_LEVEL")})
    pg_admin = pg_url = None
    report: dict = {
        "events": args.events,
        "stripe": args.stripe,
        "unpipelined": args.unpipelined,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": os.getloadavg(),
        },
        "by_threads": [],
        "workdir": str(workdir),
    }
    if "sqlite" not in backends:
        say("SQLite skipped (--backends)")
    try:
        bench.start_redis()
        if args.stripe:
            bench.start_standin()
        plan = []
        if "sqlite" in backends:
            plan.append(("sqlite", None))
        if "postgresql" in backends:
            pg_url, pg_admin = _bench_database(postgres_url)
            plan.append(("postgresql", pg_url))
            bench.postmaster = postmaster_of(pg_url)
        for threads in args.threads:
            bench.threads = threads
            part: dict = {"threads": threads, "noop_runs": [], "backends": {}}
            report["by_threads"].append(part)
            say(f"{threads} threads: no-op ceiling, run 1: {args.events} messages")
            part["noop_runs"].append(bench.noop_ceiling())
            for backend, url in plan:
                if backend == "sqlite":
                    url = f"sqlite:///{workdir / f'bench-{threads}.db'}"
                say(f"{threads} threads, {backend}: storing {args.events} events over HTTP, then one worker "
                    "process drains them")  # fmt: skip
                part["backends"][backend] = bench.pipeline(backend, url, profile_events=args.profile)
                if backend == "postgresql":  # a fresh database for the next thread count
                    pg_url, pg_admin = _bench_database(postgres_url)
                    plan[-1] = (backend, pg_url)
                say(f"{threads} threads: no-op ceiling, run {len(part['noop_runs']) + 1}")
                part["noop_runs"].append(bench.noop_ceiling())
            ceiling = statistics.median(r["per_second"] for r in part["noop_runs"])
            part["noop_ceiling_per_second"] = ceiling
            for result in part["backends"].values():
                result["ratio_to_noop"] = round(result["per_second"] / ceiling, 4)
    finally:
        bench.stop_all()
        if pg_admin is not None:
            with contextlib.suppress(Exception):
                _admin(pg_admin, f"DROP DATABASE IF EXISTS {make_url(pg_url).database} WITH (FORCE)")
    command = [".venv/bin/python", "tests/bench/pipeline_bench.py", "--events", str(args.events)]
    command += ["--threads", ",".join(map(str, args.threads))]
    if args.backends:
        command += ["--backends", ",".join(args.backends)]
    command += ["--stripe"] if args.stripe else []
    command += ["--unpipelined"] if args.unpipelined else []
    command += ["--profile", str(args.profile)] if args.profile else []
    prefix = "TEST_DATABASE_URL=$(scripts/postgres.sh) " if "postgresql" in backends else ""
    report["reproduce"] = prefix + shlex.join(command)
    return report


def print_report(report: dict) -> None:
    path = "with STRIPE_API_KEY against the local stand-in" if report["stripe"] else "no Stripe key"
    print(
        f"\nPipeline throughput per worker process: {report['events']} events, {path}, "
        f"{report['machine']['cpus']} CPUs, load average before {report['machine']['load_before'][0]:.2f}"
    )
    for part in report["by_threads"]:
        ceiling = part["noop_ceiling_per_second"]
        runs = ", ".join(f"{r['per_second']:.0f}" for r in part["noop_runs"])
        print(f"  1 process x {part['threads']} threads")
        print(f"    no-op ceiling       {ceiling:8.0f} messages/s  (median of runs: {runs})")
        for name, r in part["backends"].items():
            print(
                f"    {name:<19} {r['per_second']:8.1f} events/s    "
                f"ratio {r['ratio_to_noop']:.3f} (target >= 0.5)  {r['seconds']:.1f}s; "
                f"worker CPU {r['worker_cpu_ms_per_message']:.2f} ms/event; "
                f"machine busy {r['machine_busy_cores']:.2f} of {report['machine']['cpus']} cores"
            )
            print(
                f"{'':29}CPU per event: machine {r['machine_cpu_ms_per_message']:.2f} ms = worker "
                f"{r['worker_cpu_ms_per_message']:.2f} + PostgreSQL {r['postgres_cpu_ms_per_message']:.2f} "
                f"+ Redis {r['redis_cpu_ms_per_message']:.2f} + the rest"
            )
    for part in report["by_threads"][:1]:
        for name, r in part["backends"].items():
            profile = r.get("profile")
            if not profile:
                continue
            print(
                f"\n  {name}: in-process, one thread, no Dramatiq: "
                f"{profile['per_second_one_thread']:.1f} events/s "
                f"({profile['ms_per_event']:.1f} ms/event under cProfile); share of profiled time:"
            )
            for group, share in profile["share_of_time"].items():
                print(f"    {share:6.1%}  {group}")
            print("  milliseconds per event spent in (cumulative, under cProfile):")
            for label, ms in profile["ms_per_event_in"].items():
                print(f"    {ms:6.2f}  {label}")
            print("\n".join("    " + line for line in profile["top_cumulative"]))
    print(f"\nReproduce: {report['reproduce']}")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events (and no-op messages) per run")
    parser.add_argument(
        "--threads", type=_ints, default=[4], help="threads of the one worker process; a list: 1,2,4,8"
    )
    parser.add_argument(
        "--backends",
        type=lambda text: [b.strip() for b in text.split(",") if b.strip()],
        default=None,
        help="sqlite,postgresql (default: both when a PostgreSQL URL is given, else sqlite)",
    )
    parser.add_argument(
        "--stripe", action="store_true", help="STRIPE_API_KEY set, against a local Stripe stand-in"
    )
    parser.add_argument(
        "--unpipelined",
        action="store_true",
        help="the worker's PostgreSQL transactions one statement at a time (to compare)",
    )
    parser.add_argument("--postgres-url", default=None, help="default: $TEST_DATABASE_URL")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="profile N more events in-process"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, SQLite file)")
    args = parser.parse_args(argv)
    if REDIS_SERVER is None:
        say("redis-server is not installed")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        report = run(args, workdir)
    except BenchError as exc:
        say(f"pipeline bench failed: {exc}\n(logs kept in {workdir})")
        return 1
    except TimeoutError:
        say(f"pipeline bench failed: posting the events timed out (logs kept in {workdir})")
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:
        say(f"pipeline bench interrupted ({exc or 'Ctrl-C'}); everything it started is stopped")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        return 130
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        del report["workdir"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

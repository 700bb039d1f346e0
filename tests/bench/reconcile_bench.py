"""Throughput, API calls and peak memory of the nightly reconciliation, against the pipe's ceiling.

The lists it pages, their order, params and expansions are handlers/reconcile.py `RESOURCES`, read from
there and printed with the figures (one row per list); nothing here or in the baseline names a list, so
neither can drift from the worker again.

For each size N (default 10,000 and 100,000 charges) and each database backend, one run:
  1. starts the Stripe stand-in as its own process on a free 127.0.0.1 port
     (`python -m stripe_standin --generate N --random-seed 7`), so the worker's memory is measured alone;
     the generator makes no disputes, so that list is one empty page;
  2. pages the same lists with a bare httpx client in another process
     (tests/bench/reconcile_baseline.py, handed RESOURCES with --lists): the baseline, what HTTP + JSON
     against this stand-in allow;
  3. runs `python -m worker migrate`, then the real `python -m worker reconcile --since 2000-01-01
     --until 2100-01-01 --json` on a fresh database (a SQLite file, or a PostgreSQL database of its own),
     in its own process: wall time, CPU time, peak RSS (the child's own rusage from wait4), its RSS over
     time and the stand-in's request counts over time (to split the run into listing and report phases);
  4. runs the same window again (idempotency: must add 0), then an empty window (the fixed cost: start-up,
     imports, one empty list call per list, the report over no rows);
  5. with --profile, runs it once more under cProfile on a fresh database and splits the time into
     JSON decoding, HTTP, extracting facts, upserts, commits and the report's SQL.
Then it prints the report (or --json) and stops every process it started, also on an error or Ctrl-C.

Targets (from the issue): API calls <= ceil(N_list/100) + 1 for each list (N_list: the objects of that
list in the window; the +1 is a final page, or the one empty page of an empty list), so at most the sum of
those over the lists, all for the one (platform) account the benchmark lists; peak RSS flat as N grows;
>= 5,000 charges/s.

PostgreSQL: pass --postgres-url or set TEST_DATABASE_URL (`scripts/postgres.sh` starts a throwaway server
and prints one); the bench then measures PostgreSQL after SQLite (--backends picks), on a database of its
own, `<name>_reconcile_bench`, made afresh for each run and dropped afterwards.

Run from the repository root:
    .venv/bin/python tests/bench/reconcile_bench.py                    # SQLite: ~2 minutes on 2 quiet cores
    .venv/bin/python tests/bench/reconcile_bench.py --sizes 10000 --json
    .venv/bin/python tests/bench/reconcile_bench.py --profile          # + where the time goes
    # SQLite, then PostgreSQL (~6.5 minutes on 2 quiet cores):
    TEST_DATABASE_URL=$(scripts/postgres.sh) .venv/bin/python tests/bench/reconcile_bench.py
Exit status: 0 measured cleanly; 1 the run had errors (a failed run, counts that disagree, a second run
that added rows); 2 it could not start; 3 with --check-targets, a target was missed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import pstats
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `worker` importable
    sys.path.insert(0, str(REPO_ROOT))

# Only light imports here: a measured child's ru_maxrss starts at this process's RSS when it is spawned
# (vfork + exec on Linux), so importing the worker here (SQLAlchemy, the models: ~60 MB against ~35 MB)
# would show up as the baseline's peak RSS. What needs the worker's code runs in a child of its own.
from tests.bench.reconcile_baseline import PAGE, list_query  # noqa: E402  (no httpx until it pages)
from worker.settings import Settings  # noqa: E402

HOST = "127.0.0.1"  # every socket this benchmark opens or points a child at is on loopback
BASELINE_SCRIPT = Path(__file__).resolve().parent / "reconcile_baseline.py"
RANDOM_SEED = 7
SINCE, UNTIL = "2000-01-01", "2100-01-01"  # wider than anything the generator makes: every object listed
EMPTY_SINCE, EMPTY_UNTIL = "2099-01-01", "2099-01-02"  # nothing in it: what a run costs before any object
API_KEY = "sk_test_bench_reconcile"
BACKENDS = ("sqlite", "postgresql")

TARGET_CHARGES_PER_S = 5_000
# "Flat": ten times the charges may cost at most 10% more peak RSS. Python, SQLAlchemy and the Stripe
# SDK alone take ~70 MB, so anything that holds O(N) objects shows up well above this.
TARGET_MEMORY_RATIO = 1.10
FOREIGN_CPU_WARN_PCT = 15.0  # other processes using more than this share of a core make timings suspect
SAMPLE_EVERY_S = 0.05  # RSS of the measured child; cheap (/proc read)
POLL_STANDIN_EVERY_S = 0.1  # the stand-in's request counts: when the listing ends and the report starts


def say(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report (or the JSON document)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class SetupError(Exception):
    """Something the benchmark needs is missing or would not start (exit status 2)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP, handled like Ctrl-C: stop the children, exit 130."""


def _raise_interrupted(signum, _frame) -> None:
    raise Interrupted(f"signal {signum}")


# --- HTTP to the stand-in (loopback only, never through a proxy) ------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def admin(port: int, method: str, path: str, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", method=method)
    with _OPENER.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def api_get(port: int, path: str, timeout: float = 30.0) -> None:
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with _OPENER.open(request, timeout=timeout) as response:
        response.read()


def v1_counts(snapshot: dict) -> dict[str, int]:
    return {key: n for key, n in snapshot.get("by_path", {}).items() if " /v1/" in key}


# --- processes -------------------------------------------------------------------------------------------


class Processes:
    """Every process the benchmark starts, so that all of them are stopped whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = open(self.workdir / f"{name}.out", "wb")  # noqa: SIM115 (the child holds it; closed below)
        err = open(self.workdir / f"{name}.err", "wb")  # noqa: SIM115
        # A new session: Ctrl-C in the terminal reaches only this script, which then stops the children
        # itself instead of leaving a stand-in holding a port.
        try:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        finally:
            out.close()
            err.close()
        self.running[name] = proc
        return proc

    def forget(self, name: str) -> None:
        self.running.pop(name, None)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.running.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # by its pid only: it is our child
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            with contextlib.suppress(Exception):
                self.stop(name)

    def output(self, name: str) -> str:
        return (self.workdir / f"{name}.out").read_text(errors="replace")

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.err"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def python_executable() -> str:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def clean_env() -> dict[str, str]:
    """This environment minus every worker setting, so only what the benchmark sets applies."""
    env = dict(os.environ)
    names = {n.upper() for n in Settings.model_fields}
    for key in list(env):
        if key.upper() in names:
            del env[key]
    # httpx honours *_PROXY variables; the stand-in must be reached directly on loopback.
    env["NO_PROXY"] = env["no_proxy"] = f"{HOST},localhost"
    return env


def _cpu_ticks_by_pid() -> dict[int, int]:
    ticks: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            fields = data[data.rindex(b")") + 2 :].split()
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return ticks


def _rss_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a live process in KiB; None once it is gone or off Linux."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith((b"VmRSS:", b"VmHWM:")):
            values[line[:5]] = int(line.split()[1])
    if len(values) < 2:
        return None
    return values[b"VmRSS"], values[b"VmHWM"]


@dataclass
class Measured:
    """One measured child process."""

    name: str
    exit_code: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    # (seconds since start, RSS MiB, peak-so-far MiB, stand-in /v1 requests so far or -1)
    samples: list[tuple[float, float, float, int]] = field(default_factory=list)
    other_cpu_pct: float | None = None  # other processes on the machine, % of one core, during the run


def run_measured(
    procs: Processes,
    name: str,
    argv: list[str],
    env: dict[str, str],
    *,
    deadline_s: float,
    standin_port: int | None = None,
    ours: set[int] = frozenset(),
) -> Measured:
    """Run a child to completion (or kill it at the deadline), with its own rusage from wait4.

    wait4 gives this child's peak RSS and CPU alone; RUSAGE_CHILDREN would mix in the stand-in's.
    """
    ticks_before = _cpu_ticks_by_pid()
    began = time.monotonic()
    proc = procs.start(name, argv, env)
    samples: list[tuple[float, float, float, int]] = []
    requests, next_poll = -1, 0.0
    deadline = began + deadline_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        now = time.monotonic()
        if pid:
            break
        if now > deadline:
            procs.stop(name)
            raise SetupError(f"{name} did not finish within {deadline_s:.0f} s (killed):\n{procs.tail(name)}")
        if standin_port is not None and now >= next_poll:
            next_poll = now + POLL_STANDIN_EVERY_S
            with contextlib.suppress(OSError, ValueError):
                requests = sum(v1_counts(admin(standin_port, "GET", "/_standin/requests", 1.0)).values())
        rss = _rss_kb(proc.pid)
        if rss is not None:
            samples.append((now - began, rss[0] / 1024, rss[1] / 1024, requests))
        time.sleep(SAMPLE_EVERY_S)
    wall = now - began
    ticks_after = _cpu_ticks_by_pid()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait for it
    procs.forget(name)
    other = None
    if ticks_after:
        skip = {os.getpid(), proc.pid, *ours}
        hz = os.sysconf("SC_CLK_TCK")
        used = sum(t - ticks_before.get(p, 0) for p, t in ticks_after.items() if p not in skip)
        other = round(100.0 * used / hz / max(wall, 1e-9), 1)
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return Measured(
        name=name,
        exit_code=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak,
        stdout=procs.output(name),
        samples=samples,
        other_cpu_pct=other,
    )


# --- one size ---------------------------------------------------------------------------------------------


def start_standin(procs: Processes, n: int, env: dict[str, str], timeout: float) -> tuple[int, dict]:
    """The stand-in with N generated charges on a free port; its object counts once it answers."""
    for _attempt in range(3):  # the free port may be taken between our probe and its bind: try another
        port = free_port()
        argv = [
            python_executable(),
            "-m",
            "stripe_standin",
            "--port",
            str(port),
            "--generate",
            str(n),
            "--random-seed",
            str(RANDOM_SEED),
        ]
        proc = procs.start(f"standin-{n}", argv, env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(OSError, ValueError):
                return port, admin(port, "GET", "/_standin/store", 2.0)
            time.sleep(0.2)
        else:
            procs.stop(f"standin-{n}")
            raise SetupError(
                f"the stand-in did not answer within {timeout:.0f} s:\n{procs.tail(f'standin-{n}')}"
            )
        log = procs.tail(f"standin-{n}")
        procs.forget(f"standin-{n}")
        if "address already in use" not in log.lower():
            raise SetupError(f"the stand-in exited during start-up:\n{log}")
    raise SetupError("no free port for the stand-in after 3 attempts")


# --- databases --------------------------------------------------------------------------------------------


# What the benchmark asks PostgreSQL, run in a child with the worker's own engine (see the imports).
_SQL_CHILD = """
import json, sys
from models.db import make_engine
engine = make_engine(sys.argv[1])
answers = []
try:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for statement in sys.argv[2:]:
            result = connection.exec_driver_sql(statement)
            answers.append(result.scalar() if result.returns_rows else None)
finally:
    engine.dispose()
print(json.dumps(answers))
"""


def sql(url: str, *statements: str) -> list[Any]:
    """Run statements on a database (autocommit) in a child process; the first column of each answer."""
    done = subprocess.run(
        [python_executable(), "-c", _SQL_CHILD, url, *statements],
        cwd=REPO_ROOT,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SetupError(f"{'; '.join(statements)} failed:\n{done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout)


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(path=f"/{name}").geturl()


class Databases:
    """A fresh database for each measured run: a SQLite file in the work directory, or a PostgreSQL database
    of the benchmark's own (`<name>_reconcile_bench`, next to TEST_DATABASE_URL's), dropped at the end."""

    def __init__(self, workdir: Path, postgres_url: str | None) -> None:
        self.workdir = workdir
        self.pg_url = self.pg_admin = self.pg_name = None
        if postgres_url:
            parts = urllib.parse.urlsplit(postgres_url)
            self.pg_name = f"{parts.path.lstrip('/') or 'postgres'}_reconcile_bench"
            self.pg_url = with_database(postgres_url, self.pg_name)
            self.pg_admin = with_database(postgres_url, "postgres")

    def fresh(self, backend: str, tag: str) -> str:
        """The URL of an empty database (no tables yet: `migrate` makes them)."""
        if backend == "sqlite":
            path = self.workdir / f"recon_{tag}.db"
            for old in self.workdir.glob(f"{path.name}*"):
                old.unlink()
            return f"sqlite:///{path}"
        if self.pg_url is None:
            raise SetupError("PostgreSQL asked for: pass --postgres-url or set TEST_DATABASE_URL")
        name = self.pg_name
        sql(self.pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        return self.pg_url

    def size_mb(self, url: str) -> float | None:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            return round(sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*")) / 2**20, 1)
        try:
            (size,) = sql(url, "SELECT pg_database_size(current_database())")
        except SetupError:
            return None
        return round(size / 2**20, 1)

    def drop_all(self) -> None:
        if self.pg_url is not None:
            with contextlib.suppress(Exception):
                sql(self.pg_admin, f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


def load_lists() -> list[dict[str, Any]]:
    """handlers/reconcile.py RESOURCES (names, paths, params, expansions, in the run's order), read by
    the baseline script's --print-lists in a child process (see the imports)."""
    done = subprocess.run(
        [python_executable(), str(BASELINE_SCRIPT), "--print-lists"],
        cwd=REPO_ROOT,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SetupError(f"cannot read handlers.reconcile RESOURCES:\n{done.stderr.strip()[-1500:]}")
    lists = json.loads(done.stdout)
    if not lists:
        raise SetupError("handlers.reconcile RESOURCES is empty: nothing to measure")
    return lists


def worker_env(base: dict[str, str], database_url: str, port: int, synchronous: str | None) -> dict[str, str]:
    env = dict(base)
    env.update(
        # `reconcile` enqueues an alert per refunded customer it finds (worker/jobs/actors.py send_alerts):
        # the in-memory stub broker keeps the benchmark off Redis. The alerts stay in the database,
        # undelivered, as when Redis is down; the clock re-sends those.
        BROKER="stub",
        DATABASE_URL=database_url,
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=f"http://{HOST}:{port}",
        LOG_LEVEL="WARNING",
    )
    if synchronous and database_url.startswith("sqlite"):
        env["SQLITE_SYNCHRONOUS"] = synchronous
    return env


def describe_list(spec: dict[str, Any]) -> str:
    """`subscriptions (status=all, expand data.latest_invoice)`."""
    extra = [f"{k}={v}" for k, v in spec["params"]] + [f"expand {e}" for e in spec["expand"]]
    return f"{spec['name']}{' (' + ', '.join(extra) + ')' if extra else ''}"


def list_budget(objects: int) -> int:
    """API calls one list of `objects` may take: a page per 100, plus a final (or the one empty) page."""
    return math.ceil(objects / PAGE) + 1


WINDOW = tuple(int(datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp()) for d in (SINCE, UNTIL))


def phases(run: Measured, total_requests: int) -> dict[str, Any]:
    """Split a run by the stand-in's request counts: start-up (before the first call), listing (until the
    last call), report + exit (after it); with the RSS at each boundary. Resolution: POLL_STANDIN_EVERY_S."""
    known = [s for s in run.samples if s[3] >= 0]
    first = next((s for s in known if s[3] > 0), None)
    last = next((s for s in known if s[3] >= total_requests), None)
    if not run.samples or first is None or last is None:
        return {}
    peak_at_listing_end = last[2]
    return {
        "startup_s": round(first[0], 2),
        "listing_s": round(last[0] - first[0], 2),
        "report_and_exit_s": round(run.wall_s - last[0], 2),
        "rss_mb_first_call": round(first[1], 1),
        "rss_mb_listing_end": round(last[1], 1),
        "peak_rss_mb_listing_end": round(peak_at_listing_end, 1),
        "rss_growth_after_listing_mb": round(run.peak_rss_mb - peak_at_listing_end, 1),
    }


def reconcile_argv(since: str, until: str) -> list[str]:
    return ["-m", "worker", "reconcile", "--since", since, "--until", until, "--json"]


def parse_report(run: Measured, procs: Processes) -> dict:
    if run.exit_code != 0:
        raise SetupError(f"{run.name} exited with {run.exit_code}:\n{procs.tail(run.name)}")
    try:
        return json.loads(run.stdout)
    except ValueError as exc:
        raise SetupError(f"{run.name} printed no JSON report ({exc}):\n{procs.tail(run.name)}") from exc


def bench_size(
    n: int,
    backend: str,
    lists: list[dict[str, Any]],
    args: argparse.Namespace,
    procs: Processes,
    dbs: Databases,
    errors: list[str],
) -> dict:
    base_env = clean_env()
    py = python_executable()
    run_timeout = args.run_timeout or 60 + n * 0.005
    case = f"N={n:,} {backend}"
    say(f"{case}: starting the stand-in (--generate {n} --random-seed {RANDOM_SEED})")
    port, store = start_standin(procs, n, base_env, timeout=60 + n / 1000)
    standin = procs.running[f"standin-{n}"]
    ours = {standin.pid}
    # Everything the generator makes is inside the window, so each list holds all of its collection.
    to_list = {spec["name"]: store.get(spec["name"], 0) for spec in lists}
    say(f"{case}: stand-in on {HOST}:{port}: " + ", ".join(f"{v:,} {k}" for k, v in to_list.items()))

    # One small request per list first (its own params and expansions), so neither measured run pays
    # for the stand-in's first-call costs.
    for spec in lists:
        api_get(port, f"{spec['path']}?{urllib.parse.urlencode(list_query(spec, *WINDOW, limit=1))}")
    admin(port, "DELETE", "/_standin/requests")

    budgets = {name: list_budget(count) for name, count in to_list.items()}
    result: dict[str, Any] = {
        "n": n,
        "backend": backend,
        "lists": lists,
        "to_list": to_list,
        "budget_by_list": budgets,
        "budget_api_calls": sum(budgets.values()),
    }

    # -- the baseline: the same lists with a bare httpx client
    say(f"{case}: baseline (bare httpx, no SDK, no database)")
    base = run_measured(
        procs,
        f"baseline-{n}",
        [
            py,
            str(BASELINE_SCRIPT),
            "--base",
            f"http://{HOST}:{port}",
            "--since",
            str(WINDOW[0]),
            "--until",
            str(WINDOW[1]),
            "--stripe-version",
            # The worker's default, not this shell's: clean_env() strips STRIPE_API_VERSION from the worker.
            Settings.model_fields["stripe_api_version"].default,
            "--lists",
            json.dumps(lists),
        ],
        base_env,
        deadline_s=run_timeout,
        ours=ours,
    )
    if base.exit_code != 0:
        raise SetupError(f"the baseline exited with {base.exit_code}:\n{procs.tail(base.name)}")
    base_doc = json.loads(base.stdout)
    admin(port, "DELETE", "/_standin/requests")
    result["baseline"] = {
        "wall_s": round(base.wall_s, 3),
        "in_process_s": base_doc["seconds_in_process"],
        "objects": base_doc["objects"],
        "pages": base_doc["pages"],
        "by_resource": base_doc["by_resource"],
        "objects_per_s": round(base_doc["objects"] / base.wall_s),
        "charges_per_s": round(n / base.wall_s),
        "peak_rss_mb": round(base.peak_rss_mb, 1),
        "other_cpu_pct": base.other_cpu_pct,
    }

    # -- the reconciliation, on a fresh database
    database_url = dbs.fresh(backend, str(n))
    env = worker_env(base_env, database_url, port, args.sqlite_synchronous)
    say(f"{case}: migrate {database_url.rsplit('/', 1)[-1]}")
    migrate = run_measured(procs, f"migrate-{n}", [py, "-m", "worker", "migrate"], env, deadline_s=120)
    if migrate.exit_code != 0:
        raise SetupError(f"migrate exited with {migrate.exit_code}:\n{procs.tail(migrate.name)}")

    runs: dict[str, dict] = {}
    for label, since, until in (
        ("first", SINCE, UNTIL),
        ("second", SINCE, UNTIL),
        ("empty", EMPTY_SINCE, EMPTY_UNTIL),
    ):
        say(f"{case}: reconcile ({label} run, --since {since} --until {until})")
        run = run_measured(
            procs,
            f"reconcile-{label}-{n}",
            [py, *reconcile_argv(since, until)],
            env,
            deadline_s=run_timeout,
            standin_port=port,
            ours=ours,
        )
        report = parse_report(run, procs)
        served = v1_counts(admin(port, "GET", "/_standin/requests"))
        admin(port, "DELETE", "/_standin/requests")
        counts = report["counts"]
        runs[label] = {
            "wall_s": round(run.wall_s, 3),
            "cpu_s": round(run.cpu_s, 2),
            "peak_rss_mb": round(run.peak_rss_mb, 1),
            "seen": counts["seen"],
            "added": counts["added"],
            "by_resource": counts["by_resource"],
            "api_calls_reported": report["api_calls"],
            "api_calls_served": sum(served.values()),
            "served_by_path": served,
            # Calls per list: the stand-in's count for the list's path (a GET with a query is logged
            # under its path alone).
            "calls_by_list": {spec["name"]: served.get(f"GET {spec['path']}", 0) for spec in lists},
            "phases": phases(run, sum(served.values())),
            "other_cpu_pct": run.other_cpu_pct,
        }
        if report["api_calls"] != sum(served.values()):
            errors.append(
                f"{case} {label} run: the report says {report['api_calls']} API calls, "
                f"the stand-in served {sum(served.values())}"
            )
    first, second, empty = runs["first"], runs["second"], runs["empty"]
    for name in to_list:
        seen = first["by_resource"].get(name, {}).get("seen", 0)
        if seen != to_list[name]:
            errors.append(
                f"{case}: the reconciliation listed {seen:,} {name}, the stand-in holds {to_list[name]:,}"
            )
        listed = base_doc["by_resource"].get(name, {}).get("objects", 0)
        if listed != to_list[name]:
            errors.append(
                f"{case}: the baseline listed {listed:,} {name}, the stand-in holds {to_list[name]:,}"
            )
    if first["seen"] != base_doc["objects"]:
        errors.append(
            f"{case}: the reconciliation saw {first['seen']:,} objects, the baseline {base_doc['objects']:,}"
        )
    if second["added"] != 0 or second["seen"] != first["seen"]:
        errors.append(
            f"{case}: the second run over the same window added {second['added']:,} "
            f"(seen {second['seen']:,} vs {first['seen']:,}); it must add 0"
        )
    list_paths = {f"GET {spec['path']}" for spec in lists}
    outside = {path: calls for path, calls in first["served_by_path"].items() if path not in list_paths}
    over = {name: calls for name, calls in first["calls_by_list"].items() if calls > budgets[name]}

    wall = first["wall_s"]
    fixed = empty["wall_s"]
    result["reconcile"] = runs
    result["charges_per_s"] = round(n / wall)
    result["objects_per_s"] = round(first["seen"] / wall)
    result["charges_per_cpu_s"] = round(n / first["cpu_s"]) if first["cpu_s"] else None
    # Throughput once the fixed cost of any run (start-up, imports, the report over nothing) is paid.
    result["charges_per_s_excluding_fixed"] = round(n / (wall - fixed)) if wall > fixed else None
    result["ratio_to_baseline"] = round(base.wall_s / wall, 3)
    # Within budget: every list within its own, and no call outside the lists (those have no budget).
    result["lists_over_budget"] = over
    result["calls_outside_lists"] = outside
    result["within_budget"] = (
        not over and not outside and first["api_calls_reported"] <= result["budget_api_calls"]
    )
    result["db_mb"] = dbs.size_mb(database_url)

    if args.profile and n == max(args.sizes):
        result["profile"] = profile_run(n, backend, procs, dbs, base_env, port, args, run_timeout, ours)
    procs.stop(f"standin-{n}")
    return result


# --- profile ----------------------------------------------------------------------------------------------

# (label, file suffix, function name, which time): cumulative for our functions, own time for C calls.
# Indented rows are parts of the row above; the top-level rows after the first do not overlap.
PROFILE_PARTS = [
    ("reconcile() (excl. start-up)", "handlers/reconcile.py", "reconcile", "cum"),
    ("listing: StripeReader.pages", "worker/stripe_api.py", "pages", "cum"),
    ("  JSON decode (json.loads)", "json/decoder.py", "raw_decode", "own"),
    ("  waiting for the stand-in (socket recv)", "~", "<method 'recv' of '_socket.socket' objects>", "own"),
    ("storing: _store_page", "handlers/reconcile.py", "_store_page", "cum"),
    ("  facts: charge_facts", "handlers/stripe_shapes.py", "charge_facts", "cum"),
    ("  facts: invoice_payment_facts", "handlers/stripe_shapes.py", "invoice_payment_facts", "cum"),
    ("  facts: invoice_facts", "handlers/stripe_shapes.py", "invoice_facts", "cum"),
    ("  facts: refund_facts", "handlers/stripe_shapes.py", "refund_facts", "cum"),
    ("  facts: dispute_facts", "handlers/stripe_shapes.py", "dispute_facts", "cum"),
    ("  facts: subscription_facts", "handlers/stripe_shapes.py", "subscription_facts", "cum"),
    ("  stored rows read back to compare: _diff", "handlers/reconcile.py", "_diff", "cum"),
    ("  upsert_many (SQLAlchemy + executemany)", "models/db.py", "upsert_many", "cum"),
    ("    of which sqlite3 executemany", "~", "<method 'executemany' of 'sqlite3.Cursor' objects>", "own"),
    (
        "commits (sqlite3; fsync with synchronous=FULL)",
        "~",
        "<method 'commit' of 'sqlite3.Connection' objects>",
        "own",
    ),
    ("checkpoint per page: save()", "handlers/reconcile.py", "save", "cum"),
    ("customers a page concerns: _refresh", "handlers/reconcile.py", "_refresh", "cum"),
    ("report: build_report (SQL aggregates)", "handlers/reconcile_report.py", "build_report", "cum"),
]
# Project code whose cumulative time is listed on its own, so work added to the loop later (and not
# named above) still shows where it goes.
PROJECT_DIRS = ("/handlers/", "/models/", "/worker/")
ENTRY_POINTS = {
    "<module>",
    "main",
    "cmd_reconcile",
    "run_reconcile",
    "reconcile",
    "session",
    "<genexpr>",
    "<listcomp>",
    "<dictcomp>",
}


def summarise_profile(path: Path, top: int = 12) -> dict[str, Any]:
    stats = pstats.Stats(str(path))
    table = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = max((ct for (_f, _l, _n), (_cc, _nc, _tt, ct, _c) in table.items()), default=0.0)

    def pct(seconds: float) -> float:
        return round(100 * seconds / total, 1) if total else 0.0

    parts = []
    for label, suffix, name, which in PROFILE_PARTS:
        seconds = sum(
            (tt if which == "own" else ct)
            for (file, _line, fn), (_cc, _nc, tt, ct, _callers) in table.items()
            if fn == name and (file == suffix if suffix == "~" else file.endswith(suffix))
        )
        parts.append({"part": label, "s": round(seconds, 2), "pct": pct(seconds)})
    # Before reconcile(): interpreter, imports (SQLAlchemy, SQLModel, stripe), settings, engine.
    startup = total - parts[0]["s"]
    parts.insert(
        0, {"part": "start-up: imports, settings, engine", "s": round(startup, 2), "pct": pct(startup)}
    )
    # What reconcile() spends outside the named top-level parts: per-page work added to the loop.
    named = sum(p["s"] for p in parts[2:] if not p["part"].startswith(" "))
    other = max(0.0, parts[1]["s"] - named)
    parts.append(
        {
            "part": "other work inside reconcile() (see project code below)",
            "s": round(other, 2),
            "pct": pct(other),
        }
    )
    own = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:top]
    project = sorted(
        (
            (key, value)
            for key, value in table.items()
            if any(d in key[0] for d in PROJECT_DIRS) and key[2] not in ENTRY_POINTS
        ),
        key=lambda item: item[1][3],
        reverse=True,
    )[:top]

    def describe(file: str, line: int, fn: str) -> str:
        if file == "~":
            return fn
        root = f"{REPO_ROOT}/"
        where = file[len(root) :] if file.startswith(root) else Path(file).name
        return f"{where}:{line}({fn})"

    return {
        "total_s": round(total, 2),
        "parts": parts,
        "top_own_time": [
            {"function": describe(*key), "own_s": round(v[2], 2), "calls": v[1]} for key, v in own
        ],
        "top_project_cumulative": [
            {"function": describe(*key), "cum_s": round(v[3], 2), "calls": v[1]} for key, v in project
        ],
    }


def profile_run(n, backend, procs, dbs, base_env, port, args, run_timeout, ours) -> dict[str, Any]:
    """The same first run under cProfile on a fresh database (cProfile slows Python code ~1.3-2x; the
    shares, not the seconds, are the finding)."""
    env = worker_env(base_env, dbs.fresh(backend, f"{n}_profile"), port, args.sqlite_synchronous)
    py = python_executable()
    migrate = run_measured(
        procs, f"migrate-profile-{n}", [py, "-m", "worker", "migrate"], env, deadline_s=120
    )
    if migrate.exit_code != 0:
        raise SetupError(f"migrate exited with {migrate.exit_code}:\n{procs.tail(migrate.name)}")
    out = dbs.workdir / f"reconcile_{n}_{backend}.prof"
    say(f"N={n:,}: reconcile under cProfile ({out.name})")
    run = run_measured(
        procs,
        f"reconcile-profile-{n}",
        [py, "-m", "cProfile", "-o", str(out), *reconcile_argv(SINCE, UNTIL)],
        env,
        deadline_s=run_timeout * 2,
        ours=ours,
    )
    parse_report(run, procs)
    admin(port, "DELETE", "/_standin/requests")
    summary = summarise_profile(out)
    summary["wall_s"] = round(run.wall_s, 2)
    summary["file"] = str(out)
    return summary


# --- report -----------------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ",") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def render(doc: dict) -> str:
    sizes = doc["sizes"]
    lists = doc["lists"]
    cols = [f"N={s['n']:,} {s['backend']}" for s in sizes]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values: list[str]) -> None:
        rows.append((label, values))

    def each(getter, spec: str = ",") -> list[str]:
        out = []
        for s in sizes:
            try:
                out.append(_fmt(getter(s), spec))
            except (KeyError, TypeError):
                out.append("n/a")
        return out

    first = lambda s: s["reconcile"]["first"]  # noqa: E731
    row("objects to list (all lists, in the run's order)", each(lambda s: sum(s["to_list"].values())))
    row("reconcile wall s (1st run)", each(lambda s: first(s)["wall_s"], ".2f"))
    row(f"  charges/s   (target >= {TARGET_CHARGES_PER_S:,})", each(lambda s: s["charges_per_s"]))
    row("  objects listed/s", each(lambda s: s["objects_per_s"]))
    row(
        "  CPU s (user+sys) / charges per CPU-s",
        [f"{first(s)['cpu_s']:.2f} / {_fmt(s['charges_per_cpu_s'])}" for s in sizes],
    )
    row("  start-up s (before the 1st API call)", each(lambda s: first(s)["phases"]["startup_s"], ".2f"))
    row("  listing + storing s", each(lambda s: first(s)["phases"]["listing_s"], ".2f"))
    row(
        "  report + exit s (after the last call)",
        each(lambda s: first(s)["phases"]["report_and_exit_s"], ".2f"),
    )
    row("  fixed cost s (empty-window run)", each(lambda s: s["reconcile"]["empty"]["wall_s"], ".2f"))
    row("  charges/s excluding the fixed cost", each(lambda s: s["charges_per_s_excluding_fixed"]))
    row(
        "API calls: report / stand-in served",
        [f"{first(s)['api_calls_reported']:,} / {first(s)['api_calls_served']:,}" for s in sizes],
    )
    row(
        f"  budget: sum of ceil(N_list/{PAGE}) + 1 over {len(lists)} lists / within?",
        [f"{s['budget_api_calls']:,} / {_fmt(s['within_budget'])}" for s in sizes],
    )
    for spec in lists:
        name = spec["name"]
        row(
            f"  {describe_list(spec)}: N_list, calls <= budget",
            [
                f"{s['to_list'][name]:,} obj, "
                f"{first(s)['calls_by_list'][name]:,} <= {s['budget_by_list'][name]:,}"
                for s in sizes
            ],
        )
    if any(s["calls_outside_lists"] for s in sizes):
        row(
            "  calls outside the lists (no budget)",
            [" ".join(f"{k}={v}" for k, v in s["calls_outside_lists"].items()) or "-" for s in sizes],
        )
    row("peak RSS MB (worker process alone)", each(lambda s: first(s)["peak_rss_mb"], ".1f"))
    row(
        "  RSS MB at 1st call / peak at listing end",
        [
            f"{first(s)['phases'].get('rss_mb_first_call', 'n/a')} / "
            f"{first(s)['phases'].get('peak_rss_mb_listing_end', 'n/a')}"
            for s in sizes
        ],
    )
    row(
        "  peak growth during report MB",
        each(lambda s: first(s)["phases"]["rss_growth_after_listing_mb"], ".1f"),
    )
    row("  database MB (SQLite files / pg_database_size)", each(lambda s: s["db_mb"], ".1f"))
    row("baseline (bare httpx) wall s", each(lambda s: s["baseline"]["wall_s"], ".2f"))
    row(
        "  baseline charges/s / objects/s",
        [f"{s['baseline']['charges_per_s']:,} / {s['baseline']['objects_per_s']:,}" for s in sizes],
    )
    row("  baseline pages (served to it)", each(lambda s: s["baseline"]["pages"]))
    row("  baseline peak RSS MB", each(lambda s: s["baseline"]["peak_rss_mb"], ".1f"))
    row("  reconcile throughput / baseline", each(lambda s: s["ratio_to_baseline"], ".2f"))
    row("2nd run (same window) wall s", each(lambda s: s["reconcile"]["second"]["wall_s"], ".2f"))
    row(
        "  added (must be 0) / seen",
        [f"{s['reconcile']['second']['added']:,} / {s['reconcile']['second']['seen']:,}" for s in sizes],
    )
    row("  API calls", each(lambda s: s["reconcile"]["second"]["api_calls_reported"]))
    row("other processes' CPU, % of a core (1st run)", each(lambda s: first(s)["other_cpu_pct"], ".0f"))

    width = max(len(label) for label, _ in rows) + 2
    colw = [max(len(c), *(len(v[i]) for _, v in rows)) + 2 for i, c in enumerate(cols)]
    lines = [doc["title"], doc["machine"], ""]
    lines.append(" " * width + "".join(c.rjust(w) for c, w in zip(cols, colw, strict=True)))
    for label, values in rows:
        lines.append(label.ljust(width) + "".join(v.rjust(w) for v, w in zip(values, colw, strict=True)))
    lines.append("")
    verdict = doc["verdict"]
    lines.append("Targets:")
    lines.append(
        f"  throughput >= {TARGET_CHARGES_PER_S:,} charges/s: "
        + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in verdict["throughput"].items())
    )
    lines.append(
        "  API calls within budget: "
        + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in verdict["api_calls"].items())
    )
    for backend, memory in verdict["memory"].items():
        flat = "flat" if memory["flat"] else f"NOT flat (target <= {TARGET_MEMORY_RATIO:.2f})"
        lines.append(f"  peak RSS growth {backend} {memory['sizes']}: {memory['ratio']:.2f}x -- {flat}")
    for note in doc["warnings"]:
        lines.append(f"WARNING: {note}")
    for error in doc["errors"]:
        lines.append(f"ERROR: {error}")
    for profiled in (s for s in sizes if "profile" in s):
        profile = profiled["profile"]
        lines += [
            "",
            f"cProfile of the N={profiled['n']:,} {profiled['backend']} run "
            f"({profile['wall_s']:.1f} s wall under the profiler; shares of {profile['total_s']:.1f} s):",
        ]
        for part in profile["parts"]:
            lines.append(f"  {part['part']:<52}{part['s']:>8.2f} s {part['pct']:>5.1f}%")
        lines.append("  project code by cumulative time (s, calls):")
        for item in profile["top_project_cumulative"]:
            lines.append(f"    {item['cum_s']:>7.2f} s {item['calls']:>9,}  {item['function']}")
        lines.append("  top own time (s, calls):")
        for item in profile["top_own_time"]:
            lines.append(f"    {item['own_s']:>7.2f} s {item['calls']:>9,}  {item['function']}")
        lines.append(f"  (full profile: {profile['file']})")
    lines += ["", f"Reproduce (from {REPO_ROOT}):", f"  {doc['reproduce']}"]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10000,100000", help="comma-separated numbers of charges (default 10000,100000)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument(
        "--profile", action="store_true", help="also run the largest size under cProfile and split its time"
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("FULL", "NORMAL"),
        default=None,
        help="SQLITE_SYNCHRONOUS for the worker (default: the worker's own, FULL)",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=None,
        help="seconds before a measured process is killed (default 60 + 5 ms per charge)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL"),
        help="a PostgreSQL server's URL, e.g. $(scripts/postgres.sh) (default: $TEST_DATABASE_URL)",
    )
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated, of sqlite,postgresql (default: sqlite, then postgresql with a PostgreSQL URL)",
    )
    parser.add_argument("--check-targets", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the databases, logs and profile")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: not a list of integers: {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes needs at least one positive size")
    if args.backends is None:
        args.backends = ["sqlite", "postgresql"] if args.postgres_url else ["sqlite"]
    else:
        args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = set(args.backends) - set(BACKENDS)
        if unknown or not args.backends:
            parser.error(f"--backends: each of {', '.join(BACKENDS)}, not {args.backends!r}")
        if "postgresql" in args.backends and not args.postgres_url:
            parser.error("--backends postgresql needs --postgres-url or TEST_DATABASE_URL")
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict:
    procs = Processes(workdir)
    dbs = Databases(workdir, args.postgres_url if "postgresql" in args.backends else None)
    errors: list[str] = []
    warnings: list[str] = []
    sizes = []
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lists = load_lists()
    say("lists (handlers/reconcile.py RESOURCES): " + "; ".join(describe_list(spec) for spec in lists))
    try:
        for backend in args.backends:
            for n in args.sizes:
                sizes.append(bench_size(n, backend, lists, args, procs, dbs, errors))
    finally:
        procs.stop_all()
        dbs.drop_all()

    case = lambda s: f"N={s['n']:,} {s['backend']}"  # noqa: E731
    verdict: dict[str, Any] = {
        "throughput": {case(s): s["charges_per_s"] >= TARGET_CHARGES_PER_S for s in sizes},
        "api_calls": {case(s): s["within_budget"] for s in sizes},
        "memory": {},
    }
    for backend in args.backends:
        ran = [s for s in sizes if s["backend"] == backend]
        if len({s["n"] for s in ran}) < 2:
            continue
        small, large = min(ran, key=lambda s: s["n"]), max(ran, key=lambda s: s["n"])
        ratio = large["reconcile"]["first"]["peak_rss_mb"] / small["reconcile"]["first"]["peak_rss_mb"]
        verdict["memory"][backend] = {
            "ratio": round(ratio, 3),
            "flat": ratio <= TARGET_MEMORY_RATIO,
            "sizes": f"N={large['n']:,} / N={small['n']:,}",
        }
    for s in sizes:
        busy = max(s["reconcile"]["first"]["other_cpu_pct"] or 0, s["baseline"]["other_cpu_pct"] or 0)
        if busy > FOREIGN_CPU_WARN_PCT:
            warnings.append(
                f"{case(s)}: other processes used up to {busy:.0f}% of a core during the "
                "measured runs; on 2 cores that slows the worker and the stand-in, so rerun on a "
                "quiet machine before trusting the wall-clock figures"
            )
    repro = shlex.join([".venv/bin/python", "tests/bench/reconcile_bench.py", *sys.argv[1:]])
    if dbs.pg_url is not None and "--postgres-url" not in sys.argv[1:]:
        repro = f"TEST_DATABASE_URL=$(scripts/postgres.sh) {repro}"
    sync = args.sqlite_synchronous or Settings.model_fields["sqlite_synchronous"].default
    names = {
        "sqlite": f"SQLite (synchronous={sync})",
        "postgresql": f"PostgreSQL ({urllib.parse.urlsplit(dbs.pg_url).netloc.rsplit('@', 1)[-1]})"
        if dbs.pg_url
        else "",
    }
    return {
        "title": (
            f"Nightly reconciliation benchmark: stripe_standin --random-seed {RANDOM_SEED}, "
            f"{' and '.join(names[b] for b in args.backends)}, all on {HOST}; "
            f"lists (handlers/reconcile.py RESOURCES): {', '.join(spec['name'] for spec in lists)}"
        ),
        "machine": (
            f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"load average at start {', '.join(f'{x:.2f}' for x in load) if load else 'n/a'}"
        ),
        "lists": lists,
        "sizes": sizes,
        "verdict": verdict,
        "warnings": warnings,
        "errors": errors,
        "reproduce": repro,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    # Started in the background by a shell, SIGINT arrives ignored; Ctrl-C must still stop the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    try:
        doc = run(args, workdir)
    except SetupError as exc:
        say(f"cannot complete the benchmark: {exc}")
        say(f"logs kept in {workdir}")
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP (Interrupted)
        say("interrupted; every process this run started has been stopped")
        shutil.rmtree(workdir, ignore_errors=True)
        return 130
    if not args.keep_workdir:
        # The databases go (100k charges is ~100 MB); a profile stays, the report points at it.
        for path in workdir.iterdir():
            if path.suffix != ".prof":
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            workdir.rmdir()  # only when empty, i.e. no profile was asked for
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(doc))
    if doc["errors"]:
        return 1
    verdict = doc["verdict"]
    missed = (
        not all(verdict["throughput"].values())
        or not all(verdict["api_calls"].values())
        or not all(memory["flat"] for memory in verdict["memory"].values())
    )
    return 3 if args.check_targets and missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput and latency of the webhook receiver against a bare baseline, all on 127.0.0.1.

One run starts its own redis-server, the real receiver (`python -m worker web`, after `migrate`, on a
fresh SQLite file) and a minimal raw-ASGI baseline (tests/bench/baseline_app.py) under the same uvicorn
settings; sends them unique, freshly signed, ~3 KB `charge.succeeded` webhooks; prints a report; and
stops everything it started, also on Ctrl-C or an error.

  closed loop  wrk (tests/bench/replay.lua) keeps --connections requests in flight for --duration s:
               accepted webhooks/s, p50, p99, and the ratio receiver/baseline (target >= 0.8).
  open loop    tests/bench/loadgen.py offers a constant arrival rate and measures latency from when
               each request was due (target: receiver p99 < 50 ms at the baseline's rate). The rate is
               first tried on the baseline itself: when even the baseline cannot sustain it open-loop on
               this machine, the highest rate it does sustain is used instead, and the report says so.
               The receiver is also measured at 80% of its own closed-loop rate.
  storage      afterwards, rows in the receiver's `events` table == the webhooks it answered 200 to
               (+ at most the requests a client abandoned in flight), and == messages in its Redis queue.

The receiver is measured once per SQLite synchronous mode (default: FULL, its default, then NORMAL).
Every figure is for this machine only; other processes' CPU use during each phase is measured and a
busy machine is reported loudly, because the client, Redis and the server share its cores (on a shared
machine, --wait-quiet N waits up to N s before each phase for the others to go idle).

Needs redis-server and wrk (Debian/Ubuntu: `apt-get install -y redis-server wrk`; run as root, the
benchmark installs a missing wrk itself). Without wrk the closed loop falls back to a Python client that
needs more CPU per request than wrk, so both apps' throughput is understated.

Run from the repository root:
    .venv/bin/python tests/bench/receiver_bench.py            # ~1.5 minutes
    .venv/bin/python tests/bench/receiver_bench.py --json     # the figures as one JSON document
Exit status: 0 measured cleanly; 1 the run had errors (non-200s, socket errors, storage mismatch...);
2 it could not start; 3 with --check-targets, a target was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests` and `worker` importable
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

from tests.bench import loadgen  # noqa: E402
from tests.bench.webhook_factory import SignedWebhook, WebhookFactory  # noqa: E402
from tests.stripe_fixtures import TEST_SECRET  # noqa: E402
from worker.settings import Settings  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "replay.lua"
HOST = "127.0.0.1"  # every socket this benchmark opens is on loopback

TARGET_RATIO = 0.8
TARGET_P99_MS = 50.0
# The open-loop rate is "sustained" by the baseline when it is not saturated and its p99 stays under
# half the receiver's target, so a receiver as fast as the baseline would pass with room to spare.
CONTROL_P99_MS = TARGET_P99_MS / 2
CONTROL_STEPS = 4  # at most this many rates tried on the baseline before giving up on the search
CLIENT_LAG_LIMIT_MS = 5.0  # the open-loop client's timer may run this late (p99) before it is suspect
SUSTAINABLE_FRACTION = 0.8  # the receiver's own "comfortable" rate: 80% of its closed-loop throughput
# Another process using more than this share of one core during a phase makes its figures suspect.
FOREIGN_CPU_WARN_PCT = 15.0
BASELINE_POOL = 20_000  # the baseline does not de-duplicate: it may replay its pool (see replay.lua)
REDIS_DB = {"FULL": 0, "NORMAL": 1, "baseline": 2}


def say(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report (or the JSON document)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class SetupError(Exception):
    """Something the benchmark needs is missing or would not start (exit status 2)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C.

    A KeyboardInterrupt on purpose: uvloop (the load generator's loop) reports an ordinary exception
    raised by a signal handler as an error in a callback and carries on, but lets this one through.
    """


def _raise_interrupted(signum, _frame) -> None:
    raise Interrupted(f"signal {signum}")


# --- processes -------------------------------------------------------------------------------------


class Processes:
    """Every process the benchmark starts, so that all of them are stopped whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen] = {}
        self.started: dict[int, str] = {}  # every pid ever started, for CPU accounting

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed when the child is reaped)
        # A new session: Ctrl-C in the terminal reaches only this script, which then stops the children
        # itself, in order, instead of them dying mid-request on their own.
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.running[name] = proc
        self.started[proc.pid] = name
        return proc

    def stop(self, name: str, timeout: float = 15.0) -> None:
        proc = self.running.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # by its pid only: it is our child
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            with contextlib.suppress(Exception):
                self.stop(name)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_http_ok(procs: Processes, name: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{HOST}:{port}/healthz"
    while time.monotonic() < deadline:
        proc = procs.running.get(name)
        if proc is None or proc.poll() is not None:
            raise SetupError(f"{name} exited during start-up:\n{procs.log_tail(name)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise SetupError(f"{name} did not answer GET /healthz within {timeout:.0f} s:\n{procs.log_tail(name)}")


def python_executable() -> str:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def clean_env() -> dict[str, str]:
    """This environment minus every receiver setting, so only what the benchmark sets applies."""
    env = dict(os.environ)
    names = {n.upper() for n in Settings.model_fields}
    for key in list(env):
        if key.upper() in names:
            del env[key]
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- CPU accounting ------------------------------------------------------------------------------------


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


class CpuWatch:
    """CPU used during a phase by our processes (by name) and by everything else on the machine.

    Percentages are of one core. "Other" is the machine's whole user+system time (/proc/stat) minus
    ours, so processes that start and exit inside the window count too; the biggest of the ones still
    running are named. A child of ours that exits inside the window (wrk) is gone from /proc by the end
    and is counted from this process's children rusage instead. Steal is time the hypervisor gave to
    someone else: on a VM, a high steal also makes the figures unreliable.
    """

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.by_name: dict[str, float] = {}
        self.foreign_pct = 0.0
        self.steal_pct = 0.0
        self.foreign_top: dict[str, float] = {}
        self.available = False

    @staticmethod
    def _children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> CpuWatch:
        self.start_stat = _machine_ticks()
        self.start_ticks = _cpu_ticks_by_pid()
        self.start_children = self._children_cpu()
        self.start = time.monotonic()
        return self

    def __exit__(self, *_exc) -> None:
        wall = max(1e-9, time.monotonic() - self.start)
        end = _cpu_ticks_by_pid()
        end_stat = _machine_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        ours = {os.getpid(): "bench", **self.procs.started}
        pct = {pid: 100.0 * (t - self.start_ticks.get(pid, 0)) / hz / wall for pid, t in end.items()}
        self.by_name = {ours[pid]: round(v, 1) for pid, v in pct.items() if pid in ours}
        reaped = 100.0 * (self._children_cpu() - self.start_children) / wall
        if reaped >= 0.5:
            self.by_name["exited children (wrk)"] = round(reaped, 1)
        ours_pct = sum(v for pid, v in pct.items() if pid in ours) + max(0.0, reaped)
        if self.start_stat and end_stat:
            busy = 100.0 * (end_stat[0] - self.start_stat[0]) / hz / wall
            self.steal_pct = round(100.0 * (end_stat[1] - self.start_stat[1]) / hz / wall, 1)
            self.foreign_pct = round(max(0.0, busy - ours_pct), 1)
        else:
            self.foreign_pct = round(sum(v for pid, v in pct.items() if pid not in ours), 1)
        # Who they were, so a busy machine can be told from kernel work done on our behalf.
        foreign = sorted(((v, pid) for pid, v in pct.items() if pid not in ours), reverse=True)
        self.foreign_top = {_command(pid): round(v, 1) for v, pid in foreign[:3] if v >= 1.0}
        self.available = bool(end)

    def summary(self) -> dict:
        return {
            "ours_pct_of_one_core": self.by_name,
            "other_processes_pct_of_one_core": self.foreign_pct,
            "steal_pct_of_one_core": self.steal_pct,
            "other_top": self.foreign_top,
        }


def _machine_ticks() -> tuple[int, int] | None:
    """(user + nice + system, steal) ticks of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    values = [int(v) for v in fields[1:]]
    return values[0] + values[1] + values[2], (values[7] if len(values) > 7 else 0)


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        with open(f"/proc/{pid}/comm", "rb") as handle:
            comm = handle.read().strip()
    except OSError:
        return f"pid {pid} (exited)"
    text = b" ".join(a for a in argv if a).decode(errors="replace") or f"[{comm.decode(errors='replace')}]"
    return f"{pid} {text[:70]}"


# --- the load ------------------------------------------------------------------------------------------


def find_wrk(mode: str) -> str | None:
    """wrk's path; installs it with apt-get when missing and running as root; None to use Python."""
    if mode == "python":
        return None
    path = shutil.which("wrk")
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        say("wrk is not installed; installing it: apt-get install -y wrk")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        if subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], **quiet)
            subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)
        path = shutil.which("wrk")
    if path is None:
        message = "wrk is not installed (Debian/Ubuntu: apt-get install -y wrk, as root)"
        if mode == "wrk":
            raise SetupError(message)
        say(f"WARNING: {message}; the closed loop falls back to the Python client, which needs more CPU "
            "per request than wrk and so understates both apps' throughput on a small machine")  # fmt: skip
    return path


def wrk_version(path: str) -> str:
    out = subprocess.run([path, "-v"], capture_output=True, text=True).stdout
    return out.splitlines()[0].split("[")[0].strip() if out else "wrk"


@dataclass
class Target:
    label: str
    port: int
    proc_name: str


class Bench:
    def __init__(self, args: argparse.Namespace, procs: Processes, workdir: Path, wrk: str | None) -> None:
        self.args = args
        self.procs = procs
        self.workdir = workdir
        self.wrk = wrk
        self.factory = WebhookFactory(TEST_SECRET)
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.body_sizes: list[int] = []
        self.foreign: list[tuple[str, float, dict]] = []  # (phase, other processes' CPU %, top ones)

    # -- webhooks -----------------------------------------------------------------------------------

    def webhooks(self, count: int) -> list[SignedWebhook]:
        hooks = self.factory.make(count)
        if len(self.body_sizes) < 5000:
            self.body_sizes.extend(len(h.body) for h in hooks[:1000])
        return hooks

    def requests(self, target: Target, count: int) -> list[bytes]:
        return [loadgen.build_request(HOST, target.port, h.signature, h.body) for h in self.webhooks(count)]

    def wait_quiet(self) -> None:
        """With --wait-quiet N: before a measured phase, wait up to N s for other processes to go idle."""
        deadline = time.monotonic() + self.args.wait_quiet
        announced = False
        while time.monotonic() < deadline:
            with CpuWatch(self.procs) as watch:
                time.sleep(1.0)
            if not watch.available or watch.foreign_pct + watch.steal_pct <= FOREIGN_CPU_WARN_PCT:
                return
            if not announced:
                say(f"waiting for other processes to go idle ({watch.foreign_pct:.0f}% of a core: "
                    f"{', '.join(watch.foreign_top)})")  # fmt: skip
                announced = True

    def check_foreign(self, watch: CpuWatch, phase: str) -> None:
        if watch.available:
            top = dict(watch.foreign_top)
            if watch.steal_pct >= 1.0:
                top["steal by the hypervisor"] = watch.steal_pct
            self.foreign.append((phase, watch.foreign_pct + watch.steal_pct, top))

    def foreign_warning(self) -> str | None:
        busy = [item for item in self.foreign if item[1] > FOREIGN_CPU_WARN_PCT]
        if not busy:
            return None
        phase, pct, top = max(busy, key=lambda item: item[1])
        who = ", ".join(f"{name} {value:.0f}%" for name, value in top.items())
        return (
            f"other processes on this machine used more than {FOREIGN_CPU_WARN_PCT:.0f}% of a core during "
            f"{len(busy)} of {len(self.foreign)} measured phases (up to {pct:.0f}% in {phase}: {who}); "
            "those figures are unreliable: rerun when the machine is quiet"
        )

    # -- phases -------------------------------------------------------------------------------------

    def warm_up(self, target: Target) -> dict:
        """A fixed number of requests before measuring: imports, pools, SQLite caches all warm."""
        requests = self.requests(target, self.args.warmup)
        result = loadgen.run_sync(
            loadgen.closed_loop(HOST, target.port, requests, connections=self.args.connections)
        )
        summary = result.summary()
        self._count_problems(f"{target.label} warm-up", summary["non200"], summary["connection_errors"],
                             summary["duplicate"], summary["non200_statuses"])  # fmt: skip
        return summary

    def closed_loop(self, target: Target, pool: int, *, allow_wrap: bool) -> dict:
        args = self.args
        say(f"{target.label}: closed loop, {args.connections} connections, {args.duration:g} s "
            f"({'wrk' if self.wrk else 'Python client'}; {pool:,} pre-signed webhooks)")  # fmt: skip
        hooks = self.webhooks(pool)
        if self.wrk:
            path = self.workdir / f"requests-{target.proc_name}.txt"
            with open(path, "wb") as handle:
                for hook in hooks:
                    handle.write(hook.signature.encode() + b"\n" + hook.body + b"\n")
            del hooks
            threads = max(1, min(args.wrk_threads, args.connections))
            argv = [
                self.wrk, f"-t{threads}", f"-c{args.connections}", f"-d{args.duration:g}s",
                # wrk drops answers slower than --timeout from its histogram (default 2 s) and counts
                # them as errors: a generous timeout keeps a slow receiver's tail in the p99.
                "--timeout", "60s", "-s", str(LUA_SCRIPT), f"http://{HOST}:{target.port}", "--",
                str(path), str(threads),
            ]  # fmt: skip
            self.wait_quiet()
            with CpuWatch(self.procs) as watch:
                self.procs.start("wrk", argv)
                proc = self.procs.running["wrk"]
                try:
                    proc.wait(timeout=args.duration + 120)
                except subprocess.TimeoutExpired as exc:
                    raise SetupError("wrk did not finish") from exc
                finally:
                    self.procs.stop("wrk")
            path.unlink()
            result = self._parse_wrk(target)
        else:
            requests = [loadgen.build_request(HOST, target.port, h.signature, h.body) for h in hooks]
            del hooks
            self.wait_quiet()
            with CpuWatch(self.procs) as watch:
                run = loadgen.run_sync(
                    loadgen.closed_loop(
                        HOST, target.port, requests, connections=args.connections, duration=args.duration
                    )
                )
            s = run.summary()
            result = {
                "tool": "python",
                "duration_s": s["elapsed_s"],
                "connections": args.connections,
                "sent": s["sent"],
                "responses": run.answered,
                "unanswered": s["unanswered"],
                "wrapped": 0,
                "ok": s["ok"],
                "duplicate": s["duplicate"],
                "non200": s["non200"],
                "non200_statuses": s["non200_statuses"],
                "socket_errors": s["connection_errors"],
                "throughput_per_s": s["throughput_per_s"],
                "latency_ms": s["latency_ms"],
            }
        result["pool"] = pool
        result["cpu"] = watch.summary()
        result["server_cpu_pct"] = watch.by_name.get(target.proc_name)
        self.check_foreign(watch, f"{target.label} closed loop")
        self._count_problems(f"{target.label} closed loop", result["non200"], result["socket_errors"],
                             result["duplicate"], result["non200_statuses"])  # fmt: skip
        if result.get("slow_answers_over_timeout"):
            self.errors.append(f"{target.label} closed loop: answers slower than wrk's 60 s timeout")
        if result["wrapped"] and not allow_wrap:
            self.errors.append(
                f"{target.label} closed loop: ran out of unique webhooks and replayed {result['wrapped']} "
                "(duplicates are cheaper for the receiver): rerun with a larger --pool-factor"
            )
        return result

    def _parse_wrk(self, target: Target) -> dict:
        output = (self.workdir / "wrk.log").read_text(errors="replace")
        lines = [line for line in output.splitlines() if line.startswith("BENCH_JSON ")]
        if not lines:
            raise SetupError(f"wrk printed no result for {target.label}:\n{output[-2000:]}")
        raw = json.loads(lines[-1].removeprefix("BENCH_JSON "))
        duration = raw["duration_us"] / 1e6
        statuses: dict[str, int] = {}
        for item in filter(None, raw["non200_statuses"].split(",")):
            code, count = item.split(":")
            statuses[code] = statuses.get(code, 0) + int(count)
        return {
            "tool": "wrk",
            "duration_s": round(duration, 3),
            "connections": self.args.connections,
            "sent": raw["sent"],
            "responses": raw["responses"],
            # wrk stops mid-request: these were sent and never read (the server may still store them).
            "unanswered": max(0, raw["sent"] - raw["responses"]),
            "wrapped": raw["wrapped"],
            "ok": raw["ok"],
            "duplicate": raw["duplicate"],
            "non200": raw["non200"],
            "non200_statuses": statuses,
            # "timeout" is not a lost request in wrk: it counts answers slower than --timeout.
            "socket_errors": sum(raw["errors"][k] for k in ("connect", "read", "write")),
            "slow_answers_over_timeout": raw["errors"]["timeout"],
            "throughput_per_s": round(raw["ok"] / duration, 1),
            "latency_ms": {k: round(raw["latency_us"][k] / 1000, 3) for k in ("p50", "p90", "p99", "max")},
        }

    def open_loop(self, target: Target, rate: float, duration: float, phase: str) -> dict:
        requests = self.requests(target, math.ceil(rate * duration) + 1)
        self.wait_quiet()
        with CpuWatch(self.procs) as watch:
            run = loadgen.run_sync(
                loadgen.open_loop(
                    HOST,
                    target.port,
                    requests,
                    rate=rate,
                    duration=duration,
                    max_connections=self.args.open_connections,
                )  # fmt: skip
            )
        summary = run.summary()
        summary["duration_s"] = duration
        summary["cpu"] = watch.summary()
        # The client, not the server, set the pace if it could not offer the rate, its timer ran late
        # (then measured latencies include the client's own delay), or it used a whole core.
        lag_p99 = summary["client_schedule_lag_ms"]["p99"] or 0.0
        reasons = []
        if run.offered_rate < 0.95 * rate:
            reasons.append(f"offered only {run.offered_rate:,.0f}/s")
        if lag_p99 > CLIENT_LAG_LIMIT_MS:
            reasons.append(f"its timer ran {lag_p99:.0f} ms late (p99)")
        if run.client_cpu > 0.9:
            reasons.append(f"it used {100 * run.client_cpu:.0f}% of a core")
        summary["client_limited"] = bool(reasons)
        summary["client_limited_reason"] = "; ".join(reasons)
        self.check_foreign(watch, phase)
        self._count_problems(phase, summary["non200"], summary["connection_errors"], summary["duplicate"],
                             summary["non200_statuses"])  # fmt: skip
        return summary

    def _count_problems(self, phase: str, non200: int, socket_errors: int, duplicate: int, statuses) -> None:
        if non200:
            self.errors.append(f"{phase}: {non200} answers were not 200 ({statuses})")
        if socket_errors:
            self.errors.append(f"{phase}: {socket_errors} connection errors")
        if duplicate:
            self.errors.append(f"{phase}: {duplicate} answers said duplicate (ids must be unique)")

    def control_rate(self, baseline: Target, wanted: float) -> tuple[float, list[dict], bool]:
        """The highest rate (starting at `wanted`) that the baseline sustains open-loop on this machine."""
        rate = wanted
        tried: list[dict] = []
        for _ in range(CONTROL_STEPS):
            say(f"baseline: open loop at {rate:,.0f}/s for {self.args.control_duration:g} s (can this "
                "machine sustain it?)")  # fmt: skip
            result = self.open_loop(
                baseline, rate, self.args.control_duration, f"baseline open loop {rate:.0f}/s"
            )
            tried.append(result)
            p99 = result["latency_ms"]["p99"]
            clean = not result["saturated"] and not result["client_limited"]
            if clean and p99 is not None and p99 <= CONTROL_P99_MS:
                return rate, tried, True
            if len(tried) < CONTROL_STEPS:
                # Next: below what was actually served, and at least a quarter lower.
                served = result["throughput_per_s"] or rate / 2
                rate = min(rate * 0.75, served * 0.9)
                time.sleep(0.5)
        return rate, tried, False  # the last rate tried, which the baseline did not sustain either

    # -- the receiver -------------------------------------------------------------------------------

    def receiver_env(self, mode: str, db_path: Path, redis_port: int) -> dict[str, str]:
        env = clean_env()
        env.update(
            DATABASE_URL=f"sqlite:///{db_path}",
            REDIS_URL=f"redis://{HOST}:{redis_port}/{REDIS_DB[mode]}",
            STRIPE_WEBHOOK_SECRET=TEST_SECRET,
            LOG_LEVEL="WARNING",
            SQLITE_SYNCHRONOUS=mode,
        )
        return env

    def start_receiver(self, mode: str, redis_port: int) -> tuple[Target, Path]:
        db_path = self.workdir / f"bench-{mode.lower()}.db"
        env = self.receiver_env(mode, db_path, redis_port)
        python = python_executable()
        migrate = subprocess.run(
            [python, "-m", "worker", "migrate"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        if migrate.returncode != 0:
            raise SetupError(f"`python -m worker migrate` failed:\n{migrate.stderr[-2000:]}")
        port = free_port()
        name = f"receiver-{mode.lower()}"
        self.procs.start(name, [python, "-m", "worker", "web", "--host", HOST, "--port", str(port)], env)
        wait_http_ok(self.procs, name, port)
        return Target(f"receiver {mode}", port, name), db_path

    def storage_check(self, mode: str, db_path: Path, redis_port: int, phases: list[dict]) -> dict:
        """Rows stored == 200s received (+ at most what a client abandoned in flight) == queued messages."""
        answered_200 = sum(p["ok"] for p in phases)
        abandoned = sum(p["unanswered"] for p in phases)
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            by_status = dict(conn.execute("SELECT status, count(*) FROM events GROUP BY status").fetchall())
        client = redis.Redis(host=HOST, port=redis_port, db=REDIS_DB[mode])
        queued = client.llen("dramatiq:events")
        client.close()
        extra = stored - answered_200
        ok = 0 <= extra <= abandoned and queued == stored
        check = {
            "stored_rows": stored,
            "rows_by_status": by_status,
            "answered_200": answered_200,
            "abandoned_in_flight": abandoned,
            "stored_minus_answered": extra,
            "queued_in_redis": queued,
            "ok": ok,
        }
        if not ok:
            self.errors.append(
                f"storage check {mode}: {stored} rows stored, {answered_200} answered 200, "
                f"{abandoned} abandoned in flight, {queued} queued in Redis"
            )
        return check

    def measure_receiver(self, mode: str, redis_port: int, open_rate: float) -> dict:
        args = self.args
        say(f"receiver, SQLITE_SYNCHRONOUS={mode}: migrate and start")
        target, db_path = self.start_receiver(mode, redis_port)
        out: dict = {"sqlite_synchronous": mode}
        out["warmup"] = self.warm_up(target)
        warm_rate = max(out["warmup"]["throughput_per_s"], 50.0)
        # Enough unique webhooks for three times the warm-up's pace: the receiver must never see a
        # replayed id in the measured run (a duplicate skips the commit and would flatter it).
        pool = math.ceil(args.pool_factor * warm_rate * args.duration) + 10 * args.connections
        out["closed_loop"] = self.closed_loop(target, pool, allow_wrap=False)
        time.sleep(0.5)  # requests wrk abandoned at its deadline finish on the server

        say(f"{target.label}: open loop at {open_rate:,.0f}/s for {args.open_duration:g} s")
        out["open_loop_at_baseline_rate"] = self.open_loop(
            target, open_rate, args.open_duration, f"{target.label} open loop {open_rate:.0f}/s"
        )
        time.sleep(0.5)
        own_rate = max(1.0, SUSTAINABLE_FRACTION * out["closed_loop"]["throughput_per_s"])
        say(f"{target.label}: open loop at {own_rate:,.0f}/s (80% of its own closed-loop rate) "
            f"for {args.open_duration:g} s")  # fmt: skip
        out["open_loop_at_own_80pct"] = self.open_loop(
            target, own_rate, args.open_duration, f"{target.label} open loop {own_rate:.0f}/s"
        )
        time.sleep(0.5)
        self.procs.stop(target.proc_name)  # graceful: every accepted request has committed
        phases = ["warmup", "closed_loop", "open_loop_at_baseline_rate", "open_loop_at_own_80pct"]
        out["storage_check"] = self.storage_check(mode, db_path, redis_port, [out[p] for p in phases])
        return out


# --- the run -----------------------------------------------------------------------------------------


def start_redis(procs: Processes, workdir: Path) -> int:
    server = shutil.which("redis-server")
    if server is None:
        raise SetupError("redis-server is not installed (Debian/Ubuntu: apt-get install -y redis-server)")
    port = free_port()
    procs.start("redis", [
        server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--protected-mode", "yes",
    ])  # fmt: skip
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or procs.running["redis"].poll() is not None:
                raise SetupError(f"redis-server did not start:\n{procs.log_tail('redis')}") from None
            time.sleep(0.05)
    client.close()
    return port


def machine_info(wrk: str | None) -> dict:
    import uvicorn

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    redis_version = None
    if shutil.which("redis-server"):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
        redis_version = out[2].removeprefix("v=") if len(out) > 2 else None
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401

        impl = "uvloop + httptools"
    except ImportError:
        impl = "uvicorn auto (uvloop/httptools not both installed)"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "uvicorn": f"{uvicorn.__version__} ({impl})",
        "wrk": wrk_version(wrk) if wrk else None,
        "redis_server": redis_version,
        "git_commit": commit or None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def reproduce_command(args: argparse.Namespace) -> str:
    script = Path(__file__).resolve().relative_to(REPO_ROOT)
    parts = [
        ".venv/bin/python", str(script),
        "--duration", f"{args.duration:g}", "--connections", str(args.connections),
        "--open-duration", f"{args.open_duration:g}", "--open-connections", str(args.open_connections),
        "--control-duration", f"{args.control_duration:g}", "--warmup", str(args.warmup),
        "--modes", ",".join(args.modes), "--client", args.client, "--wrk-threads", str(args.wrk_threads),
        "--pool-factor", f"{args.pool_factor:g}",
    ]  # fmt: skip
    if args.wait_quiet:
        parts += ["--wait-quiet", f"{args.wait_quiet:g}"]
    if args.json:
        parts.append("--json")
    return f"cd {shlex.quote(str(REPO_ROOT))} && {shlex.join(parts)}"


def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    procs = Processes(workdir)
    report: dict = {"command": reproduce_command(args), "workdir": str(workdir) if args.keep else None}
    try:
        wrk = find_wrk(args.client)
        report["machine"] = machine_info(wrk)
        bench = Bench(args, procs, workdir, wrk)
        if wrk is None and args.client == "auto":
            bench.warnings.append("wrk is not installed: the closed loop used the Python client (slower)")
        redis_port = start_redis(procs, workdir)
        say(f"redis-server on {HOST}:{redis_port}; work directory {workdir}")

        # Baseline
        env = clean_env()
        env.update(
            REDIS_URL=f"redis://{HOST}:{redis_port}/{REDIS_DB['baseline']}",
            STRIPE_WEBHOOK_SECRET=TEST_SECRET,
            BASELINE_REDIS_KEY="baseline:events",
        )
        base_port = free_port()
        procs.start("baseline", [python_executable(), "-m", "tests.bench.baseline_app", "--host", HOST,
                                 "--port", str(base_port)], env)  # fmt: skip
        wait_http_ok(procs, "baseline", base_port)
        baseline = Target("baseline", base_port, "baseline")
        base: dict = {"warmup": bench.warm_up(baseline)}
        base["closed_loop"] = bench.closed_loop(baseline, BASELINE_POOL, allow_wrap=True)
        time.sleep(0.5)
        base_rate = base["closed_loop"]["throughput_per_s"]
        open_rate, control, sustained = bench.control_rate(baseline, base_rate)
        if not sustained:
            bench.warnings.append(
                f"the baseline did not sustain any tried open-loop rate down to {open_rate:,.0f}/s: the "
                "receiver's open-loop figure is at a rate this machine could not serve cleanly"
            )
        base["open_loop_control"] = control
        procs.stop("baseline")
        report["baseline"] = base
        report["open_loop_rate"] = {
            "baseline_closed_loop_rate_per_s": base_rate,
            "used_rate_per_s": round(open_rate, 1),
            "reduced": open_rate < base_rate,
            "baseline_sustained_it": sustained,
        }

        report["receiver"] = {}
        for mode in args.modes:
            report["receiver"][mode] = bench.measure_receiver(mode, redis_port, open_rate)

        report["verdict"] = verdict(report)
        report["webhook_body_bytes"] = {
            "mean": round(sum(bench.body_sizes) / len(bench.body_sizes)) if bench.body_sizes else None,
            "min": min(bench.body_sizes, default=None),
            "max": max(bench.body_sizes, default=None),
        }
        report["errors"] = bench.errors
        busy = bench.foreign_warning()
        report["warnings"] = bench.warnings + ([busy] if busy else [])
        return report
    finally:
        procs.stop_all()
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def verdict(report: dict) -> dict:
    base = report["baseline"]["closed_loop"]["throughput_per_s"]
    out = {}
    for mode, r in report["receiver"].items():
        ratio = r["closed_loop"]["throughput_per_s"] / base if base else 0.0
        at_rate = r["open_loop_at_baseline_rate"]
        p99 = at_rate["latency_ms"]["p99"]
        out[mode] = {
            "ratio": round(ratio, 3),
            "ratio_ok": ratio >= TARGET_RATIO,
            "p99_at_rate_ms": p99,
            "p99_at_rate_ok": bool(not at_rate["saturated"] and p99 is not None and p99 < TARGET_P99_MS),
        }
    return out


# --- the report ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _table(rows: list[list[str]], align: str) -> list[str]:
    """Rows of cells as aligned text ("l"/"r" per column); the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))]
    out = []
    for row in rows:
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True)]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def render(report: dict) -> str:
    m = report["machine"]
    lines = [
        "Stripe webhook receiver benchmark (all on 127.0.0.1)",
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, uvicorn {m['uvicorn']}, "
        f"redis-server {m['redis_server']}, {m['wrk'] or 'no wrk (Python client)'}, commit {m['git_commit']}",
        f"webhooks: charge.succeeded, {report['webhook_body_bytes']['mean']:,} bytes on average, "
        "unique ids, signed just before sending",
        "CPU columns: % of one core during the phase; 'other' is the machine's CPU use minus this run's",
        "",
    ]

    closed = [("baseline (raw ASGI + LPUSH)", report["baseline"]["closed_loop"])]
    closed += [(f"receiver, SQLite {mode}", r["closed_loop"]) for mode, r in report["receiver"].items()]
    first = closed[0][1]
    lines.append(
        f"Closed loop ({first['tool']}, {first['connections']} connections, {first['duration_s']:.0f} s each)"
    )
    rows = [["", "webhooks/s", "p50 ms", "p99 ms", "max ms", "200s", "non-200", "errors", "server CPU",
             "other CPU"]]  # fmt: skip
    for label, r in closed:
        lat, cpu = r["latency_ms"], r["server_cpu_pct"]
        rows.append([
            label, f"{r['throughput_per_s']:,.0f}", _ms(lat["p50"]), _ms(lat["p99"]), _ms(lat["max"]),
            f"{r['ok']:,}", f"{r['non200']:,}", f"{r['socket_errors']:,}",
            "-" if cpu is None else f"{cpu:.0f}%", _pct(r["cpu"]["other_processes_pct_of_one_core"]),
        ])  # fmt: skip
    lines += _table(rows, "lrrrrrrrrr")
    for mode, v in report["verdict"].items():
        mark = "PASS" if v["ratio_ok"] else "FAIL"
        ratio = f"{v['ratio']:.2f} (target >= {TARGET_RATIO})"
        lines.append(f"  ratio receiver {mode} / baseline: {ratio}  {mark}")
    lines.append("")

    rate = report["open_loop_rate"]
    lines.append("Open loop (constant arrival rate; latency counted from when each request was due)")
    if rate["reduced"]:
        closed_rate, used = rate["baseline_closed_loop_rate_per_s"], rate["used_rate_per_s"]
        lines.append(f"  Even the baseline does not sustain its closed-loop rate ({closed_rate:,.0f}/s)")
        lines.append("  open-loop on this machine (client, Redis and server share its CPUs); the receiver is")
        lines.append(
            f"  measured at {used:,.0f}/s, the highest rate the baseline sustained"
            + ("." if rate["baseline_sustained_it"] else " (it did not even sustain that one: see warnings).")
        )
    rows = [["", "offered/s", "served/s", "p50 ms", "p99 ms", "max ms", "client CPU", "other CPU", ""]]

    def row(label: str, r: dict) -> list[str]:
        note = ""
        if r["saturated"]:
            note = f"SATURATED: stopped after {r['elapsed_s']:.1f} s, {r['not_sent']:,} never sent"
        elif r["client_limited"]:
            note = f"CLIENT-LIMITED: {r['client_limited_reason']}"
        lat = r["latency_ms"]
        return [
            label, f"{r['offered_rate_per_s'] or 0:,.0f}", f"{r['throughput_per_s']:,.0f}", _ms(lat["p50"]),
            _ms(lat["p99"]), _ms(lat["max"]), f"{r['client_cpu_pct']:.0f}%",
            _pct(r["cpu"]["other_processes_pct_of_one_core"]), note,
        ]  # fmt: skip

    for r in report["baseline"]["open_loop_control"]:
        rows.append(row(f"baseline at {r['target_rate_per_s']:,.0f}/s", r))
    for mode, r in report["receiver"].items():
        at_rate, own = r["open_loop_at_baseline_rate"], r["open_loop_at_own_80pct"]
        rows.append(row(f"receiver {mode} at {at_rate['target_rate_per_s']:,.0f}/s", at_rate))
        rows.append(row(f"receiver {mode} at {own['target_rate_per_s']:,.0f}/s (80% of its max)", own))
    lines += _table(rows, "lrrrrrrrl")
    for mode, v in report["verdict"].items():
        mark = "PASS" if v["p99_at_rate_ok"] else "FAIL"
        saturated = report["receiver"][mode]["open_loop_at_baseline_rate"]["saturated"]
        shown = "unbounded (saturated)" if saturated else f"{_ms(v['p99_at_rate_ms'])} ms"
        lines.append(
            f"  receiver {mode} p99 at {rate['used_rate_per_s']:,.0f}/s: {shown}  "
            f"(target < {TARGET_P99_MS:.0f} ms)  {mark}"
        )
    lines.append("")

    lines.append("Storage check (the receiver's events table after it stopped, against the answers received)")
    for mode, r in report["receiver"].items():
        c = r["storage_check"]
        lines.append(
            f"  {mode}: {c['stored_rows']:,} rows = {c['answered_200']:,} answered 200 "
            f"+ {c['stored_minus_answered']:,} of the {c['abandoned_in_flight']:,} requests the clients "
            f"stopped waiting for; {c['queued_in_redis']:,} queued in Redis  "
            + ("OK" if c["ok"] else "MISMATCH")
        )
    lines.append("")

    lines += [f"WARNING: {warning}" for warning in report["warnings"]]
    if report["errors"]:
        lines.append("!" * 100)
        lines.append(f"!!! THIS RUN HAD {len(report['errors'])} ERROR(S): its figures are not valid")
        lines += [f"!!!   {error}" for error in report["errors"]]
        lines.append("!" * 100)
    lines.append(f"Reproduce: {report['command']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Whole seconds: wrk's -d takes no fractions.
    parser.add_argument("--duration", type=int, default=10, help="closed-loop seconds per app (10)")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections (16)")
    parser.add_argument("--open-duration", type=float, default=5.0, help="seconds per open-loop run (5)")
    parser.add_argument("--open-connections", type=int, default=64, help="open-loop connection cap (64)")
    parser.add_argument("--control-duration", type=float, default=3.0,
                        help="seconds per baseline open-loop control run (3)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=300, help="requests sent before measuring each app")
    parser.add_argument("--modes", default="FULL,NORMAL", help="SQLITE_SYNCHRONOUS values (FULL,NORMAL)")
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="closed-loop client: wrk (installed if missing and root), else Python",
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (1 leaves the other core of a 2-core machine to the server)",
    )
    parser.add_argument(
        "--pool-factor",
        type=float,
        default=3.0,
        help="unique webhooks made for the receiver, as a multiple of its warm-up pace",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measured phase, wait up to this long for other processes' CPU "
        f"use to drop under {FOREIGN_CPU_WARN_PCT:.0f}%% of a core (shared machines; 0)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    parser.add_argument("--check-targets", action="store_true", help="exit 3 when a target is missed")
    args = parser.parse_args(argv)
    args.modes = [m.strip().upper() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in ("FULL", "NORMAL") for m in args.modes):
        parser.error("--modes takes FULL and/or NORMAL")
    if min(args.duration, args.open_duration, args.control_duration, args.connections, args.warmup) <= 0:
        parser.error("durations, --connections and --warmup must be positive")
    # Webhooks are signed just before each phase and the receiver accepts them for 300 s.
    if args.wait_quiet + max(args.duration, args.open_duration) > 240:
        parser.error("--wait-quiet plus the longest phase must stay under 240 s (signature tolerance)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    try:
        report = run(args)
    except SetupError as exc:
        say(f"cannot run the benchmark: {exc}")
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP (Interrupted)
        say("interrupted; every process this run started has been stopped")
        return 130
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(report))
    if report["errors"]:
        return 1
    missed = [v for v in report["verdict"].values() if not (v["ratio_ok"] and v["p99_at_rate_ok"])]
    if args.check_targets and missed:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

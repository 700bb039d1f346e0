"""Two or more builds of the receiver against the baseline in one run, their closed-loop phases alternating.

receiver_bench.py measures the baseline and then the receiver a minute apart; on a shared machine the
load in between can move the ratio by more than a change is worth. This starts the baseline and one
receiver per build directory side by side (each its own SQLite file, synchronous=FULL, and Redis
database) and runs wrk against each in turn, --rounds times, so every round compares them under the
same load. Per phase it prints webhooks/s, the ratio to that round's baseline, the server's CPU per
webhook, the CPU of its busiest threads (the event loop and the event writer) and other processes'
CPU; then medians and ranges. A phase where other processes used more than 15% of a core is marked.

A build is a directory holding the repository, e.g. a worktree of another commit:
    git worktree add --detach /tmp/rx-before HEAD~1 && ln -s "$PWD/.venv" /tmp/rx-before/.venv
    .venv/bin/python tests/bench/receiver_ab.py --rounds 5 /tmp/rx-before .
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.bench import receiver_bench as rb  # noqa: E402


def thread_ticks(pid: int) -> dict[int, int]:
    """CPU ticks (user + system) of each thread of `pid`."""
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


def start_build(procs: rb.Processes, build: Path, index: int, redis_port: int, workdir: Path) -> rb.Target:
    env = rb.clean_env()
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / f'build{index}.db'}",
        REDIS_URL=f"redis://{rb.HOST}:{redis_port}/{3 + index}",
        STRIPE_WEBHOOK_SECRET=rb.TEST_SECRET,
        LOG_LEVEL="WARNING",
        SQLITE_SYNCHRONOUS="FULL",
    )
    python = str(build / ".venv" / "bin" / "python")
    migrate = subprocess.run(
        [python, "-m", "worker", "migrate"], cwd=build, env=env, capture_output=True, text=True
    )
    if migrate.returncode != 0:
        raise rb.SetupError(f"migrate failed in {build}:\n{migrate.stderr[-2000:]}")
    rb.REPO_ROOT = build  # Processes.start runs its children there: `python -m worker` imports that build
    try:
        name, port = f"build{index}", rb.free_port()
        procs.start(name, [python, "-m", "worker", "web", "--host", rb.HOST, "--port", str(port)], env)
    finally:
        rb.REPO_ROOT = REPO_ROOT
    rb.wait_http_ok(procs, name, port)
    return rb.Target(f"{build.resolve().name or build}", port, name)


def measure(bench: rb.Bench, procs: rb.Processes, target: rb.Target, pool: int, baseline: bool) -> dict:
    """One closed-loop phase, with the CPU of the server's threads over its middle."""
    pid = procs.running[target.proc_name].pid
    duration = bench.args.duration
    samples: dict = {}

    def sample() -> None:
        while "wrk" not in procs.running:
            time.sleep(0.02)
        time.sleep(min(1.0, duration / 4))
        samples["start"] = (time.monotonic(), thread_ticks(pid))
        time.sleep(duration / 2)
        samples["end"] = (time.monotonic(), thread_ticks(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = bench.closed_loop(target, pool, allow_wrap=baseline)
    sampler.join(5)
    threads = []
    if "end" in samples:
        (t0, before), (t1, after) = samples["start"], samples["end"]
        hz = os.sysconf("SC_CLK_TCK")
        for tid, ticks in after.items():
            pct = (ticks - before.get(tid, 0)) / hz / (t1 - t0) * 100
            if pct >= 1.0:
                threads.append(("main" if tid == pid else f"thread {tid}", round(pct, 1)))
        threads.sort(key=lambda item: -item[1])
    return {
        "per_s": result["throughput_per_s"],
        "server_cpu_pct": result["server_cpu_pct"],
        "foreign_pct": result["cpu"].get("other_processes_pct_of_one_core"),
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "threads": threads,
    }


def spread(values: list[float], digits: int = 0) -> str:
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", type=Path, help="repository directories, each with its .venv")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per closed-loop phase (6)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    bench_args = rb.parse_args(
        ["--modes", "FULL", "--duration", str(args.duration), "--connections", str(args.connections),
         "--wait-quiet", str(args.wait_quiet)]
    )  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="receiver-ab-"))
    procs = rb.Processes(workdir)
    try:
        wrk = rb.find_wrk("auto")
        if wrk is None:
            raise rb.SetupError("wrk is not installed")
        bench = rb.Bench(bench_args, procs, workdir, wrk)
        redis_port = rb.start_redis(procs, workdir)
        env = rb.clean_env()
        env.update(
            REDIS_URL=f"redis://{rb.HOST}:{redis_port}/{rb.REDIS_DB['baseline']}",
            STRIPE_WEBHOOK_SECRET=rb.TEST_SECRET,
            BASELINE_REDIS_KEY="baseline:events",
        )
        base_port = rb.free_port()
        procs.start("baseline", [rb.python_executable(), "-m", "tests.bench.baseline_app", "--host", rb.HOST,
                                 "--port", str(base_port)], env)  # fmt: skip
        rb.wait_http_ok(procs, "baseline", base_port)
        targets = [rb.Target("baseline", base_port, "baseline")]
        targets += [start_build(procs, build, i, redis_port, workdir) for i, build in enumerate(args.builds)]
        for target in targets:
            bench.warm_up(target)

        runs: dict[str, list[dict]] = {target.label: [] for target in targets}
        for round_number in range(args.rounds):
            for target in targets:
                is_baseline = target.label == "baseline"
                # Unique webhooks for a receiver (a duplicate skips the commit); 1.5x a fast build's pace.
                pool = rb.BASELINE_POOL if is_baseline else int(1.5 * 8000 * args.duration)
                phase = measure(bench, procs, target, pool, is_baseline)
                runs[target.label].append(phase)  # the baseline first: each round's ratios are to it
                phase["ratio"] = round(phase["per_s"] / runs["baseline"][-1]["per_s"], 3)
                busy = " BUSY" if (phase["foreign_pct"] or 0) > rb.FOREIGN_CPU_WARN_PCT else ""
                cpu_us = phase["server_cpu_pct"] * 1e4 / phase["per_s"] if phase["per_s"] else float("nan")
                threads = ", ".join(f"{name} {pct:.0f}%" for name, pct in phase["threads"][:3])
                print(
                    f"round {round_number + 1} {target.label:>12}: {phase['per_s']:8,.0f}/s  ratio "
                    f"{phase['ratio']:.3f}  {cpu_us:4.0f} µs CPU/webhook  p50 {phase['p50_ms']:.1f} ms  "
                    f"[{threads}]  others {phase['foreign_pct']:.0f}%{busy}  "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                time.sleep(0.5)
        print()
        for label, phases in runs.items():
            cpu = [p["server_cpu_pct"] * 1e4 / p["per_s"] for p in phases if p["per_s"]]
            print(
                f"{label:>12}: {spread([p['per_s'] for p in phases])}/s  ratio "
                f"{spread([p['ratio'] for p in phases], 3)}  CPU/webhook {spread(cpu)} µs"
            )
        if bench.errors:
            print("errors:", *bench.errors, sep="\n  ")
            return 1
        return 0
    except rb.SetupError as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

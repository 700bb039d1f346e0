"""`python -m worker run` (what `make run` runs): it stops in order, restarts a Redis that dies, and
never leaves a process behind, whether it stops normally, fails to start or is killed.

Each test starts the real command in a folder of its own, on free ports (PORT for the receiver,
REDIS_URL for the redis-server it starts), in a session of its own as a shell would start a job, so
that a Ctrl-C is SIGINT to that whole process group, as a terminal sends it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests import stripe_fixtures as sf
from tests.integration.stack import (
    PYTHON,
    REDIS_SERVER,
    ManagedProcess,
    Stack,
    free_port,
    needs_redis,
    wait_until,
)

pytestmark = [pytest.mark.integration, needs_redis]

START_SECONDS = 60.0


# --- processes, read from /proc ------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _running(pid: int, started: int) -> bool:
    """Whether that very process (not a later one with its pid) still runs (zombies do not)."""
    stat = _stat(pid)
    return stat is not None and stat[2] == started and stat[0] != "Z"


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live process below `root`."""
    parents: dict[int, list[int]] = {}
    stats = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z":
            stats[pid] = stat
            parents.setdefault(stat[1], []).append(pid)
    found, todo = {}, [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = stats[child][2]
            todo.append(child)
    return found


def _redis_servers_in(folder: Path) -> list[int]:
    """Live redis-servers working in `folder` (redis-server chdirs to its --dir)."""
    found = []
    for pid in _all_pids():
        try:
            exe, cwd = os.readlink(f"/proc/{pid}/exe"), os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if "redis" in Path(exe).name and Path(cwd) == folder.resolve():
            found.append(pid)
    return found


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _critical_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if '"level": "critical"' in line or "CRITICAL" in line]


# --- one `run` ------------------------------------------------------------------------------------------


class DevRun:
    def __init__(self, root: Path, env: dict[str, str], name: str = "run") -> None:
        self.root = root
        self.env = env
        self.web_port = int(env["PORT"])
        (root / "logs").mkdir(exist_ok=True)
        self.process = ManagedProcess(
            name, [PYTHON, "-m", "worker", "run"], env=env, cwd=root, log_dir=root / "logs"
        )
        self.seen: dict[int, int] = {}  # every descendant seen, for the checks and the clean-up

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.process.stderr_path.read_text(errors="replace") + self.process.stdout_path.read_text(
            errors="replace"
        )

    def children(self) -> dict[int, int]:
        found = _descendants(self.pid)
        self.seen.update(found)
        return found

    def redis_pid(self) -> int | None:
        pids = _redis_servers_in(self.root / "var" / "redis")
        return pids[0] if len(pids) == 1 else None

    def wait_ready(self) -> None:
        def ready() -> bool:
            text = self.output()
            if not all(mark in text for mark in ("[run] receiver on", "ready for action", "clock started")):
                return False
            try:
                return httpx.get(f"http://127.0.0.1:{self.web_port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, "`worker run` to be up", timeout=START_SECONDS, watch=[self.process])
        self.children()

    def ctrl_c(self) -> None:
        """What a terminal does: SIGINT to the foreground process group (the one `run` leads)."""
        self.children()
        os.killpg(self.pid, signal.SIGINT)

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.process.popen.wait(timeout)

    def left_behind(self) -> list[int]:
        return [pid for pid, started in self.seen.items() if _running(pid, started)]

    def clean_up(self) -> None:
        """After the test: stop `run` if it still runs, then anything it started that survived it."""
        with contextlib.suppress(Exception):
            if self.process.alive():
                self.children()
        self.process.stop(timeout=30)
        for pid in self.left_behind():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dev_run(tmp_path: Path) -> Iterator:
    runs: list[DevRun] = []

    def start(*, name: str = "run", **settings: str | None) -> DevRun:
        env = Stack.base_env(
            DATABASE_URL=f"sqlite:///{tmp_path / 'worker.db'}",
            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
            HOST="127.0.0.1",
            PORT=str(free_port()),
            STRIPE_WEBHOOK_SECRET=sf.TEST_SECRET,
            WORKER_PROCESSES="1",
            WORKER_THREADS="2",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
        )
        if runs:  # the same folder's next run: the same ports
            env.update({k: runs[-1].env[k] for k in ("REDIS_URL", "PORT") if k in runs[-1].env})
        for key, value in settings.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        run = DevRun(tmp_path, env, name)
        runs.append(run)
        return run

    yield start
    for run in reversed(runs):
        run.clean_up()


def _redis_port(run: DevRun) -> int:
    return int(run.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])


# --- the tests ------------------------------------------------------------------------------------------


def test_ctrl_c_stops_web_and_worker_then_the_clock_then_redis_with_no_critical_line(dev_run):
    run = dev_run()
    run.wait_ready()
    redis_pid = run.redis_pid()
    assert redis_pid is not None and redis_pid in run.children()

    run.ctrl_c()

    assert run.wait_exit() == 0, run.output()[-3000:]
    output = run.output()
    assert _critical_lines(output) == []
    assert run.left_behind() == [], output[-3000:]
    assert not _answers(_redis_port(run))
    assert not (run.root / "var" / "redis" / "redis-server.pid").exists()
    # Each stopped cleanly (the worker was not killed), web and worker before the clock, the clock
    # before Redis.
    for mark in ("Finished server process", "Worker has been shut down", "clock stopped"):
        assert mark in output, f"no {mark!r} in the output:\n{output[-3000:]}"
    web_done = output.index("Finished server process")
    worker_done = output.rindex("Worker has been shut down")
    clock_done = output.index("clock stopped")
    assert max(web_done, worker_done) < clock_done, output[-3000:]
    redis_log = (run.root / "var" / "redis" / "redis-server.log").read_text()
    assert "User requested shutdown" in redis_log  # SIGTERM, after everything else had stopped


def test_a_redis_server_that_dies_is_restarted_and_the_stack_goes_on(dev_run):
    run = dev_run()
    run.wait_ready()
    old = run.redis_pid()
    assert old is not None

    os.kill(old, signal.SIGKILL)
    wait_until(
        lambda: run.redis_pid() not in (None, old) and _answers(_redis_port(run)),
        "a new redis-server",
        timeout=20,
        watch=[run.process],
    )

    output = run.output()
    assert "[run] redis-server exited (signal 9); restarting it" in output
    assert run.redis_pid() in run.children()  # started by `run`, like the first one

    # The worker reconnects: the critical lines it logged while Redis was away stop.
    def quiet_for_3_seconds() -> bool:
        before = len(_critical_lines(run.output()))
        time.sleep(3)
        return len(_critical_lines(run.output())) == before

    wait_until(quiet_for_3_seconds, "the worker to stop logging connection errors", timeout=30)
    # And an event goes all the way through: receiver, the new Redis, worker.
    document = sf.event("charge.succeeded", sf.charge("ch_after_restart"), event_id="evt_after_restart")
    body, headers = sf.signed(document)
    response = httpx.post(f"http://127.0.0.1:{run.web_port}/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text

    def status() -> str | None:
        with contextlib.closing(sqlite3.connect(run.root / "worker.db")) as connection:
            row = connection.execute("SELECT status FROM events WHERE id = 'evt_after_restart'").fetchone()
        return row[0] if row and row[0] == "done" else None

    wait_until(status, "the event to be applied", timeout=30, watch=[run.process])

    run.ctrl_c()
    assert run.wait_exit() == 0
    assert run.left_behind() == []


class _Listener:
    """A port something else (not Redis, not ours) listens on."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.port = self.socket.getsockname()[1]


@pytest.mark.parametrize("broken", ["database", "web port", "redis port"])
def test_a_failed_start_stops_what_it_started_and_leaves_no_redis_server(dev_run, tmp_path, broken):
    listener = _Listener()
    (tmp_path / "not-a-file.db").mkdir()
    settings = {
        "database": {"DATABASE_URL": f"sqlite:///{tmp_path / 'not-a-file.db'}"},
        "web port": {"PORT": str(listener.port)},
        "redis port": {"REDIS_URL": f"redis://127.0.0.1:{listener.port}/0"},
    }[broken]
    run = dev_run(**settings)

    deadline = time.monotonic() + START_SECONDS
    while run.process.alive() and time.monotonic() < deadline:
        run.children()
        time.sleep(0.1)
    code = run.wait_exit(timeout=30)

    assert code != 0, run.output()[-3000:]
    assert run.left_behind() == [], run.output()[-3000:]
    assert _redis_servers_in(tmp_path / "var" / "redis") == []
    assert not (tmp_path / "var" / "redis" / "redis-server.pid").exists()
    listener.socket.close()


def test_when_run_is_killed_its_children_stop_too(dev_run):
    run = dev_run()
    run.wait_ready()
    children = run.children()
    assert len(children) >= 4  # redis-server, web, the dramatiq main process and its worker, the clock

    os.kill(run.pid, signal.SIGKILL)

    wait_until(lambda: run.left_behind() == [], "every child of the killed `run` to stop", timeout=30)
    assert _redis_servers_in(run.root / "var" / "redis") == []


def test_a_redis_server_an_earlier_run_left_behind_is_stopped_and_not_reused(dev_run, tmp_path):
    """A redis-server working in var/redis whose `run` is gone (killed while the server could not act
    on it, or an older `run` that failed to start) is stopped; the new run starts its own."""
    redis_dir = tmp_path / "var" / "redis"
    redis_dir.mkdir(parents=True)
    port = free_port()
    argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(redis_dir), "--save", "",
            "--appendonly", "yes", "--protected-mode", "yes", "--loglevel", "warning"]  # fmt: skip
    leftover = ManagedProcess("leftover", argv, env=dict(os.environ), cwd=redis_dir, log_dir=tmp_path)
    try:
        wait_until(lambda: _answers(port), "the left-over redis-server", watch=[leftover])
        redis.Redis(port=port).set("from-the-last-run", "kept")  # its data is on disk (appendonly)

        run = dev_run(REDIS_URL=f"redis://127.0.0.1:{port}/0")
        run.wait_ready()

        stopped = f"[run] stopping the redis-server (pid {leftover.pid}) an earlier run left behind"
        assert stopped in run.output()
        assert not leftover.alive()
        assert run.redis_pid() not in (None, leftover.pid)
        assert redis.Redis(port=port).get("from-the-last-run") == b"kept"
        run.ctrl_c()
        assert run.wait_exit() == 0
        assert run.left_behind() == []
    finally:
        leftover.stop()


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server")
def test_a_redis_it_did_not_start_is_used_only_when_redis_url_says_so(dev_run, tmp_path):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 6379)) == 0:
            pytest.skip("127.0.0.1:6379 is in use on this machine")
    foreign_dir = tmp_path / "foreign"
    foreign_dir.mkdir()
    foreign = ManagedProcess(
        "foreign-redis",
        [REDIS_SERVER, "--bind", "127.0.0.1", "--port", "6379", "--dir", str(foreign_dir), "--save", "",
         "--appendonly", "no"],
        env=dict(os.environ), cwd=foreign_dir, log_dir=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: _answers(6379), "the other redis-server", watch=[foreign])
        redis.Redis(port=6379).set("owner", "someone else")

        refused = dev_run(name="default", REDIS_URL=None)
        assert refused.wait_exit(timeout=START_SECONDS) == 1, refused.output()[-3000:]
        assert "REDIS_URL=redis://127.0.0.1:6379/0" in refused.output()
        assert foreign.alive() and _answers(6379)

        told = dev_run(name="told", REDIS_URL="redis://127.0.0.1:6379/0")
        told.wait_ready()
        assert "[run] using the Redis server at 127.0.0.1:6379 (REDIS_URL)" in told.output()
        told.ctrl_c()
        assert told.wait_exit() == 0
        assert foreign.alive() and redis.Redis(port=6379).get("owner") == b"someone else"
        assert told.left_behind() == []
    finally:
        foreign.stop()

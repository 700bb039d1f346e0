"""`python -m worker run`: the whole service on one machine with the embedded defaults.

Starts a local `redis-server` on 127.0.0.1 (installing Debian's package first when it is missing and
we are root), or uses the Redis at REDIS_URL when REDIS_URL is set and one answers there; brings the
SQLite schema up to date; then runs the `web`, `worker` and `clock` processes of the Procfile.

What it guarantees about its children:

- They run in one process group of their own, which `run` owns: a Ctrl-C in the terminal reaches
  `run` alone, and `run` stops them in order: web and worker first, then the clock, Redis last (so a
  normal stop logs no connection errors). SIGINT, SIGTERM and SIGHUP all stop it this way; whatever
  is left of the group at the end (a worker process whose parent had to be killed) is killed.
- None outlives `run`: every start path, failed ones included, ends by stopping what was started; if
  `run` itself is killed, the kernel sends each child SIGTERM (PR_SET_PDEATHSIG). A redis-server left
  behind anyway (by an older version of `run`, or a `run` killed while its redis-server could not
  act on it) is known by its working folder, this folder's var/redis (only `run` starts one there),
  and the next `run` stops it before starting its own; `var/redis/redis-server.pid` names the
  current one and its `run`. While another `run` of this folder is running, `run` refuses to start.
  A Redis started by anything else is never stopped, and never used unless REDIS_URL says so.
- A local redis-server that dies is restarted on its port with its data (AOF in var/redis/), at most
  `REDIS_RESTARTS` times in `REDIS_RESTART_WINDOW_SECONDS`, each with a line saying so; after that,
  `run` stops everything and exits 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import redis

from worker.receiver.devsecret import DEV_SECRET_FILE, dev_webhook_secret
from worker.settings import get_settings

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
REDIS_DIR = Path("var/redis")
# Which redis-server this folder's `run` started, and which `run` that was (JSON).
REDIS_PIDFILE = REDIS_DIR / "redis-server.pid"
REDIS_LOG = REDIS_DIR / "redis-server.log"
REDIS_START_SECONDS = 10.0
REDIS_RESTARTS = 5
REDIS_RESTART_WINDOW_SECONDS = 600.0
STOP_SECONDS = 15.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StartFailed(Exception):
    """A start that cannot go on; `run` stops what it started, says why and exits 1."""


def _say(message: str) -> None:
    print(f"[run] {message}", file=sys.stderr, flush=True)


def _redis_reachable(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1).ping()
        return True
    except redis.RedisError:
        return False


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)), None
    )


def install_redis_server() -> str:
    """Install Debian's redis-server; only as root on a machine with apt-get."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(
            "redis-server is not installed; install it (e.g. `apt-get install redis-server`) or set REDIS_URL"
        )
    _say("redis-server not found; installing Debian's redis-server package")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)
    path = find_redis_server()
    if path is None:
        raise SystemExit("installing redis-server did not provide the redis-server program")
    return path


# --- children ---------------------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when `run` dies (Linux's PR_SET_PDEATHSIG).

    The signal follows the thread that forked the child, so children are only started from the main
    thread. Everything the child runs is looked up here, before the fork.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, pr_set_pdeathsig, sigterm = os.getpid(), 1, int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # `run` died before the request took effect
            os.kill(os.getpid(), sigterm)

    return preexec


def _pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.write(f"{name:>6} | {line.decode(errors='replace')}")
        sys.stderr.flush()
    stream.close()


class Child:
    """One child process; it is reaped only when the stack stops, so its pid (and, for the group's
    first process, the group id) cannot be reused by another process while `run` may signal it."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], group: int, quiet: bool) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=group,
            preexec_fn=_die_with_parent(),
        )
        self.pid = self.popen.pid
        self.pump: threading.Thread | None = None
        if not quiet:
            self.pump = threading.Thread(target=_pump, args=(name, self.popen.stdout), daemon=True)
            self.pump.start()

    def exit_status(self) -> str | None:
        """None while it runs; else how it ended ("code 1", "signal 9"), without reaping it."""
        if self.popen.returncode is not None:
            return f"code {self.popen.returncode}"
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return "gone"
        if info is None:
            return None
        if info.si_code == os.CLD_EXITED:
            return f"code {info.si_status}"
        return f"signal {info.si_status}"

    def alive(self) -> bool:
        return self.exit_status() is None

    def exit_code(self) -> int:
        status = self.exit_status() or ""
        return int(status.split()[1]) if status.startswith("code ") else 1

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


# --- the local redis-server -------------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, since: int, lines: int = 3) -> str:
    """The last `lines` lines written to `path` after offset `since`."""
    try:
        with open(path, "rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(f"   redis | {line}" for line in text.splitlines()[-lines:])


def _proc_link(pid: int, name: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/{name}")
    except OSError:
        return None


def _is_our_redis(pid: int) -> bool:
    """A live redis-server working in this folder's var/redis (redis-server chdirs to its --dir)."""
    exe, cwd = _proc_link(pid, "exe"), _proc_link(pid, "cwd")
    return bool(exe and cwd and "redis" in Path(exe).name and Path(cwd) == REDIS_DIR.resolve())


def _is_a_run(pid: int) -> bool:
    """A live `worker run` process (another `make run` in this folder)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _proc_link(pid, "exe") is not None and b"run" in args and any(b"worker" in a for a in args)


def _parent(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def _leftover_redis_servers() -> list[int]:
    """The redis-servers working in this folder's var/redis: only a `run` of this folder starts those."""
    if not os.path.isdir("/proc"):  # not Linux: nothing to go by
        return []
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and _is_our_redis(int(name))]


def stop_leftover_redis() -> None:
    """Stop the redis-servers an earlier `run` of this folder left behind (a `run` that was killed
    while its redis-server could not act on it, or an older version of `run`); refuse to start while
    another `run` of this folder is running."""
    owners = [_parent(pid) for pid in _leftover_redis_servers()]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        owners.append(int(json.loads(REDIS_PIDFILE.read_text())["run_pid"]))
    for owner in owners:
        if owner is not None and owner not in (1, os.getpid()) and _is_a_run(owner):
            raise StartFailed(
                f"another `python -m worker run` (pid {owner}) is running in this folder; stop it first"
            )
    for pid in _leftover_redis_servers():
        _say(f"stopping the redis-server (pid {pid}) an earlier run left behind")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped process takes SIGTERM only once it runs
        deadline = time.monotonic() + STOP_SECONDS
        while _is_our_redis(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_our_redis(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
    REDIS_PIDFILE.unlink(missing_ok=True)


def redis_port_to_start(url: str, *, explicit: bool) -> int | None:
    """The loopback port to start our redis-server on, or None to use the Redis at `url`.

    Without REDIS_URL (`explicit`), the default 127.0.0.1:6379 is ours alone: a server already there
    was not started by this run (ours from an earlier run was stopped just before), so it is not used.
    """
    parsed = urlparse(url)
    port = parsed.port or 6379
    where = f"{parsed.hostname}:{port}"
    if explicit and _redis_reachable(url):
        _say(f"using the Redis server at {where} (REDIS_URL)")
        return None
    if parsed.hostname not in LOOPBACK_HOSTS:
        raise StartFailed(f"Redis at {where} is unreachable; start it or fix REDIS_URL")
    if not explicit and _port_in_use(port):
        raise StartFailed(
            f"127.0.0.1:{port} is taken by a server this run did not start. To use that Redis, set "
            f"REDIS_URL=redis://127.0.0.1:{port}/0; to run a local one beside it, set REDIS_URL to a "
            "free port (e.g. redis://127.0.0.1:6390/0); or stop it"
        )
    return port


# --- the stack --------------------------------------------------------------------------------------


class DevStack:
    def __init__(self, env: dict[str, str], stopping: threading.Event) -> None:
        self.env = env
        self.stopping = stopping
        self.group = 0  # the children's process group: the first child's pid once it is started
        self.children: list[Child] = []
        self.redis: Child | None = None
        self.redis_url = ""
        self.redis_port = 0
        self.redis_log_offset = 0
        self.restarts: deque[float] = deque()

    def spawn(self, name: str, argv: list[str], *, quiet: bool = False) -> Child:
        child = Child(name, argv, env=self.env, group=self.group, quiet=quiet)
        if not self.group:
            self.group = child.pid
        self.children.append(child)
        return child

    def start_redis(self, url: str, port: int) -> None:
        binary = find_redis_server() or install_redis_server()
        REDIS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.redis_url, self.redis_port = url, port
        argv = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(REDIS_DIR.resolve()),
            "--appendonly", "yes", "--save", "", "--protected-mode", "yes", "--loglevel", "warning",
            "--logfile", str(REDIS_LOG.resolve()),
        ]  # fmt: skip
        self.redis_log_offset = _size(REDIS_LOG)
        self.redis = self.spawn("redis", argv, quiet=True)
        # Written at once, so that a `run` killed from here on leaves a redis-server the next one knows.
        REDIS_PIDFILE.write_text(json.dumps({"pid": self.redis.pid, "run_pid": os.getpid(), "port": port}))
        deadline = time.monotonic() + REDIS_START_SECONDS
        while not _redis_reachable(url):
            if not self.redis.alive() or time.monotonic() > deadline:
                said = _tail(REDIS_LOG, self.redis_log_offset)
                raise StartFailed(
                    f"the local redis-server did not start on 127.0.0.1:{port} (is the port taken?)"
                    + (f"; it said ({REDIS_LOG}):\n{said}" if said else "")
                )
            if self.stopping.wait(0.1):
                return

    def restart_redis(self) -> bool:
        """Start the local redis-server again after it died; False when it died too often."""
        assert self.redis is not None
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > REDIS_RESTART_WINDOW_SECONDS:
            self.restarts.popleft()
        status = self.redis.exit_status()
        said = _tail(REDIS_LOG, self.redis_log_offset)
        if said:
            _say(f"redis-server's last words ({REDIS_LOG}):\n{said}")
        if len(self.restarts) >= REDIS_RESTARTS:
            _say(
                f"redis-server exited ({status}) after {REDIS_RESTARTS} restarts in "
                f"{REDIS_RESTART_WINDOW_SECONDS / 60:g} minutes; stopping everything"
            )
            return False
        self.restarts.append(now)
        _say(
            f"redis-server exited ({status}); restarting it on 127.0.0.1:{self.redis_port} "
            f"(restart {len(self.restarts)} of at most {REDIS_RESTARTS} in "
            f"{REDIS_RESTART_WINDOW_SECONDS / 60:g} minutes)"
        )
        if self.stopping.wait(min(4.0, 0.25 * 2 ** (len(self.restarts) - 1))):
            return True
        try:
            self.start_redis(self.redis_url, self.redis_port)
        except StartFailed as exc:
            _say(str(exc))
            self.redis.signal(signal.SIGKILL)  # dead for sure: the next turn counts another restart
        return True

    def stop(self) -> None:
        """Web and worker first, then the clock, Redis last; then whatever is left of the group."""
        named = {child.name: child for child in self.children}
        redis_servers = [c for c in self.children if c.name == "redis"]
        for stage in (
            [named.get("web"), named.get("worker")],
            [named.get("clock")],
            redis_servers,
        ):
            live = [child for child in stage if child is not None and child.alive()]
            for child in live:
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_SECONDS
            for child in live:
                if not child.wait_gone(max(0.0, deadline - time.monotonic())):
                    _say(f"{child.name} did not stop within {STOP_SECONDS:g} s; killing it")
                    child.signal(signal.SIGKILL)
                    child.wait_gone(5)
        if self.group:
            # Nothing of ours is reaped yet, so the group id is still ours.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.group, signal.SIGKILL)
        for child in self.children:
            child.reap()
        if self.redis is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                if json.loads(REDIS_PIDFILE.read_text())["run_pid"] == os.getpid():
                    REDIS_PIDFILE.unlink()
        for child in self.children:
            if child.pump is not None:
                child.pump.join(timeout=2)


def run(*, processes: int | None = None, threads: int | None = None) -> int:
    settings = get_settings()
    env = dict(os.environ)
    stopping = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stopping.set())
        for sig in STOP_SIGNALS
        if signal.getsignal(sig) is not signal.SIG_IGN  # under nohup, a hangup stops nothing
    }
    stack = DevStack(env, stopping)
    try:
        if not settings.webhook_secrets():
            env["DEV_MODE"] = "1"
            dev_webhook_secret()
            _say(
                f"DEV_MODE: no STRIPE_WEBHOOK_SECRET set; signing secret generated in {DEV_SECRET_FILE} "
                "(use it with `stripe listen` or to sign test events)"
            )
        stop_leftover_redis()
        explicit = any(name.upper() == "REDIS_URL" for name in os.environ)
        port = redis_port_to_start(settings.redis_url, explicit=explicit)
        if port is not None:
            stack.start_redis(settings.redis_url, port)
            _say(f"started redis-server on 127.0.0.1:{port} (data in {REDIS_DIR})")

        from models.migrate import upgrade
        from worker import runtime

        if not stopping.is_set():
            upgrade(runtime.database())

        worker_args = ["worker"]
        if processes:
            worker_args += ["--processes", str(processes)]
        if threads:
            worker_args += ["--threads", str(threads)]
        for name, args in {"web": ["web"], "worker": worker_args, "clock": ["clock"]}.items():
            if stopping.is_set():
                break
            stack.spawn(name, [sys.executable, "-m", "worker", *args])
        else:
            _say(
                f"receiver on http://{settings.host}:{settings.port}/webhooks/stripe; Ctrl-C stops everything"
            )
        others = [child for child in stack.children if child.name != "redis"]
        while not stopping.is_set():
            if stack.redis is not None and not stack.redis.alive() and not stack.restart_redis():
                return 1
            dead = next((child for child in others if not child.alive()), None)
            if dead is not None:
                _say(f"{dead.name} exited ({dead.exit_status()}); stopping the others")
                return dead.exit_code() or 1
            stopping.wait(0.5)
        _say("stopping: web and worker, then the clock, then Redis")
        return 0
    except StartFailed as exc:
        _say(str(exc))
        return 1
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

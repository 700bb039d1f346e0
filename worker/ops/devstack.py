"""`python -m worker run`: the whole service on one machine with the embedded defaults.

Finds Redis at REDIS_URL, or starts a local `redis-server` on 127.0.0.1 (installing Debian's package
first when it is missing and we are root), brings the SQLite schema up to date, then runs the `web`,
`worker` and `clock` processes of the Procfile and stops them all together on Ctrl-C or when one dies.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

from worker.receiver.devsecret import DEV_SECRET_FILE, dev_webhook_secret
from worker.settings import get_settings

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
REDIS_DIR = Path("var/redis")


def _redis_reachable(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        return True
    except redis.RedisError:
        return False


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
    print("[run] redis-server not found; installing Debian's redis-server package", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)
    path = find_redis_server()
    if path is None:
        raise SystemExit("installing redis-server did not provide the redis-server program")
    return path


def start_redis(url: str) -> subprocess.Popen | None:
    """Return None when Redis is already up; otherwise start a local one for this run."""
    if _redis_reachable(url):
        print(
            f"[run] using the Redis server at {urlparse(url).hostname}:{urlparse(url).port or 6379}",
            file=sys.stderr,
        )
        return None
    parsed = urlparse(url)
    if parsed.hostname not in LOOPBACK_HOSTS:
        raise SystemExit(f"Redis at {parsed.hostname} is unreachable; start it or fix REDIS_URL")
    binary = find_redis_server() or install_redis_server()
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(parsed.port or 6379),
            "--dir",
            str(REDIS_DIR.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _redis_reachable(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the local redis-server did not start (is the port taken?)")
        time.sleep(0.1)
    print(
        f"[run] started redis-server on 127.0.0.1:{parsed.port or 6379} (data in {REDIS_DIR})",
        file=sys.stderr,
    )
    return process


def _pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.write(f"{name:>6} | {line.decode(errors='replace')}")
    stream.close()


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def run(*, processes: int | None = None, threads: int | None = None) -> int:
    settings = get_settings()
    env = dict(os.environ)
    if not settings.webhook_secrets():
        env["DEV_MODE"] = "1"
        dev_webhook_secret()
        print(
            f"[run] DEV_MODE: no STRIPE_WEBHOOK_SECRET set; signing secret generated in {DEV_SECRET_FILE} "
            "(use it with `stripe listen` or to sign test events)",
            file=sys.stderr,
        )
    redis_process = start_redis(settings.redis_url)

    from models.migrate import upgrade
    from worker import runtime

    upgrade(runtime.database())

    worker_args = ["worker"]
    if processes:
        worker_args += ["--processes", str(processes)]
    if threads:
        worker_args += ["--threads", str(threads)]
    commands = {"web": ["web"], "worker": worker_args, "clock": ["clock"]}
    children: list[subprocess.Popen] = []
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        for name, args in commands.items():
            child = subprocess.Popen(
                [sys.executable, "-m", "worker", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            children.append(child)
            threading.Thread(target=_pump, args=(name, child.stdout), daemon=True).start()
        print(
            f"[run] receiver on http://{settings.host}:{settings.port}/webhooks/stripe; "
            "Ctrl-C stops everything",
            file=sys.stderr,
        )
        while not stopping.is_set():
            dead = [c for c in children if c.poll() is not None]
            if dead:
                print(
                    f"[run] a process exited (code {dead[0].returncode}); stopping the others",
                    file=sys.stderr,
                )
                return dead[0].returncode or 1
            stopping.wait(0.5)
        return 0
    finally:
        _stop(children)
        if redis_process is not None:
            _stop([redis_process])

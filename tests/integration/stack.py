"""The real stack the integration tests drive: redis-server, the receiver, a Dramatiq worker, the CLI.

Every process writes its stdout and stderr to files under the session's temporary directory (never to a
pipe nobody reads), so a failing wait can show the tail of what a process said, and the secrets test can
read everything every process ever printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
from sqlalchemy.engine import make_url

from models.db import make_engine, normalise_url
from tests.stripe_fixtures import TEST_SECRET, signed
from worker.settings import Settings

PYTHON = sys.executable
REDIS_SERVER = shutil.which("redis-server") or next(
    (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)), None
)
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (e.g. `apt-get install redis-server`); "
    "the integration tests run a real one on a free port",
)

# Key names of dramatiq 2.2.1's Redis broker (dramatiq/brokers/redis/dispatch.lua): the queue is the list
# "$namespace:$queue_name" (ids), the message bodies live in the hash "$namespace:$queue_name.msgs" until
# acked, retries wait in "$namespace:$queue_name.DQ", rejected messages in the sorted set
# "$namespace:$queue_name.XQ".
QUEUE_KEY = "dramatiq:events"
DELAY_QUEUE_KEY = "dramatiq:events.DQ"
MESSAGE_HASHES = ("dramatiq:events.msgs", "dramatiq:events.DQ.msgs", "dramatiq:events.XQ.msgs")
DEAD_LETTER_KEY = "dramatiq:events.XQ"

WAIT_SECONDS = 30.0
EVENT_MAX_ATTEMPTS = 3
MAX_BODY_BYTES = 4096

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def now_iso(offset_seconds: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_seconds, UTC).isoformat().replace("+00:00", "Z")


class ManagedProcess:
    """One long-running child in its own process group (the dramatiq CLI forks worker processes)."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        index = len(list(log_dir.glob(f"{name}.*.stderr")))
        self.stdout_path = log_dir / f"{name}.{index}.stdout"
        self.stderr_path = log_dir / f"{name}.{index}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it still runs; never reaps it, so its process group id stays ours to signal."""
        if self.popen.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def tail(self, lines: int = 25) -> str:
        parts = []
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = path.read_text(errors="replace") if path.exists() else ""
            last = text.splitlines()[-lines:]
            parts.append(
                f"--- {self.name} (pid {self.pid}) {label}, last {len(last)} lines ---\n" + "\n".join(last)
            )
        return "\n".join(parts)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the group, SIGKILL whatever is left after `timeout` (or outlived its parent), reap."""
        if self.popen.returncode is None:  # not reaped yet: the group id cannot have been reused
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def kill(self) -> None:
        if self.popen.returncode is None:
            self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)


@dataclass
class CliResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"stdout of {self.argv} is not JSON ({exc}):\n{self}") from exc

    def __str__(self) -> str:
        command = " ".join(self.argv)
        stderr = self.stderr[-4000:]
        return f"$ {command}  -> exit {self.returncode}\n[stdout]\n{self.stdout}\n[stderr]\n{stderr}"


def wait_until(
    predicate: Callable[[], T | None],
    what: str,
    *,
    timeout: float = WAIT_SECONDS,
    watch: Iterable[ManagedProcess] = (),
    interval: float = 0.1,
) -> T:
    """Poll `predicate` until it returns something truthy; fail with the watched processes' output."""
    watch = list(watch)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        dead = [p for p in watch if not p.alive()]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(p.name for p in dead)} exited" if dead else f"timed out after {timeout:g}s"
            tails = "\n".join(p.tail() for p in watch)
            raise AssertionError(f"{reason} while waiting for {what}\n{tails}")
        time.sleep(interval)


class FakeStripe:
    """A local stand-in for the few Stripe GETs the app makes, recording each request.

    `GET /v1/events/{id}` answers from `events` (ids starting with `evt_unauthorized` get a 401 whose
    message echoes the Authorization header, as a careless proxy might); `GET /v1/{resource}/{id}` answers
    from `objects` (keyed by path) or 404; `GET /v1/{resource}` answers an empty list.
    """

    UNAUTHORIZED_PREFIX = "evt_unauthorized"

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                authorization = self.headers.get("Authorization", "")
                fake.requests.append((self.path, authorization))
                path = self.path.split("?")[0].rstrip("/")
                parts = path.split("/")[1:]  # ["v1", resource, id?]
                if len(parts) == 3 and parts[1] == "events":
                    event_id = parts[2]
                    if event_id in fake.events:
                        return self._reply(200, fake.events[event_id])
                    if event_id.startswith(FakeStripe.UNAUTHORIZED_PREFIX):
                        message = f"Invalid API Key provided: {authorization}"
                        return self._reply(
                            401, {"error": {"message": message, "type": "invalid_request_error"}}
                        )
                if len(parts) == 2 and parts[0] == "v1":
                    return self._reply(200, {"object": "list", "data": [], "has_more": False, "url": path})
                if path in fake.objects:
                    return self._reply(200, fake.objects[path])
                error = {"message": f"No such object: '{path}'", "type": "invalid_request_error",
                         "code": "resource_missing"}  # fmt: skip
                return self._reply(404, {"error": error})

            def _reply(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Request-Id", "req_fake")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-stripe", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Stack:
    """redis-server + `python -m worker web` + a dramatiq worker, sharing one SQLite file."""

    def __init__(self, root: Path, *, api_key: str, stripe_api_base: str) -> None:
        self.root = root
        self.log_dir = root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = root / "x.db"
        self.database_url = stack_database_url(self.db_path)
        self.backend = "postgresql" if self.database_url.startswith("postgres") else "sqlite"
        self._engine = None

        self.redis_port = free_port()
        self.web_port = free_port()
        self.api_key = api_key
        self.webhook_secret = TEST_SECRET
        self.processes: list[ManagedProcess] = []
        self.redis: ManagedProcess | None = None
        self.web: ManagedProcess | None = None
        self.worker: ManagedProcess | None = None
        self._cli_runs = 0
        self.env = self.base_env(
            DATABASE_URL=self.database_url,
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            STRIPE_WEBHOOK_SECRET=self.webhook_secret,
            STRIPE_API_KEY=api_key,
            STRIPE_API_BASE=stripe_api_base,
            STRIPE_MAX_ATTEMPTS="1",
            BROKER="redis",
            EVENT_MIN_BACKOFF_MS="100",
            EVENT_MAX_BACKOFF_MS="500",
            EVENT_MAX_ATTEMPTS=str(EVENT_MAX_ATTEMPTS),
            WEBHOOK_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.web_port}", timeout=10.0)

    @staticmethod
    def base_env(**settings: str) -> dict[str, str]:
        """os.environ minus every app setting (tests/conftest.py sets BROKER=stub), plus `settings`."""
        app_vars = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k.upper() not in app_vars}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(settings)
        return env

    # --- processes ---------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        process = ManagedProcess(name, argv, env=env or self.env, cwd=self.root, log_dir=self.log_dir)
        self.processes.append(process)
        return process

    def redis_client(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=2, socket_connect_timeout=1)

    def _redis_answers(self) -> bool:
        try:
            return bool(self.redis_client().ping())
        except redis.RedisError:
            return False

    def start_redis(self) -> None:
        assert REDIS_SERVER is not None
        argv = [
            REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", str(self.root),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning",
        ]  # fmt: skip
        self.redis = self._spawn("redis", argv)
        wait_until(
            self._redis_answers, f"redis-server to answer on port {self.redis_port}", watch=[self.redis]
        )

    def kill_redis(self) -> None:
        assert self.redis is not None
        self.redis.kill()
        wait_until(lambda: not self._redis_answers(), "redis-server to be gone", timeout=10)

    def start_web(self) -> None:
        argv = [PYTHON, "-m", "worker", "web", "--host", "127.0.0.1", "--port", str(self.web_port)]
        self.web = self._spawn("web", argv)

        def healthy() -> bool:
            try:
                return self.http.get("/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, f"the receiver to answer /healthz on port {self.web_port}", watch=[self.web])

    def start_worker(self) -> None:
        argv = [PYTHON, "-m", "dramatiq", "worker.jobs.actors", "--processes", "1", "--threads", "2"]
        self.worker = self._spawn("worker", argv)
        wait_until(
            lambda: "ready for action" in self.worker.stderr_path.read_text(errors="replace"),
            "the dramatiq worker process to be ready",
            watch=[self.worker],
        )

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.http.close()

    # --- the CLI -----------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60.0, **env: str) -> CliResult:
        """Run `python -m worker ARGS` to completion (bounded), keeping its output for the secrets test."""
        argv = [PYTHON, "-m", "worker", *args]
        self._cli_runs += 1
        try:
            done = subprocess.run(
                argv,
                env={**self.env, **env},
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"`{' '.join(argv)}` did not finish within {timeout:g}s:\n{exc.stderr}"
            ) from exc
        (self.log_dir / f"cli.{self._cli_runs}.stdout").write_text(done.stdout)
        (self.log_dir / f"cli.{self._cli_runs}.stderr").write_text(done.stderr)
        return CliResult(argv[1:], done.returncode, done.stdout, done.stderr)

    # --- HTTP --------------------------------------------------------------------------------------

    def post(self, body: bytes | Iterable[bytes], headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        return self.http.post("/webhooks/stripe", content=body, headers=headers, **kwargs)

    def post_event(self, document: dict[str, Any], **kwargs: Any) -> httpx.Response:
        body, headers = signed(document, self.webhook_secret)
        return self.post(body, headers, **kwargs)

    # --- the database, read directly ---------------------------------------------------------------

    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def _driver_sql(self, sql: str) -> str:
        # Tests write SQLite's `?` placeholders; psycopg takes `%s`.
        return sql.replace("?", "%s") if self.backend == "postgresql" else sql

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            result = connection.exec_driver_sql(self._driver_sql(sql), params or ())
            return [dict(row) for row in result.mappings().all()]

    def execute(self, sql: str) -> None:
        with self.engine.begin() as connection:
            connection.exec_driver_sql(sql)

    def fail_inserts(self, trigger: str, charge_id: str, when: str = "1=1") -> None:
        """Make inserts of one charge fail inside the database while `when` holds (a real DB fault)."""
        if self.backend == "sqlite":
            self.execute(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON charges WHEN NEW.id = '{charge_id}' AND ({when}) "
                "BEGIN SELECT RAISE(ABORT, 'simulated database failure'); END"
            )
            return
        self.execute(
            f"CREATE FUNCTION {trigger}_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.id = '{charge_id}' AND ({when}) THEN "
            # SQLSTATE 23000 (integrity violation): the same kind of error SQLite's RAISE(ABORT) gives.
            "RAISE EXCEPTION 'simulated database failure' USING ERRCODE = '23000'; END IF; RETURN NEW; END $$"
        )
        self.execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT ON charges FOR EACH ROW EXECUTE FUNCTION {trigger}_fn()"
        )

    def stop_failing(self, trigger: str) -> None:
        if self.backend == "sqlite":
            self.execute(f"DROP TRIGGER {trigger}")
        else:
            self.execute(f"DROP TRIGGER {trigger} ON charges")
            self.execute(f"DROP FUNCTION {trigger}_fn()")

    def close_database(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def events(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(ids)
        marks = ",".join("?" * len(ids))
        rows = self.query(f"SELECT * FROM events WHERE id IN ({marks})", tuple(ids))
        return {row["id"]: row for row in rows}

    def event(self, event_id: str) -> dict[str, Any] | None:
        return self.events([event_id]).get(event_id)

    def count(self, table: str, where: str = "1=1", params: tuple = ()) -> int:
        return self.query(f"SELECT count(*) AS n FROM {table} WHERE {where}", params)[0]["n"]

    def wait_for_events(
        self, ids: Iterable[str], statuses: Iterable[str] = ("done",), timeout: float = WAIT_SECONDS
    ) -> dict[str, dict[str, Any]]:
        """Wait until every event in `ids` has one of `statuses`; return their rows."""
        ids, statuses = list(ids), set(statuses)
        last: dict[str, dict[str, Any]] = {}

        def settled() -> dict[str, dict[str, Any]] | None:
            last.clear()
            last.update(self.events(ids))
            ok = len(last) == len(ids) and all(row["status"] in statuses for row in last.values())
            return dict(last) if ok else None

        try:
            return wait_until(
                settled, f"events {ids} to be {sorted(statuses)}", timeout=timeout, watch=self.running()
            )
        except AssertionError as exc:
            seen = {
                i: (last[i]["status"], last[i]["attempts"], last[i]["last_error"]) if i in last else None
                for i in ids
            }
            raise AssertionError(f"{exc}\nlast seen (status, attempts, last_error): {seen}") from None

    def running(self) -> list[ManagedProcess]:
        return [p for p in (self.redis, self.web, self.worker) if p is not None]

    # --- the queue -----------------------------------------------------------------------------------

    def queue_snapshot(self) -> dict[str, int]:
        """Every place a message for the events queue can be: waiting, delayed, in flight, rejected."""
        client = self.redis_client()
        snapshot = {QUEUE_KEY: client.llen(QUEUE_KEY), DELAY_QUEUE_KEY: client.llen(DELAY_QUEUE_KEY)}
        snapshot.update({name: client.hlen(name) for name in MESSAGE_HASHES})
        snapshot[DEAD_LETTER_KEY] = client.zcard(DEAD_LETTER_KEY)
        return snapshot


def stack_database_url(sqlite_path: Path, suffix: str = "stack") -> str:
    """SQLite at `sqlite_path`; or, on the PostgreSQL leg, a database of its own (`<db>_<suffix>`),
    emptied.

    Its own database keeps the long-lived stack processes clear of the unit tests' tables.
    """
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        return f"sqlite:///{sqlite_path}"
    url = make_url(normalise_url(base))
    name = f"{url.database}_{suffix}"
    admin = make_engine(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)

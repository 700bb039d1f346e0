"""A moment of read-only database must not become a permanent outage of the real `web` process.

SQLite opens a file it may not write read-only, silently, and that connection stays read-only after the
file is writable again. The receiver used to keep such connections in its pool: once the file had been
read-only while it connected, it answered 503 to every webhook until restarted, while /readyz said ready.

The receiver runs as its own process here (`python -m worker web` on 127.0.0.1, its own SQLite file, a
Redis port nobody listens on: events are still stored, as the README promises). Root ignores file modes,
so the process is started without CAP_DAC_OVERRIDE (`setpriv`), or as `nobody` when capabilities cannot
be dropped; a non-root run needs neither. The test is skipped, saying why, only when none of these works.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import stripe_fixtures as sf
from tests.integration.stack import PYTHON, ManagedProcess, Stack, free_port, wait_until

pytestmark = pytest.mark.integration

READ_ONLY, WRITABLE = 0o400, 0o600
RECOVERY_SECONDS = 15.0


@dataclass
class Unprivileged:
    """How to start a process that file modes apply to, and who must own its files."""

    name: str
    prefix: list[str]
    owner: tuple[int, int] | None = None  # (uid, gid) to hand the database folder to

    def give(self, *paths: Path) -> None:
        if self.owner is not None:
            for path in paths:
                os.chown(path, *self.owner)


def _denied_a_write(prefix: list[str], probe: Path) -> bool:
    """Whether a process started with `prefix` fails to append to `probe` (mode 0400)."""
    try:
        done = subprocess.run(
            [*prefix, "sh", "-c", f': >> "{probe}"'], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode != 0 and b"ermission denied" in done.stderr


def _runs_python(prefix: list[str], cwd: Path) -> bool:
    try:
        done = subprocess.run(
            [*prefix, PYTHON, "-c", "import worker.receiver.web"], cwd=cwd, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def unprivileged(folder: Path) -> Unprivileged:
    """The first way to run a process that a 0400 file is read-only to; pytest.skip when there is none."""
    if os.geteuid() != 0:
        return Unprivileged("this user (not root)", [])
    probe = folder / "mode-probe"
    probe.write_text("")
    probe.chmod(READ_ONLY)
    tried = []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        tried.append("setpriv is not installed")
    else:
        drop = [setpriv, "--inh-caps=-dac_override", "--bounding-set=-dac_override", "--"]
        if _denied_a_write(drop, probe):
            return Unprivileged("root without CAP_DAC_OVERRIDE", drop)
        tried.append("dropping CAP_DAC_OVERRIDE with setpriv did not make a 0400 file read-only")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            tried.append("there is no user nobody")
        else:
            as_nobody = [
                setpriv,
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--",
            ]
            os.chown(probe, nobody.pw_uid, nobody.pw_gid)
            if not _denied_a_write(as_nobody, probe):
                tried.append("setpriv --reuid=nobody did not make a 0400 file read-only")
            elif not _runs_python(as_nobody, folder):
                tried.append("user nobody cannot run this checkout's Python or reach the test's folder")
            else:
                return Unprivileged("user nobody", as_nobody, owner=(nobody.pw_uid, nobody.pw_gid))
    pytest.skip("no way to make a file read-only to the receiver: " + "; ".join(tried))


def database_files(db_path: Path) -> list[Path]:
    """The database and the -wal and -shm files SQLite keeps beside it (these copy the file's mode)."""
    return [p for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")) if p.exists()]


def set_mode(db_path: Path, mode: int) -> None:
    for path in database_files(db_path):
        path.chmod(mode)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[ManagedProcess, httpx.Client, Path]]:
    """A `web` process on its own SQLite file, started while that file is read-only to it."""
    runner = unprivileged(tmp_path)
    db_path = tmp_path / "readonly.db"
    env = Stack.base_env(
        DATABASE_URL=f"sqlite:///{db_path}",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nobody listens: enqueueing fails fast
        BROKER="redis",
        STRIPE_WEBHOOK_SECRET=sf.TEST_SECRET,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    migrated = subprocess.run(
        [PYTHON, "-m", "worker", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    runner.give(tmp_path, *database_files(db_path))
    set_mode(db_path, READ_ONLY)

    port = free_port()
    argv = [*runner.prefix, PYTHON, "-m", "worker", "web", "--host", "127.0.0.1", "--port", str(port)]
    (tmp_path / "logs").mkdir()
    web = ManagedProcess("web-readonly", argv, env=env, cwd=tmp_path, log_dir=tmp_path / "logs")
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)

    def healthy() -> bool:
        try:
            return http.get("/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, f"the receiver ({runner.name}) to answer /healthz", watch=[web])
        yield web, http, db_path
    finally:
        http.close()
        web.stop()


def test_a_receiver_that_connected_while_the_database_was_read_only_recovers_when_it_is_writable_again(
    receiver, uid: str
):
    web, http, db_path = receiver
    document = sf.event("charge.succeeded", sf.charge(f"ch_ro_{uid}"), event_id=f"evt_ro_{uid}")
    body, headers = sf.signed(document)  # Stripe resends the same signed body

    refused = http.post("/webhooks/stripe", content=body, headers=headers)
    assert (refused.status_code, refused.json()) == (503, {"error": "database unavailable, retry later"})
    not_ready = http.get("/readyz")
    assert not_ready.status_code == 503, f"/readyz said ready while no write can succeed: {not_ready.text}"
    reason = not_ready.json()["reason"]
    assert "readonly" in reason and "\n" not in reason, reason

    set_mode(db_path, WRITABLE)  # the disk is fixed; nobody restarts the receiver

    def stored() -> httpx.Response | None:
        response = http.post("/webhooks/stripe", content=body, headers=headers)  # Stripe's retries
        return response if response.status_code == 200 else None

    accepted = wait_until(
        stored, "a webhook to be accepted once the file is writable", timeout=RECOVERY_SECONDS, watch=[web],
        interval=1.0,
    )  # fmt: skip
    assert accepted.json() == {"received": True, "duplicate": False}
    ready = wait_until(
        lambda: (r := http.get("/readyz")).status_code == 200 and r, "/readyz to be ready again",
        timeout=RECOVERY_SECONDS, watch=[web],
    )  # fmt: skip
    assert ready.json()["status"] in ("ready", "degraded")  # degraded: Redis is down on purpose

    with sqlite3.connect(db_path) as connection:
        rows = connection.execute("SELECT id, status FROM events").fetchall()
    assert rows == [(document["id"], "received")]  # the write probe left nothing behind

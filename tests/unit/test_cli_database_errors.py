"""A mistyped, unreachable or unmigrated DATABASE_URL: one line that names the setting and the fix, with
the password masked and the exit code from the table, never a traceback or `no such table`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_cli_json import run
from worker import runtime

ROOT = Path(__file__).resolve().parents[2]
# Port 1 on the loopback interface: nothing listens there, so the connection is refused at once.
UNREACHABLE = "postgresql://shop_app:hunter2-secret@127.0.0.1:1/shop"
ON_CALL = [
    ["events"],
    ["events", "show", "evt_1"],
    ["replay", "--failed"],
    ["sweep"],
    ["sales"],
    ["plans"],
    ["notes", "--customer", "a@example.com"],
    ["alerts"],
    ["alerts", "ack", "1", "--by", "Yuki"],
    ["import-sales", "tests/data/sales_export_en.csv"],
]


@pytest.fixture
def database_url(monkeypatch):
    """Point DATABASE_URL at something and forget the process's database, as a fresh process would."""
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "5")

    def use(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        runtime.reset()

    yield use
    runtime.reset()


@pytest.mark.parametrize("argv", ON_CALL, ids=lambda argv: " ".join(argv))
def test_an_unreachable_database_is_one_line_naming_the_setting_with_the_password_masked(database_url, argv):
    database_url(UNREACHABLE)
    ran = run(*argv)
    assert ran.code == 4, ran
    assert ran.err == (
        "DATABASE_URL: cannot connect to postgresql://shop_app:***@127.0.0.1:1/shop (connection refused);"
        " check the host and port, and that PostgreSQL is running\n"
    )
    assert ran.out == ""


def test_an_unreachable_database_under_json_is_one_document(database_url):
    database_url(UNREACHABLE)
    ran = run("events", "--json", "show", "evt_1")
    assert ran.code == 4
    document = ran.json()
    assert document["exit_code"] == 4 and document["error"].startswith("DATABASE_URL: cannot connect to")
    assert "hunter2" not in ran.out + ran.err


def test_an_unmigrated_database_says_to_run_migrate_then_migrate_fixes_it(database_url, tmp_path):
    database_url(f"sqlite:///{tmp_path}/fresh.db")
    ran = run("alerts")
    assert ran.code == 3
    assert ran.err == (
        f"the database at sqlite:///{tmp_path}/fresh.db has no tables yet: run `python -m worker migrate`"
        " (or check DATABASE_URL)\n"
    )
    assert "no such table" not in ran.err
    migrated = run("migrate")
    assert migrated.code == 0 and "up to date" in migrated.err
    assert run("alerts").code == 0


def test_a_database_migrated_by_an_older_version_says_so(database_url, tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    database_url(f"sqlite:///{path}")
    ran = run("plans", "--json")
    assert ran.code == 3
    assert "missing tables this version needs" in ran.json()["error"]
    assert "python -m worker migrate" in ran.json()["error"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgress://shop_app:hunter2-secret@db/shop", "DATABASE_URL: postgress:// is not a database"),
        ("db.internal:5432/shop", "DATABASE_URL: not a database URL"),
        (
            "mysql://shop_app:hunter2-secret@db/shop",
            "DATABASE_URL: mysql:// needs a driver that is not installed",
        ),
    ],
)
def test_a_mistyped_database_url_is_a_configuration_error(database_url, url, says):
    database_url(url)
    ran = run("sales")
    assert ran.code == 3, ran
    assert ran.err.startswith(says) and ran.err.count("\n") == 1
    assert "hunter2" not in ran.err and "Traceback" not in ran.err


def test_the_real_program_prints_one_line_and_no_traceback(tmp_path):
    """As on a server: a fresh `python -m worker` process with nothing but its environment."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATABASE_URL": UNREACHABLE,
        "BROKER": "stub",
        "LOG_FORMAT": "text",
    }
    argv = [sys.executable, "-m", "worker"]
    human = subprocess.run([*argv, "events"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert human.returncode == 4, human
    assert human.stdout == "" and len(human.stderr.splitlines()) == 1, human.stderr
    assert human.stderr.startswith(
        "DATABASE_URL: cannot connect to postgresql://shop_app:***@127.0.0.1:1/shop"
    )
    as_json = subprocess.run(
        [*argv, "--json", "events"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert as_json.returncode == 4
    assert as_json.stderr == "" and json.loads(as_json.stdout)["exit_code"] == 4
    assert "hunter2" not in human.stderr + as_json.stdout


def test_the_console_script_runs_without_activating_the_virtualenv(tmp_path):
    script = Path(sys.executable).parent / "stripe-refund-worker"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no VIRTUAL_ENV, no venv on PATH
    shown = subprocess.run(
        [str(script), "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    for name in ("events", "replay", "sales", "import-sales", "reconcile", "notes", "alerts", "doctor"):
        assert name in shown.stdout
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/fresh.db"
    listed = subprocess.run(
        [str(script), "events", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 3 and "run `python -m worker migrate`" in json.loads(listed.stdout)["error"]

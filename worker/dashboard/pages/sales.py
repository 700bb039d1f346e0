"""The complete sales view, filtered and paged from the materialized `sales_rows`, and its CSV export."""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from datetime import date

from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from handlers.sales_view import SaleRow
from models.types import iso
from worker.dashboard import sales_query
from worker.dashboard.web import config_of, db_of, page, render
from worker.ops.exports import spreadsheet_cell

KINDS = ("one_time", "installment", "subscription")
STATUSES = ("paid", "refunded", "partially_refunded", "failed", "disputed", "dispute_lost")
SOURCES = ("funnel", "stripe", "webhook", "reconcile")
COLUMNS = [f.name for f in fields(SaleRow)]
PER_PAGE = 50


def value_of(row, name: str):
    return row[name] if isinstance(row, dict) else getattr(row, name, None)


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _choice(value: str | None, allowed) -> str | None:
    return value if value in allowed else None


def sales_filter(request: Request) -> sales_query.SalesFilter:
    params = request.query_params
    return sales_query.SalesFilter(
        customer=(params.get("customer") or "").strip()[:320] or None,
        product=(params.get("product") or "").strip()[:500] or None,
        date_from=_day(params.get("from")),
        date_to=_day(params.get("to")),
        kind=_choice(params.get("kind"), KINDS),
        status=_choice(params.get("status"), STATUSES),
        source=_choice(params.get("source"), SOURCES),
    )


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    return max(1, min(int(text), 1_000_000)) if text.isdigit() else 1


@page("viewer")
def sales(request: Request, user) -> Response:
    chosen = sales_filter(request)
    tz = config_of(request).timezone
    with db_of(request).reading() as session:
        result = sales_query.query_sales(
            session, chosen, page=_page_number(request), per_page=PER_PAGE, tz=tz
        )
    query = {k: v for k, v in request.query_params.items() if k != "page" and v}
    return render(
        request,
        "sales.html",
        user,
        active="sales",
        result=result,
        filter=chosen,
        params=query,
        kinds=KINDS,
        statuses=STATUSES,
        sources=SOURCES,
        value_of=value_of,
    )


@page("viewer")
def sales_csv(request: Request, user) -> Response:
    chosen = sales_filter(request)
    tz = config_of(request).timezone
    db = db_of(request)

    def lines():
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(COLUMNS)
        with db.reading() as session:
            for count, row in enumerate(sales_query.iter_sales_for_export(session, chosen, tz), start=1):
                values = [value_of(row, name) for name in COLUMNS]
                writer.writerow([spreadsheet_cell(iso(v) if hasattr(v, "astimezone") else v) for v in values])
                if count % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        iterate_in_threadpool(lines()),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="sales.csv"'},
    )


routes = [
    Route("/sales", sales, methods=["GET"]),
    Route("/sales.csv", sales_csv, methods=["GET"]),
]

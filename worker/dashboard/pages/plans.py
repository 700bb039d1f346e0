"""Payment plans and subscriptions from the materialized `plan_rows`, past_due first, paged."""

from __future__ import annotations

import math

from sqlalchemy import case, func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers.plans import PLAN_STATUSES
from models import PlanRowRecord
from worker.dashboard.web import db_of, page, render

PER_PAGE = 100
_plans = PlanRowRecord.__table__
# What needs a person first: money not coming in, then live plans, then ended ones (as `plans` sorts).
URGENCY = case(
    {"past_due": 0, "unpaid": 1, "active": 2, "cancelled": 3, "completed": 4}, value=_plans.c.status, else_=5
)


def query_plans(session, status: str | None, page_number: int, per_page: int = PER_PAGE):
    where = [_plans.c.status == status] if status else []
    counts = dict(session.execute(select(_plans.c.status, func.count()).group_by(_plans.c.status)).all())
    total = counts.get(status, 0) if status else sum(counts.values())
    pages = max(1, math.ceil(total / per_page))
    page_number = min(page_number, pages)
    rows = session.execute(
        select(_plans)
        .where(*where)
        .order_by(URGENCY, _plans.c.customer_email, _plans.c.subscription_id)
        .limit(per_page)
        .offset((page_number - 1) * per_page)
    ).all()
    return rows, counts, total, page_number, pages


@page("viewer")
def plans(request: Request, user) -> Response:
    status = request.query_params.get("status") or None
    if status not in PLAN_STATUSES:
        status = None
    text = request.query_params.get("page", "1")
    wanted = max(1, min(int(text), 1_000_000)) if text.isdigit() else 1
    with db_of(request).reading() as session:
        rows, counts, total, number, pages = query_plans(session, status, wanted)
    return render(
        request,
        "plans.html",
        user,
        active="plans",
        plans=rows,
        status=status,
        statuses=PLAN_STATUSES,
        counts=counts,
        total=total,
        page=number,
        pages=pages,
        params={"status": status} if status else {},
    )


routes = [Route("/plans", plans, methods=["GET"])]

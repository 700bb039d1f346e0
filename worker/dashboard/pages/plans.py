"""Payment plans and subscriptions, past_due first."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers.plans import PLAN_STATUSES, load_plans
from worker.dashboard.web import db_of, page, render


@page("viewer")
def plans(request: Request, user) -> Response:
    status = request.query_params.get("status") or None
    if status not in PLAN_STATUSES:
        status = None
    with db_of(request).reading() as session:
        rows = load_plans(session, status=status)  # past_due first, then unpaid, active, ended
    return render(
        request, "plans.html", user, active="plans", plans=rows, status=status, statuses=PLAN_STATUSES
    )


routes = [Route("/plans", plans, methods=["GET"])]

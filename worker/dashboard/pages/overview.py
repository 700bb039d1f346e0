"""The overview: what needs a person now, today's and this month's takings, and whether webhooks flow."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models import Alert, Event, EventStatus, ReconcileRun
from models.types import iso
from worker.dashboard import sales_query
from worker.dashboard.web import config_of, db_of, page, render

FAILING = (EventStatus.FAILED, EventStatus.DEAD)


def _month_start(day: datetime) -> datetime:
    return day.replace(day=1)


def read_overview(request: Request) -> dict:
    config = config_of(request)
    now = config.now()
    local_now = now.astimezone(config.timezone)
    today = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = _month_start(today)
    next_month = (month + timedelta(days=32)).replace(day=1)
    # Early in a month "this month" is nearly empty; the month before is what sellers compare with.
    last_month = _month_start(month - timedelta(days=1))
    with db_of(request).reading() as session:
        alerts_by_kind = session.execute(
            select(Alert.kind, func.count())
            .where(Alert.status == "open")
            .group_by(Alert.kind)
            .order_by(Alert.kind)
        ).all()
        failing_counts = dict(
            session.execute(
                select(Event.status, func.count()).where(Event.status.in_(FAILING)).group_by(Event.status)
            ).all()
        )
        failing = session.execute(
            select(
                Event.id,
                Event.account,
                Event.type,
                Event.status,
                Event.attempts,
                Event.last_error,
                Event.received_at,
            )
            .where(Event.status.in_(FAILING))
            .order_by(Event.received_at.desc())
            .limit(10)
        ).all()
        newest = session.execute(select(func.max(Event.received_at))).scalar_one_or_none()
        run = session.execute(select(ReconcileRun).order_by(ReconcileRun.started_at.desc()).limit(1)).scalar()
        today_totals = sales_query.period_totals(session, today, today + timedelta(days=1))
        month_totals = sales_query.period_totals(session, month, next_month)
        last_month_totals = sales_query.period_totals(session, last_month, month)
        failed = sales_query.failed_installments(session, limit=10)
    report = json.loads(run.report) if run is not None and run.report else None
    age = (now - newest).total_seconds() if newest else None
    return {
        "alerts_by_kind": [(kind, count) for kind, count in alerts_by_kind],
        "open_alert_total": sum(count for _, count in alerts_by_kind),
        "today_totals": today_totals,
        "month_totals": month_totals,
        "last_month_totals": last_month_totals,
        "month_label": month.strftime("%Y-%m"),
        "last_month_label": last_month.strftime("%Y-%m"),
        "failed": failed,
        "failing_counts": failing_counts,
        "failing": failing,
        "run": run,
        "report": report,
        "newest_event_at": newest,
        "newest_event_age": age,
        "silent": age is None or age > config.silence_hours * 3600,
        "silence_hours": config.silence_hours,
    }


@page("viewer")
def overview(request: Request, user) -> Response:
    return render(request, "overview.html", user, active="overview", **read_overview(request))


def _totals_json(rows) -> list[dict]:
    return [{"currency": r.currency, "gross": r.gross, "refunded": r.refunded, "net": r.net} for r in rows]


@page("viewer")
def overview_json(request: Request, user) -> Response:
    data = read_overview(request)
    return JSONResponse(
        {
            "open_alerts": dict(data["alerts_by_kind"]),
            "today": _totals_json(data["today_totals"]),
            "this_month": _totals_json(data["month_totals"]),
            "last_month": _totals_json(data["last_month_totals"]),
            "failing_events": {str(k): v for k, v in data["failing_counts"].items()},
            "newest_event_at": iso(data["newest_event_at"]),
            "webhooks_silent": data["silent"],
            "last_run": None
            if data["run"] is None
            else {"status": data["run"].status, "found_count": (data["report"] or {}).get("found_count")},
        }
    )


routes = [
    Route("/", overview, methods=["GET"]),
    Route("/api/overview", overview_json, methods=["GET"]),
]

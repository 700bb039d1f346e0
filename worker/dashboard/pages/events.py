"""Admins' pages: the event log, an event's detail and replay, the nightly runs, and the audit log."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from models import AuditEntry, Event, EventStatus, ReconcileRun
from worker.dashboard import accounts
from worker.dashboard.web import action, client_address, config_of, db_of, page, render
from worker.ops.eventlog import find_by_id, find_events
from worker.ops.logs import redact

STATUSES = tuple(status.value for status in EventStatus)
PAGE_SIZE = 100
SINCE = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


@page("admin")
def event_list(request: Request, user) -> Response:
    params = request.query_params
    status = params.get("status") or None
    status = status if status in STATUSES else None
    event_type = (params.get("type") or "").strip()[:255] or None
    since_key = params.get("since") if params.get("since") in SINCE else None
    since = config_of(request).now() - SINCE[since_key] if since_key else None
    events = find_events(
        db_of(request),
        statuses=[status] if status else (),
        event_type=event_type,
        since=since,
        limit=PAGE_SIZE,
        newest_first=True,
    )
    return render(
        request,
        "events.html",
        user,
        active="events",
        events=events,
        status=status,
        statuses=STATUSES,
        event_type=event_type or "",
        since=since_key,
        since_options=list(SINCE),
    )


def _the_event(request: Request) -> Event | None:
    account = request.query_params.get("account", "")
    rows = [
        e for e in find_by_id(db_of(request), request.path_params["event_id"][:255]) if e.account == account
    ]
    if not rows and not account:
        rows = find_by_id(db_of(request), request.path_params["event_id"][:255])
    return rows[0] if rows else None


def _pretty_payload(event: Event) -> str:
    try:
        text = json.dumps(json.loads(event.payload), indent=2, ensure_ascii=False)
    except ValueError:
        text = event.payload
    return redact(text)


@page("admin")
def event_detail(request: Request, user) -> Response:
    event = _the_event(request)
    if event is None:
        return render(request, "error.html", user, status_code=404, message_key="not_found")
    return render(
        request,
        "event.html",
        user,
        active="events",
        event=event,
        payload=_pretty_payload(event),
        error=redact(event.last_error or ""),
        traceback=redact(event.last_traceback or ""),
    )


@page("admin")
def replay_confirm(request: Request, user) -> Response:
    event = _the_event(request)
    if event is None:
        return render(request, "error.html", user, status_code=404, message_key="not_found")
    return render(request, "replay_confirm.html", user, active="events", event=event)


@action("admin")
def replay(request: Request, user, form) -> Response:
    event = _the_event(request)
    if event is None:
        return render(request, "error.html", user, status_code=404, message_key="not_found")
    config = config_of(request)
    db = db_of(request)
    result = config.replay(db, [event], max_attempts=config.max_attempts)[0]
    with db.session() as session:
        accounts.audit(
            session,
            user.email,
            "replay",
            f"event:{event.id}",
            f"{result.status_before} -> {result.status_after}"
            + (f": {result.error}" if result.error else ""),
            client_address(request),
        )
    return render(request, "replay_result.html", user, active="events", event=event, result=result)


@page("admin")
def runs(request: Request, user) -> Response:
    with db_of(request).reading() as session:
        rows = (
            session.execute(select(ReconcileRun).order_by(ReconcileRun.started_at.desc()).limit(30))
            .scalars()
            .all()
        )
    shown = []
    for run in rows:
        try:
            report = json.loads(run.report) if run.report else None
        except ValueError:
            report = None
        shown.append((run, report, json.dumps(report, indent=2, ensure_ascii=False) if report else ""))
    return render(request, "runs.html", user, active="runs", runs=shown)


@page("admin")
def audit_log(request: Request, user) -> Response:
    before = request.query_params.get("before")
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(PAGE_SIZE)
    if before and before.isdigit():
        query = query.where(AuditEntry.id < int(before))
    with db_of(request).reading() as session:
        entries = session.execute(query).scalars().all()
    older = entries[-1].id if len(entries) == PAGE_SIZE else None
    return render(request, "audit.html", user, active="audit", entries=entries, older=older)


routes = [
    Route("/events", event_list, methods=["GET"]),
    Route("/events/{event_id}", event_detail, methods=["GET"]),
    Route("/events/{event_id}/replay", replay_confirm, methods=["GET"]),
    Route("/events/{event_id}/replay", replay, methods=["POST"]),
    Route("/runs", runs, methods=["GET"]),
    Route("/audit", audit_log, methods=["GET"]),
]

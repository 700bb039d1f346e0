"""Alerts: the list staff work from, and acknowledging or resolving one with a note."""

from __future__ import annotations

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from models import Alert
from worker.dashboard import accounts
from worker.dashboard.web import action, client_address, db_of, page, render, text_field
from worker.ops import records

STATUSES = ("open", "acknowledged", "resolved", "all")
KINDS = ("access_revocation", "dispute", "payment_failed")
PAGE_SIZE = 200


def _list(request: Request) -> tuple[list[Alert], str, str | None]:
    status = request.query_params.get("status") or "open"
    if status not in STATUSES:
        status = "open"
    kind = request.query_params.get("kind") or None
    query = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc()).limit(PAGE_SIZE)
    if status != "all":
        query = query.where(Alert.status == status)
    if kind:
        query = query.where(Alert.kind == kind)
    with db_of(request).reading() as session:
        return list(session.execute(query).scalars()), status, kind


@page("viewer")
def alert_list(request: Request, user) -> Response:
    alerts, status, kind = _list(request)
    done = request.query_params.get("done")
    return render(
        request,
        "alerts.html",
        user,
        active="alerts",
        alerts=alerts,
        status=status,
        kind=kind,
        statuses=STATUSES,
        kinds=KINDS,
        done=done,
        done_id=request.query_params.get("id"),
    )


@page("viewer")
def alert_list_json(request: Request, user) -> Response:
    alerts, _, _ = _list(request)
    return JSONResponse([records.alert_as_dict(a) for a in alerts])


@action("staff")
def alert_action(request: Request, user, form) -> Response:
    try:
        alert_id = int(request.path_params["alert_id"])
    except ValueError:
        return render(request, "error.html", user, status_code=404, message_key="not_found")
    what = text_field(form, "action", 20)
    note = text_field(form, "note", 2000) or None
    db = db_of(request)
    try:
        if what == "acknowledge":
            records.acknowledge(db, alert_id, user.email)
        elif what == "resolve":
            records.resolve(db, alert_id, user.email, note)
        else:
            return render(request, "error.html", user, status_code=400, message_key="not_found")
    except records.AlertNotFound:
        return render(request, "error.html", user, status_code=404, message_key="not_found")
    with db.session() as session:
        accounts.audit(session, user.email, what, f"alert:{alert_id}", note, client_address(request))
    back = text_field(form, "status", 20)
    back = back if back in STATUSES else "open"
    return RedirectResponse(f"/app/alerts?status={back}&done={what}&id={alert_id}", status_code=303)


routes = [
    Route("/alerts", alert_list, methods=["GET"]),
    Route("/api/alerts", alert_list_json, methods=["GET"]),
    Route("/alerts/{alert_id}", alert_action, methods=["POST"]),
]

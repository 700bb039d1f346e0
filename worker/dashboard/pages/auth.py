"""Signing in and out, and the per-user language setting."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from worker.dashboard import accounts
from worker.dashboard.web import (
    action,
    client_address,
    config_of,
    csrf_ok,
    csrf_refused,
    db_of,
    render,
    safe_next,
    signed_in_user,
    text_field,
)


async def sign_in_page(request: Request) -> Response:
    user, _ = await run_in_threadpool(signed_in_user, request)
    target = safe_next(request.query_params.get("next"))
    if user is not None:
        return RedirectResponse(target, status_code=303)
    notice = "session_expired" if request.query_params.get("expired") else None
    return render(request, "sign_in.html", None, next=target, error=None, notice=notice, email="")


async def sign_in_submit(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10, max_part_size=8 * 1024)
    if not csrf_ok(request, form.get("csrf_token")):
        return csrf_refused(request)
    config = config_of(request)
    email = text_field(form, "email", 320)
    password = form.get("password") if isinstance(form.get("password"), str) else ""
    target = safe_next(text_field(form, "next", 2000))
    result = await run_in_threadpool(
        accounts.sign_in,
        db_of(request),
        email,
        password,
        client_address(request),
        config.policy,
        config.now(),
    )
    if result.user is None:
        error = "sign_in_wrong" if result.refusal == "wrong" else "sign_in_locked"
        minutes = int(config.policy.lockout.total_seconds() // 60)
        return render(
            request,
            "sign_in.html",
            None,
            status_code=401 if error == "sign_in_wrong" else 429,
            next=target,
            error=error,
            minutes=minutes,
            notice=None,
            email=email,
        )
    # A fresh session: nothing from before sign-in (its CSRF token included) carries over.
    request.session.clear()
    request.session.update(
        uid=result.user.id, sv=result.user.session_version, iat=int(config.now().timestamp() or time.time())
    )
    return RedirectResponse(target, status_code=303)


@action("viewer")
def sign_out(request: Request, user, form) -> Response:
    with db_of(request).session() as session:
        accounts.audit(session, user.email, "sign_out", user.email, None, client_address(request))
    request.session.clear()
    return RedirectResponse("/app/sign-in", status_code=303)


@action("viewer")
def set_language(request: Request, user, form) -> Response:
    language = text_field(form, "language", 8) or None
    if language not in (None, *accounts.LANGUAGES):
        language = None
    accounts.set_language(db_of(request), user.id, language, actor=user.email)
    return RedirectResponse(safe_next(text_field(form, "next", 2000)), status_code=303)


routes = [
    Route("/sign-in", sign_in_page, methods=["GET"]),
    Route("/sign-in", sign_in_submit, methods=["POST"]),
    Route("/sign-out", sign_out, methods=["POST"]),
    Route("/language", set_language, methods=["POST"]),
]

"""Admins manage staff accounts here too (the same rules as `python -m worker users`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from models.staff import ROLES
from worker.dashboard import accounts
from worker.dashboard.web import action, db_of, page, render, text_field

CHANGES = ("role", "disable", "enable", "set_password")


@page("admin")
def user_list(request: Request, user) -> Response:
    return render(
        request,
        "users.html",
        user,
        active="users",
        users=accounts.list_users(db_of(request)),
        roles=ROLES,
        done=request.query_params.get("done"),
        error=None,
    )


def _again(request: Request, user, error: str) -> Response:
    return render(
        request,
        "users.html",
        user,
        status_code=400,
        active="users",
        users=accounts.list_users(db_of(request)),
        roles=ROLES,
        done=None,
        error=error,
    )


@action("admin")
def add(request: Request, user, form) -> Response:
    try:
        added = accounts.add_user(
            db_of(request),
            text_field(form, "email", 320),
            text_field(form, "role", 16),
            form.get("password") if isinstance(form.get("password"), str) else "",
            actor=user.email,
        )
    except accounts.AccountError as exc:
        return _again(request, user, str(exc))
    return RedirectResponse(f"/app/users?done=added+{added.email}", status_code=303)


@action("admin")
def change(request: Request, user, form) -> Response:
    email = text_field(form, "email", 320)
    what = text_field(form, "change", 20)
    db = db_of(request)
    try:
        if what == "role":
            accounts.set_role(db, email, text_field(form, "role", 16), actor=user.email)
        elif what == "disable":
            if accounts.normalise_staff_email(email) == user.email:
                return _again(request, user, "you cannot disable your own account")
            accounts.disable_user(db, email, actor=user.email)
        elif what == "enable":
            accounts.enable_user(db, email, actor=user.email)
        elif what == "set_password":
            password = form.get("password") if isinstance(form.get("password"), str) else ""
            accounts.set_password(db, email, password, actor=user.email)
        else:
            return _again(request, user, f"unknown change {what!r}")
    except accounts.AccountError as exc:
        return _again(request, user, str(exc))
    except LookupError as exc:
        return _again(request, user, str(exc))
    return RedirectResponse(f"/app/users?done={what}+{email}", status_code=303)


routes = [
    Route("/users", user_list, methods=["GET"]),
    Route("/users", add, methods=["POST"]),
    Route("/users/change", change, methods=["POST"]),
]

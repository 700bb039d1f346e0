"""What every dashboard page shares: the session, who is signed in, roles, CSRF, rendering, headers.

Sessions are Starlette's signed cookies (itsdangerous): HttpOnly, SameSite=Lax, Secure when
DASHBOARD_SECURE_COOKIES is on, scoped to /app. A session holds the user's id, the account's session
version (raised on a password change or disable, which ends every older session), when it was signed
in (sessions end DASHBOARD_SESSION_MINUTES later, however active) and its CSRF token.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from models import Database, StaffUser
from models.types import utcnow
from worker.dashboard import formatting
from worker.dashboard.accounts import SignInPolicy, get_user, has_role
from worker.dashboard.i18n import choose_language, translator

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.globals.update(money=formatting.money, age=formatting.age)
TEMPLATES.env.trim_blocks = True
TEMPLATES.env.lstrip_blocks = True

SECURITY_HEADERS = [
    # No inline script anywhere: every script is a file under /app/static/.
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]


@dataclass
class DashboardConfig:
    secret_key: str
    session_minutes: int = 480
    secure_cookies: bool = False
    policy: SignInPolicy = field(default_factory=SignInPolicy)
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    silence_hours: float = 6.0
    max_attempts: int = 10
    now: Callable[[], datetime] = utcnow
    # (db, events) -> replay results; the web process passes worker.jobs.replay.replay_events.
    replay: Callable | None = None
    # (event_id, account) -> raw JSON; unused by pages today, kept None.
    stripe_mode_live: bool | None = None


class SecurityHeaders:
    """Adds the security headers to every response of the dashboard, and no-store to its pages."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/app/static/") or scope.get("root_path", "").endswith("/static")

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def db_of(request: Request) -> Database:
    return request.app.state.db


def config_of(request: Request) -> DashboardConfig:
    return request.app.state.config


def client_address(request: Request) -> str:
    return (request.client.host if request.client else "unknown")[:64]


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, given: str | None) -> bool:
    expected = request.session.get("csrf")
    return bool(expected and given) and hmac.compare_digest(str(given).encode(), expected.encode())


def safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never another host, scheme or a protocol-relative URL."""
    if not target or "\\" in target or any(ord(c) < 32 for c in target):
        return "/app/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return "/app/"
    if not (parts.path == "/app" or parts.path.startswith("/app/")) or "/../" in parts.path:
        return "/app/"
    return target


def wants_json(request: Request) -> bool:
    return (
        request.url.path.startswith("/app/api/")
        or "application/json" in request.headers.get("accept", "").split(",")[0]
    )


def language_of(request: Request, user: StaffUser | None) -> str:
    return choose_language(user.language if user else None, request.headers.get("accept-language"))


def render(
    request: Request, template: str, user: StaffUser | None, status_code: int = 200, **context
) -> Response:
    config = config_of(request)
    language = language_of(request, user)
    tz = config.timezone
    context.update(
        request=request,
        user=user,
        lang=language,
        t=translator(language),
        csrf_token=csrf_token(request),
        tz_name=str(tz.key),
        when=lambda moment: formatting.local_time(moment, tz),
        day=lambda moment: formatting.local_day(moment, tz),
        can=lambda role: user is not None and has_role(user, role),
    )
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


def _to_sign_in(request: Request, expired: bool = False) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "sign in first: no session"}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    suffix = "&expired=1" if expired else ""
    return RedirectResponse(f"/app/sign-in?next={quote(target, safe='/')}{suffix}", status_code=303)


def signed_in_user(request: Request) -> tuple[StaffUser | None, bool]:
    """(the user, whether a session existed but has ended). Runs in a worker thread (a DB read)."""
    session = request.session
    user_id = session.get("uid")
    if not isinstance(user_id, int):
        return None, False
    config = config_of(request)
    signed_at = session.get("iat")
    now = config.now().timestamp()
    user = get_user(db_of(request), user_id)
    valid = (
        user is not None
        and not user.disabled
        and session.get("sv") == user.session_version
        and isinstance(signed_at, int | float)
        and now - signed_at < config.session_minutes * 60
    )
    if not valid:
        for key in ("uid", "sv", "iat"):
            session.pop(key, None)
        return None, True
    return user, False


def forbidden(request: Request, user: StaffUser) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "your role does not allow this"}, status_code=403)
    return render(request, "error.html", user, status_code=403, message_key="forbidden")


def page(role: str = "viewer"):
    """A GET page for signed-in users with at least `role`; the handler runs in a worker thread."""

    def decorate(handler):
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            user, expired = await run_in_threadpool(signed_in_user, request)
            if user is None:
                return _to_sign_in(request, expired)
            if not has_role(user, role):
                return forbidden(request, user)
            return await run_in_threadpool(handler, request, user)

        return endpoint

    return decorate


def action(role: str):
    """A POST by a signed-in user with at least `role`, carrying the session's CSRF token (a form
    field `csrf_token` or an `X-CSRF-Token` header). The handler gets the form, in a worker thread."""

    def decorate(handler):
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            form = await request.form(max_files=0, max_fields=50, max_part_size=64 * 1024)
            if not csrf_ok(request, form.get("csrf_token") or request.headers.get("x-csrf-token")):
                return csrf_refused(request)
            user, expired = await run_in_threadpool(signed_in_user, request)
            if user is None:
                return _to_sign_in(request, expired)
            if not has_role(user, role):
                return forbidden(request, user)
            return await run_in_threadpool(handler, request, user, form)

        return endpoint

    return decorate


def csrf_refused(request: Request) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
    return render(request, "error.html", None, status_code=403, message_key="csrf_failed")


def text_field(form, name: str, limit: int = 4000) -> str:
    value = form.get(name)
    return str(value).strip()[:limit] if isinstance(value, str) else ""

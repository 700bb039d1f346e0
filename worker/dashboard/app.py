"""The dashboard as a Starlette app, mounted at /app on the web process beside the webhook endpoints."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from models import Database
from worker.dashboard.accounts import SignInPolicy
from worker.dashboard.pages import alerts, auth, customers, events, overview, plans, sales, users
from worker.dashboard.web import DashboardConfig, SecurityHeaders
from worker.receiver.devsecret import generated_secret

STATIC_DIR = Path(__file__).parent / "static"
SECRET_FILE = Path("var/dashboard-secret")
SESSION_COOKIE = "dashboard_session"


def create_dashboard(db: Database, config: DashboardConfig) -> Starlette:
    app = Starlette(
        routes=[
            *auth.routes,
            *overview.routes,
            *sales.routes,
            *customers.routes,
            *plans.routes,
            *alerts.routes,
            *events.routes,
            *users.routes,
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=config.secret_key,
                session_cookie=SESSION_COOKIE,
                # The cookie's own lifetime; the session's hard end (from sign-in) is checked per request.
                max_age=config.session_minutes * 60,
                path="/app",
                same_site="lax",
                https_only=config.secure_cookies,
            ),
        ],
    )
    app.state.db = db
    app.state.config = config
    return app


def dashboard_secret(path: Path = SECRET_FILE) -> str:
    """A generated signing key for session cookies, made once and readable by the owner only."""
    return generated_secret(path, lambda: secrets.token_urlsafe(48))


def config_from_settings(settings) -> DashboardConfig:
    from worker.jobs.replay import replay_events

    key = settings.dashboard_secret_key.get_secret_value() if settings.dashboard_secret_key else None
    return DashboardConfig(
        secret_key=key or dashboard_secret(),
        session_minutes=settings.dashboard_session_minutes,
        secure_cookies=settings.dashboard_secure_cookies,
        policy=SignInPolicy(
            max_failures=settings.sign_in_max_failures,
            max_failures_per_address=settings.sign_in_max_failures_per_address,
            lockout=timedelta(minutes=settings.sign_in_lockout_minutes),
        ),
        timezone=ZoneInfo(settings.display_timezone),
        silence_hours=settings.webhook_silence_hours,
        max_attempts=settings.event_max_attempts,
        replay=replay_events,
    )

"""The dashboard served the way the web process serves it (mounted at /app on the receiver's app),
with a clock tests can move, and helpers to sign in as a staff member."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from starlette.testclient import TestClient

from worker.dashboard import accounts
from worker.dashboard.accounts import SignInPolicy
from worker.dashboard.app import create_dashboard
from worker.dashboard.web import DashboardConfig
from worker.receiver.web import create_app

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 20, 3, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def make_client(db, clock: Clock | None = None, replay=None, **config) -> TestClient:
    clock = clock or Clock()
    settings = DashboardConfig(
        secret_key="test-secret-key-" + "x" * 32,
        policy=config.pop("policy", SignInPolicy(max_failures=3, max_failures_per_address=10)),
        timezone=ZoneInfo(config.pop("timezone", "UTC")),
        now=clock,
        replay=replay,
        **config,
    )
    app = create_app(
        db=db, enqueue=lambda *_: None, secrets=["whsec_test"], dashboard=create_dashboard(db, settings)
    )
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)


def add_staff(db, email: str, role: str) -> None:
    accounts.add_user(db, email, role, PASSWORD, actor="test")


def csrf_from(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD, next_path: str = "/app/"):
    page = client.get("/app/sign-in")
    return client.post(
        "/app/sign-in",
        data={"email": email, "password": password, "csrf_token": csrf_from(page.text), "next": next_path},
    )


def token(client: TestClient, path: str = "/app/") -> str:
    return csrf_from(client.get(path).text)

"""Sign-in, sessions, roles, CSRF and the audit log of the staff dashboard, over HTTP."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from sqlalchemy import select

from models import AuditEntry, StaffUser
from tests.unit.dashboard_support import (
    PASSWORD,
    Clock,
    add_staff,
    make_client,
    sign_in,
    token,
)
from worker.dashboard import accounts

PAGES = [
    "/app/",
    "/app/sales",
    "/app/sales.csv",
    "/app/customers",
    "/app/customers/aiko@example.jp",
    "/app/plans",
    "/app/alerts",
    "/app/events",
    "/app/events/evt_1",
    "/app/runs",
    "/app/audit",
    "/app/users",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_sign_in_without_a_session(db, path):
    client = make_client(db)
    response = client.get(path)
    assert response.status_code == 303
    assert unquote(response.headers["location"]) == f"/app/sign-in?next={path}"


@pytest.mark.parametrize("path", ["/app/api/overview", "/app/api/alerts"])
def test_json_endpoints_answer_401_without_a_session(db, path):
    response = make_client(db).get(path)
    assert response.status_code == 401
    assert response.json() == {"error": "sign in first: no session"}


def test_json_is_also_401_when_asked_for_by_accept_header(db):
    response = make_client(db).get("/app/alerts", headers={"accept": "application/json"})
    assert response.status_code == 401


def test_sign_in_lands_on_the_requested_page_and_the_cookie_is_locked_down(db):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db)
    response = sign_in(client, "Staff@Example.com", next_path="/app/alerts?status=all")
    assert response.status_code == 303
    assert response.headers["location"] == "/app/alerts?status=all"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/app" in cookie
    assert "secure" not in cookie  # served over plain HTTP in this test; DASHBOARD_SECURE_COOKIES adds it
    assert client.get("/app/alerts").status_code == 200


def test_secure_cookies_setting_marks_the_cookie_secure(db):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db, secure_cookies=True)
    client.base_url = "https://127.0.0.1"
    response = sign_in(client, "staff@example.com")
    assert "secure" in response.headers["set-cookie"].lower()


def test_a_wrong_password_is_refused_and_no_session_is_made(db):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db)
    response = sign_in(client, "staff@example.com", "not the password at all")
    assert response.status_code == 401
    assert 'id="sign-in-error"' in response.text
    assert "Wrong email or password." in response.text
    assert client.get("/app/").status_code == 303


def test_an_unknown_email_gets_the_same_answer_as_a_wrong_password(db):
    client = make_client(db)
    response = sign_in(client, "nobody@example.com", "whatever password")
    assert response.status_code == 401
    assert "Wrong email or password." in response.text


def test_repeated_failures_lock_the_account_even_against_the_right_password(db):
    add_staff(db, "staff@example.com", "staff")
    clock = Clock()
    client = make_client(db, clock)
    for _ in range(3):  # the test policy locks after 3
        sign_in(client, "staff@example.com", "wrong password guess")
    locked = sign_in(client, "staff@example.com")
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.text
    clock.advance(minutes=16)  # the lockout is 15 minutes
    assert sign_in(client, "staff@example.com").status_code == 303


def test_one_address_trying_many_accounts_is_stopped(db):
    add_staff(db, "victim@example.com", "admin")
    client = make_client(db)
    for number in range(10):  # the test policy allows 10 failures per address
        sign_in(client, f"guess{number}@example.com", "spray password 1")
    response = sign_in(client, "victim@example.com")
    assert response.status_code == 429


def test_sessions_end_after_the_configured_time(db):
    add_staff(db, "staff@example.com", "staff")
    clock = Clock()
    client = make_client(db, clock, session_minutes=60)
    sign_in(client, "staff@example.com")
    clock.advance(minutes=59)
    assert client.get("/app/").status_code == 200
    clock.advance(minutes=2)
    expired = client.get("/app/")
    assert expired.status_code == 303
    assert "expired=1" in expired.headers["location"]
    assert "Your session ended" in client.get(expired.headers["location"]).text


def test_a_password_change_or_disable_ends_open_sessions(db):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db)
    sign_in(client, "staff@example.com")
    accounts.set_password(db, "staff@example.com", "a brand new password", actor="cli:root")
    assert client.get("/app/").status_code == 303
    sign_in(client, "staff@example.com", "a brand new password")
    accounts.disable_user(db, "staff@example.com", actor="cli:root")
    assert client.get("/app/").status_code == 303
    assert sign_in(client, "staff@example.com", "a brand new password").status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/app/",
        "/\\evil.example",
        "https:/evil.example",
        "/app/../../evil",
        "javascript:alert(1)",
        "/elsewhere",
    ],
)
def test_no_open_redirect_after_sign_in(db, target):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db)
    response = sign_in(client, "staff@example.com", next_path=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/app/"


def test_a_post_without_its_csrf_token_is_refused(db):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db)
    sign_in(client, "staff@example.com")
    assert client.post("/app/customers/aiko@example.jp/notes", data={"text": "hi"}).status_code == 403
    wrong = client.post("/app/customers/aiko@example.jp/notes", data={"text": "hi", "csrf_token": "guess"})
    assert wrong.status_code == 403
    assert client.post("/app/sign-out").status_code == 403


def test_sign_in_itself_needs_the_csrf_token(db):
    add_staff(db, "staff@example.com", "staff")
    response = make_client(db).post("/app/sign-in", data={"email": "staff@example.com", "password": PASSWORD})
    assert response.status_code == 403


def test_the_header_form_of_the_csrf_token_is_accepted(db):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db)
    sign_in(client, "staff@example.com")
    response = client.post(
        "/app/customers/aiko@example.jp/notes",
        data={"text": "called the customer"},
        headers={"x-csrf-token": token(client)},
    )
    assert response.status_code == 303


@pytest.mark.parametrize(
    ("role", "path", "data", "allowed"),
    [
        ("viewer", "/app/customers/aiko@example.jp/notes", {"text": "x"}, False),
        ("staff", "/app/customers/aiko@example.jp/notes", {"text": "x"}, True),
        ("viewer", "/app/alerts/1", {"action": "acknowledge"}, False),
        ("staff", "/app/events/evt_1/replay", {}, False),
        ("admin", "/app/events/evt_1/replay", {}, True),
    ],
)
def test_each_action_checks_the_role(db, role, path, data, allowed):
    add_staff(db, f"{role}@example.com", role)
    client = make_client(db, replay=lambda *_a, **_k: [])
    sign_in(client, f"{role}@example.com")
    response = client.post(path, data={**data, "csrf_token": token(client)})
    if allowed:
        assert response.status_code != 403
    else:
        assert response.status_code == 403
        assert "Your role does not allow this." in response.text


@pytest.mark.parametrize(("role", "allowed"), [("viewer", False), ("staff", False), ("admin", True)])
def test_admin_pages_are_for_admins(db, role, allowed):
    add_staff(db, f"{role}@example.com", role)
    client = make_client(db)
    sign_in(client, f"{role}@example.com")
    for path in ("/app/events", "/app/runs", "/app/audit", "/app/users"):
        assert (client.get(path).status_code == 200) is allowed, path


def test_actions_are_in_the_audit_log(db):
    add_staff(db, "admin@example.com", "admin")
    client = make_client(db)
    sign_in(client, "admin@example.com", "a wrong password here")
    sign_in(client, "admin@example.com")
    client.post(
        "/app/customers/aiko@example.jp/notes", data={"text": "refund promised", "csrf_token": token(client)}
    )
    client.post("/app/sign-out", data={"csrf_token": token(client)})
    with db.session() as session:
        entries = session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
    seen = [(e.actor, e.action, e.target) for e in entries]
    assert seen == [
        ("test", "user_add", "admin@example.com"),
        ("admin@example.com", "sign_in_refused", "admin@example.com"),
        ("admin@example.com", "sign_in", "admin@example.com"),
        ("admin@example.com", "note", "aiko@example.jp"),
        ("admin@example.com", "sign_out", "admin@example.com"),
    ]
    assert all(e.client_address for e in entries[1:])
    sign_in(client, "admin@example.com")
    page = client.get("/app/audit")
    assert "refund promised" in page.text and "sign_in_refused" in page.text


def test_passwords_are_stored_only_as_argon2_hashes(db):
    add_staff(db, "staff@example.com", "staff")
    with db.session() as session:
        stored = session.execute(select(StaffUser.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_security_headers_on_every_dashboard_response(db):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db)
    responses = [client.get("/app/sign-in"), client.get("/app/"), client.get("/app/static/app.css")]
    sign_in(client, "staff@example.com")
    responses.append(client.get("/app/"))
    for response in responses:
        csp = response.headers["content-security-policy"]
        script = next(part for part in csp.split(";") if part.strip().startswith("script-src"))
        assert "'unsafe-inline'" not in script and "frame-ancestors 'none'" in csp
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_webhook_endpoints_are_unchanged_by_the_dashboard(db):
    client = make_client(db)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/webhooks/stripe").status_code == 405
    assert "content-security-policy" not in client.get("/healthz").headers


def test_language_follows_accept_language_and_the_users_setting(db):
    add_staff(db, "staff@example.com", "staff")
    client = make_client(db)
    japanese = client.get("/app/sign-in", headers={"accept-language": "ja-JP,ja;q=0.9,en;q=0.5"})
    assert '<html lang="ja">' in japanese.text and "サインイン" in japanese.text
    english = client.get("/app/sign-in", headers={"accept-language": "fr-FR,en;q=0.8"})
    assert '<html lang="en">' in english.text
    sign_in(client, "staff@example.com")
    client.post("/app/language", data={"language": "ja", "csrf_token": token(client), "next": "/app/"})
    assert '<html lang="ja">' in client.get("/app/", headers={"accept-language": "en"}).text


def test_admins_manage_users_on_the_users_page_and_it_is_audited(db):
    add_staff(db, "admin@example.com", "admin")
    client = make_client(db)
    sign_in(client, "admin@example.com")
    added = client.post(
        "/app/users",
        data={
            "email": "New@Example.com",
            "role": "staff",
            "password": "a long enough pass",
            "csrf_token": token(client),
        },
    )
    assert added.status_code == 303
    assert 'data-email="new@example.com" data-role="staff"' in client.get("/app/users").text
    weak = client.post(
        "/app/users",
        data={"email": "x@example.com", "role": "viewer", "password": "short", "csrf_token": token(client)},
    )
    assert weak.status_code == 400 and "at least 12 characters" in weak.text
    client.post(
        "/app/users/change",
        data={"email": "new@example.com", "change": "role", "role": "viewer", "csrf_token": token(client)},
    )
    client.post(
        "/app/users/change",
        data={"email": "new@example.com", "change": "disable", "csrf_token": token(client)},
    )
    own = client.post(
        "/app/users/change",
        data={"email": "admin@example.com", "change": "disable", "csrf_token": token(client)},
    )
    assert own.status_code == 400 and "cannot disable your own account" in own.text
    users = {u.email: u for u in accounts.list_users(db)}
    assert (users["new@example.com"].role, users["new@example.com"].disabled) == ("viewer", True)
    assert sign_in(make_client(db), "new@example.com", "a long enough pass").status_code == 401
    with db.session() as session:
        actions = (
            session.execute(
                select(AuditEntry.action).where(
                    AuditEntry.actor == "admin@example.com", AuditEntry.target == "new@example.com"
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["user_add", "user_role", "user_disable"]


@pytest.mark.parametrize("role", ["viewer", "staff"])
def test_only_admins_reach_the_users_page(db, role):
    add_staff(db, f"{role}@example.com", role)
    client = make_client(db)
    sign_in(client, f"{role}@example.com")
    assert client.get("/app/users").status_code == 403
    refused = client.post(
        "/app/users",
        data={
            "email": "sneaky@example.com",
            "role": "admin",
            "password": "x" * 20,
            "csrf_token": token(client),
        },
    )
    assert refused.status_code == 403
    assert [u.email for u in accounts.list_users(db)] == [f"{role}@example.com"]

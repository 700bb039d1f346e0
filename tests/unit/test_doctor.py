"""`python -m worker doctor`: one plain line per check, a hint for each problem, and no secret shown."""

import json
from datetime import timedelta

import httpx
import pytest
import respx
from alembic.script import ScriptDirectory

from models import Database, Event
from models.migrate import alembic_config, upgrade
from models.types import utcnow
from worker.ops import doctor
from worker.receiver.devsecret import DEV_SECRET_FILE, dev_webhook_secret
from worker.settings import Settings, get_settings

BASE = "http://127.0.0.1:12111"
KEY = "sk_test_doctorkey4242"
EVENTS_PAGE = {"object": "list", "data": [], "has_more": False, "url": "/v1/events"}
HEALTHY = {
    "STRIPE_API_KEY": KEY,
    "STRIPE_WEBHOOK_SECRET": "whsec_doctor0secret",
    "STRIPE_API_BASE": BASE,
    "ALERT_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/alertsecretpart",
    "FUNNEL_WEBHOOK_TOKEN": "funnel" + "0123456789" * 4,
}


@pytest.fixture(autouse=True)
def _in_a_fresh_checkout(tmp_path, monkeypatch):
    """Run from an empty folder: what `var/` holds in the working tree must not change any answer."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def database_url(tmp_path):
    url = f"sqlite:///{tmp_path}/doctor.db"
    database = Database(url)
    upgrade(database)
    database.dispose()
    return url


@pytest.fixture
def environment(monkeypatch, database_url):
    """Set the process environment the way a deployment does; `main()` reads it through the settings."""

    def apply(**changes):
        for name, value in {**HEALTHY, "DATABASE_URL": database_url, **changes}.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


def settings(database_url, /, **changes) -> Settings:
    values = {name.lower(): value for name, value in HEALTHY.items()}
    return Settings(**{**values, "database_url": database_url, **changes})


def by_name(checks) -> dict[str, doctor.Check]:
    return {check.name: check for check in checks}


def stripe_answers(status, body):
    router = respx.mock(assert_all_called=False)
    router.get(f"{BASE}/v1/events").mock(return_value=httpx.Response(status, json=body))
    return router


def stripe_error(kind, message):
    return {"error": {"type": kind, "message": message}}


def test_a_healthy_setup_prints_one_line_per_check_and_exits_0_when_only_warnings_remain(environment, capsys):
    environment()
    with stripe_answers(200, EVENTS_PAGE):
        code = doctor.main(json_output=False)
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split()[0] for line in lines[:-1]] == [
        "OK",
        "OK",
        "OK",
        "OK",
        "OK",
        "OK",
        "OK",
        "OK",
        "WARN",
        "OK",
    ]
    assert any(line.startswith("OK    Stripe API key") and "set (test mode)" in line for line in lines)
    assert any(line.startswith("OK    migrations") and "at head" in line for line in lines)
    assert any(line.startswith("WARN  redis") and "BROKER=stub" in line for line in lines)
    assert lines[-1] == "0 failed, 1 warning(s)"


def test_a_key_stripe_rejects_fails_with_a_hint_and_the_key_never_appears_in_either_output(
    environment, capsys
):
    environment()
    rejected = stripe_error("invalid_request_error", "Invalid API Key provided: sk_test_****4242")
    with stripe_answers(401, rejected):
        text_code = doctor.main(json_output=False)
        json_code = doctor.main(json_output=True)
    captured = capsys.readouterr()
    assert (text_code, json_code) == (1, 1)
    failure = next(line for line in captured.out.splitlines() if line.startswith("FAIL  Stripe API "))
    assert "refused the key" in failure and "-> copy a current key" in failure and "STRIPE_API_KEY" in failure
    for shown in (captured.out, captured.err):
        assert KEY not in shown and "sk_test_" not in shown and "4242" not in shown


def test_a_restricted_key_that_may_not_read_events_fails_saying_which_access_to_grant(database_url):
    restricted = settings(database_url, stripe_api_key="rk_live_doctorrestricted")
    with stripe_answers(403, stripe_error("invalid_request_error", "The provided key does not have access")):
        checks = by_name(doctor.run_doctor(restricted))
    assert checks["Stripe API key"].detail == "set (live mode, restricted key)"
    assert checks["Stripe API"].status == "FAIL"
    assert "read access to Events" in checks["Stripe API"].hint


def test_an_unreachable_database_fails_without_showing_its_password(database_url):
    unreachable = settings(database_url, database_url="postgresql://doctor:hunter2secret@127.0.0.1:1/worker")
    with stripe_answers(200, EVENTS_PAGE):
        checks = doctor.run_doctor(unreachable)
    found = by_name(checks)
    assert found["database"].status == "FAIL"
    assert "cannot connect to postgresql+psycopg://127.0.0.1:1/worker" in found["database"].detail
    assert "DATABASE_URL" in found["database"].hint
    assert "migrations" not in found  # nothing to check them in
    assert "hunter2secret" not in doctor.format_checks(checks)
    assert doctor.exit_code(checks) == 1


def test_a_missing_sqlite_file_fails_says_to_migrate_and_is_not_created(tmp_path, database_url):
    missing = tmp_path / "nowhere" / "worker.db"
    with stripe_answers(200, EVENTS_PAGE):
        found = by_name(doctor.run_doctor(settings(database_url, database_url=f"sqlite:///{missing}")))
    assert found["database"].status == "FAIL"
    assert "python -m worker migrate" in found["database"].hint
    assert not missing.exists() and not missing.parent.exists()


def test_a_database_behind_the_code_fails_and_says_to_run_migrate(tmp_path, database_url):
    behind = Database(f"sqlite:///{tmp_path}/behind.db")
    upgrade(behind, "0002")
    behind.dispose()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with stripe_answers(200, EVENTS_PAGE):
        found = by_name(
            doctor.run_doctor(settings(database_url, database_url=f"sqlite:///{tmp_path}/behind.db"))
        )
    assert found["migrations"].status == "FAIL"
    assert found["migrations"].detail == f"the database is at 0002, this code needs {head}"
    assert "python -m worker migrate" in found["migrations"].hint


def test_dead_events_are_a_warning_that_says_how_to_find_and_replay_them(database_url):
    database = Database(database_url)
    with database.session() as session:
        session.add(Event(id="evt_dead", type="charge.succeeded", payload="{}", status="dead"))
    database.dispose()
    with stripe_answers(200, EVENTS_PAGE):
        found = by_name(doctor.run_doctor(settings(database_url)))
    assert (found["event log"].status, found["event log"].detail) == ("WARN", "1 dead event(s) need a person")
    assert "events --status dead" in found["event log"].hint and "replay --failed" in found["event log"].hint


def test_redis_that_does_not_answer_fails_without_showing_its_password(database_url):
    down = settings(database_url, broker="redis", redis_url="redis://:redispass123@127.0.0.1:1/0")
    with stripe_answers(200, EVENTS_PAGE):
        checks = doctor.run_doctor(down)
    redis = by_name(checks)["redis"]
    assert redis.status == "FAIL" and redis.detail.startswith("cannot reach redis://127.0.0.1:1/0")
    assert "REDIS_URL" in redis.hint
    assert "redispass123" not in doctor.format_checks(checks)


@pytest.mark.parametrize(
    ("changes", "name", "status", "says"),
    [
        ({"stripe_webhook_secret": None}, "webhook secret", "FAIL", "refuses to start"),
        ({"stripe_webhook_secret": None, "dev_mode": True}, "webhook secret", "WARN", "DEV_MODE"),
        ({"stripe_webhook_secret": "not-a-signing-secret"}, "webhook secret", "WARN", "whsec_"),
        ({"stripe_api_key": None}, "Stripe API key", "FAIL", "not set"),
        ({"stripe_api_key": "pk_test_publishable1234"}, "Stripe API key", "FAIL", "not a secret"),
        ({"alert_webhook_url": None}, "alert webhook", "WARN", "nobody is told"),
        ({"alert_webhook_url": "hooks.example.com/T0"}, "alert webhook", "FAIL", "not an http(s) URL"),
        ({"funnel_webhook_token": "short-token"}, "funnel token", "FAIL", "refuses to start"),
        ({"funnel_webhook_token": "a" * 20}, "funnel token", "WARN", "20 characters"),
        ({"funnel_webhook_token": None}, "funnel token", "WARN", "/webhooks/funnel is off"),
        ({"host": "0.0.0.0"}, "dashboard", "WARN", "over plain HTTP"),  # noqa: S104 (a setting's value)
    ],
)
def test_each_settings_problem_gets_its_own_line_with_what_to_do(database_url, changes, name, status, says):
    with stripe_answers(200, EVENTS_PAGE):
        checks = doctor.run_doctor(settings(database_url, **changes))
    found = by_name(checks)[name]
    assert found.status == status and says in found.detail and found.hint
    secrets = [value for value in changes.values() if isinstance(value, str)]
    assert not any(secret in doctor.format_checks(checks) for secret in secrets)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"host": "127.0.0.1"}, "on 127.0.0.1 only"),
        ({"host": "0.0.0.0", "dashboard_secure_cookies": True}, "HTTPS only"),  # noqa: S104
    ],
)
def test_the_dashboard_cookie_is_fine_on_loopback_or_with_secure_cookies(database_url, changes, says):
    with stripe_answers(200, EVENTS_PAGE):
        found = by_name(doctor.run_doctor(settings(database_url, **changes)))["dashboard"]
    assert found.status == "OK" and says in found.detail


def test_without_a_usable_key_stripe_is_not_called_at_all(database_url):
    with stripe_answers(200, EVENTS_PAGE) as router:
        checks = by_name(doctor.run_doctor(settings(database_url, stripe_api_key="pk_test_publishable1234")))
        assert not router.calls  # inside: leaving the block clears what the router recorded
    assert "Stripe API" not in checks


def test_json_output_is_one_object_with_every_check_and_ok_false_when_one_fails(environment, capsys):
    environment(FUNNEL_WEBHOOK_TOKEN="too-short")
    with stripe_answers(200, EVENTS_PAGE):
        code = doctor.main(json_output=True)
    document = json.loads(capsys.readouterr().out)
    assert code == 1 and document["ok"] is False
    assert {check["name"]: check["status"] for check in document["checks"]}["funnel token"] == "FAIL"
    assert set(document["checks"][0]) == {"name", "status", "detail", "hint"}
    assert "too-short" not in json.dumps(document)


def test_a_setting_that_cannot_be_read_is_named_without_its_value(environment, capsys):
    environment(STRIPE_MAX_ATTEMPTS="sk_test_pastedintothewrongplace")
    code = doctor.main(json_output=False)
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("FAIL  settings  invalid: STRIPE_MAX_ATTEMPTS: ")
    assert "sk_test_pastedintothewrongplace" not in out


def test_a_long_stuck_event_is_a_warning_that_points_at_the_workers(database_url):
    database = Database(database_url)
    with database.session() as session:
        stuck = utcnow() - timedelta(hours=2)
        session.add(Event(id="evt_stuck", type="charge.succeeded", payload="{}", received_at=stuck))
    database.dispose()
    with stripe_answers(200, EVENTS_PAGE):
        found = by_name(doctor.run_doctor(settings(database_url)))["event log"]
    assert found.status == "WARN" and "120 minutes old" in found.detail and "worker" in found.hint


# Stripe's keys are opaque after their prefix (up to 255 characters); bodies with underscores are real.
@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("sk_test_51Abc_defGhiJklMnoPqrStu_vwx0123456789", "set (test mode)"),
        ("rk_live_51Abc_def_0123456789abcdefABCDEF", "set (live mode, restricted key)"),
    ],
)
def test_a_working_key_with_underscores_in_its_body_passes(environment, capsys, key, says):
    environment(STRIPE_API_KEY=key)
    with stripe_answers(200, EVENTS_PAGE) as router:
        code = doctor.main(json_output=False)
        sent = router.calls.last.request.headers["Authorization"]
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert code == 0, out
    assert any(line.startswith("OK    Stripe API key") and says in line for line in lines), out
    assert any(line.startswith("OK    Stripe API ") and "the key reads events" in line for line in lines), out
    assert sent == f"Bearer {key}"  # the whole key, as set
    assert key not in out and key.split("_", 2)[2] not in out


def test_a_rejected_key_with_underscores_is_not_shown_even_in_part(environment, capsys):
    key = "sk_live_51Abc_defGhi_jkl4242"
    environment(STRIPE_API_KEY=key)
    # Stripe's messages quote a masked key; the doctor prints a 400's message, scrubbed.
    rejected = stripe_error("invalid_request_error", "This key sk_live_****_jkl4242 cannot list events")
    with stripe_answers(400, rejected):
        code = doctor.main(json_output=False)
    captured = capsys.readouterr()
    assert code == 1
    assert "FAIL  Stripe API " in captured.out and "answered 400" in captured.out
    for shown in (captured.out, captured.err):
        assert "jkl4242" not in shown and "defGhi" not in shown


def test_the_dev_mode_secret_make_run_uses_is_a_warning_not_a_failure(environment, capsys, monkeypatch):
    environment()
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    get_settings.cache_clear()
    # What `make run` (`python -m worker run`) does without STRIPE_WEBHOOK_SECRET: it generates the
    # secret and runs its processes with DEV_MODE=1; the shell `doctor` is run from has no DEV_MODE.
    secret = dev_webhook_secret()
    with stripe_answers(200, EVENTS_PAGE):
        code = doctor.main(json_output=False)
        json_code = doctor.main(json_output=True)
    text_out, json_out = capsys.readouterr().out.split("\n{", 1)
    lines = text_out.splitlines()
    line = next(line for line in lines if " webhook secret " in line)
    assert (code, json_code) == (0, 0), text_out
    assert line.startswith("WARN  webhook secret") and str(DEV_SECRET_FILE) in line
    assert "make run" in line and "STRIPE_WEBHOOK_SECRET" in line
    assert json.loads("{" + json_out)["ok"] is True
    assert secret not in text_out and secret not in json_out


def test_without_a_secret_dev_mode_or_a_dev_secret_file_the_receiver_cannot_start(
    environment, capsys, monkeypatch
):
    environment()
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    get_settings.cache_clear()
    with stripe_answers(200, EVENTS_PAGE):
        code = doctor.main(json_output=False)
    line = next(line for line in capsys.readouterr().out.splitlines() if " webhook secret " in line)
    assert code == 1 and line.startswith("FAIL  webhook secret") and "refuses to start" in line


def test_an_empty_dev_secret_file_is_a_failure_that_says_to_delete_it(environment, capsys, monkeypatch):
    environment()
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    get_settings.cache_clear()
    DEV_SECRET_FILE.parent.mkdir()
    DEV_SECRET_FILE.write_text("\n")
    with stripe_answers(200, EVENTS_PAGE):
        code = doctor.main(json_output=False)
    line = next(line for line in capsys.readouterr().out.splitlines() if " webhook secret " in line)
    assert code == 1 and line.startswith("FAIL  webhook secret") and "delete" in line

"""`doctor` checks that reach out: the database and its migrations, the event log, Redis, Stripe.

Each gives up within a few seconds, so the doctor answers even when everything it asks is down.
"""

from __future__ import annotations

from pathlib import Path

import stripe
from sqlalchemy.engine import make_url

from models import Database
from models.db import normalise_url
from worker.ops import event_stats
from worker.ops.checks import API_KEY, FAIL, OK, WARN, Check, reason, safe_url, scrub
from worker.settings import Settings

MIGRATE = "run `python -m worker migrate`"


def service_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    for step in (database_checks, redis_check, stripe_api_check):
        try:
            found = step(settings)
        except Exception as exc:  # a check must report, never crash the doctor
            found = Check(step.__name__, FAIL, f"the check itself failed: {scrub(settings, exc)}")
        checks.extend(found if isinstance(found, list) else [found] if found else [])
    return checks


def _open_database(settings: Settings) -> tuple[Database | None, Check | None]:
    url = make_url(normalise_url(settings.database_url))
    shown = safe_url(url.render_as_string(hide_password=True))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        # Opening a missing SQLite file would create an empty one; the doctor changes nothing.
        if not Path(url.database).exists():
            return None, Check(
                "database", FAIL, f"no database file at {url.database}", MIGRATE + " (it creates it)"
            )
    elif url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": "5"})  # an unreachable host must not hang the doctor
    db = Database(url.render_as_string(hide_password=False), sqlite_synchronous=settings.sqlite_synchronous)
    try:
        db.ping()
    except Exception as exc:
        db.dispose()
        return None, Check(
            "database",
            FAIL,
            f"cannot connect to {shown} ({reason(settings, exc)})",
            "check DATABASE_URL and that the server is up and accepts this user",
        )
    return db, Check("database", OK, f"reachable ({shown})")


def database_checks(settings: Settings) -> list[Check]:
    db, reachable = _open_database(settings)
    if db is None:
        return [reachable]
    try:
        checks = [reachable, _migrations(db)]
        if checks[-1].status != FAIL:
            checks.append(_event_log(db, settings))
        return checks
    finally:
        db.dispose()


def _migrations(db: Database) -> Check:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from models.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config())
    head = scripts.get_current_head()
    with db.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return Check("migrations", OK, f"at head ({head})")
    if current is None:
        return Check("migrations", FAIL, "the database has no schema yet", MIGRATE)
    if current not in {script.revision for script in scripts.walk_revisions()}:
        return Check(
            "migrations",
            FAIL,
            f"the database is at {current}, which this code does not know",
            "it was migrated by a newer version: deploy that version, or restore a matching backup",
        )
    return Check("migrations", FAIL, f"the database is at {current}, this code needs {head}", MIGRATE)


def _event_log(db: Database, settings: Settings) -> Check:
    stats = event_stats.read_stats(db)
    counts = {status: 0 for status in event_stats.OPEN_STATUSES}
    for (status, _), n in stats.open.items():
        counts[status] += n
    age = stats.oldest_unprocessed_age
    problems, hints = [], []
    if counts["dead"]:
        problems.append(f"{counts['dead']} dead event(s) need a person")
        hints.append(
            "`python -m worker events --status dead`, fix the cause, `python -m worker replay --failed`"
        )
    # Older than the sweeper lets an event sit in `processing`: processing is behind or stopped.
    if age > settings.sweep_processing_stale_seconds:
        problems.append(f"the oldest unprocessed event is {age / 60:.0f} minutes old")
        hints.append("are the worker processes running and is Redis up? `python -m worker sweep` re-enqueues")
    if problems:
        return Check("event log", WARN, "; ".join(problems), "; ".join(hints))
    waiting = counts["received"] + counts["processing"] + counts["failed"]
    if not waiting:
        return Check("event log", OK, "nothing waiting")
    retrying = f", {counts['failed']} of them failed and waiting for a retry" if counts["failed"] else ""
    return Check("event log", OK, f"{waiting} event(s) waiting, the oldest for {age:.0f} s{retrying}")


def redis_check(settings: Settings) -> Check:
    from worker.jobs.broker import EVENTS_QUEUE, build_broker, fail_fast, ping, queue_depth

    if settings.broker == "stub":
        return Check("redis", WARN, "BROKER=stub: no Redis at all (meant for unit tests)", "unset BROKER")
    shown = safe_url(settings.redis_url)
    try:
        broker = build_broker(settings)
    except ValueError as exc:
        return Check(
            "redis", FAIL, f"REDIS_URL is not usable ({scrub(settings, exc)})", "redis://host:6379/0"
        )
    fail_fast(broker, 3.0)
    try:
        ping(broker)
        depth = queue_depth(broker, EVENTS_QUEUE)
    except Exception as exc:
        hint = "check REDIS_URL and that redis-server runs; meanwhile events are stored, not processed"
        return Check("redis", FAIL, f"cannot reach {shown} ({reason(settings, exc)})", hint)
    finally:
        broker.client.close()
    return Check("redis", OK, f"reachable ({shown}); {depth} message(s) in the {EVENTS_QUEUE} queue")


def stripe_api_check(settings: Settings) -> Check | None:
    """A read-only call with the configured key; None when there is no usable key to try."""
    from worker.stripe_api import StripeReader, make_client

    if settings.stripe_api_key is None or not API_KEY.match(settings.stripe_api_key.get_secret_value()):
        return None
    # One quick try: the doctor reports, it does not wait out an outage.
    quick = settings.model_copy(
        update={"stripe_max_attempts": 1, "stripe_timeout_seconds": min(settings.stripe_timeout_seconds, 10)}
    )
    name, shown = "Stripe API", safe_url(settings.stripe_api_base)
    try:
        StripeReader(quick, make_client(quick)).get("/v1/events", {"limit": 1})
    except stripe.AuthenticationError:
        # Stripe's own message quotes the key's last characters: never passed on.
        hint = "copy a current key from Dashboard > Developers > API keys into STRIPE_API_KEY"
        return Check(name, FAIL, "Stripe refused the key (invalid, expired or rolled)", hint)
    except stripe.PermissionError:
        hint = "give the restricted key read access to Events, Charges, Refunds, Invoices and Customers"
        return Check(name, FAIL, "the key may not read events", hint)
    except stripe.APIConnectionError as exc:
        hint = "check the network (proxy, firewall) and STRIPE_API_BASE"
        return Check(name, FAIL, f"cannot reach {shown} ({type(exc).__name__})", hint)
    except stripe.StripeError as exc:
        message = scrub(settings, exc.user_message or "")
        return Check(name, FAIL, f"GET /v1/events answered {exc.http_status or 'nothing'}: {message}")
    return Check(name, OK, f"the key reads events ({shown})")

"""The CLI's exit codes, and turning what went wrong into one line that names the setting and the fix.

Configuration and dependency failures (a mistyped DATABASE_URL, an unmigrated database, Redis or
Stripe unreachable, a rejected API key) reach the user as one line with an exit code from `ExitCode`,
never as a traceback; passwords and keys are never part of that line.
"""

from __future__ import annotations

import re
from enum import IntEnum

from worker.ops.logs import redact


class ExitCode(IntEnum):
    """Every exit status the CLI uses; README.md ("Exit codes") documents the same table."""

    OK = 0
    PROBLEMS = 1  # the command ran but found problems, or some items failed (or an internal error)
    USAGE = 2  # the command line is wrong: unknown option, bad value, missing argument
    CONFIG = 3  # a setting is missing or invalid, or the database is not migrated
    UNAVAILABLE = 4  # a dependency is unreachable: the database, Redis or Stripe
    NOT_FOUND = 5  # the event, alert or record asked for does not exist
    INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """A failure to report in one line, with its exit code."""

    def __init__(self, message: str, code: ExitCode | int = ExitCode.PROBLEMS) -> None:
        super().__init__(message)
        self.message = message
        self.code = int(code)


def usage(message: str) -> CliError:
    return CliError(message, ExitCode.USAGE)


# Stripe masks a rejected key as "sk_test_****1234"; even that tail is not ours to print.
_KEY_LIKE = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9*]*")
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]*@")


def scrub(text: str) -> str:
    """Text safe to print: no configured secret, nothing shaped like a key, no password in a URL."""
    return _URL_CREDENTIALS.sub(r"\1…@", _KEY_LIKE.sub("[redacted]", redact(text)))


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return scrub(lines[0].strip() if lines else type(exc).__name__)[:200]


def _settings():
    """The settings when they load; None when they are themselves what is wrong."""
    from worker.settings import get_settings

    try:
        return get_settings()
    except Exception:
        return None


def _chain(exc: BaseException):
    """The exception and every cause or context behind it (each once)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def describe(exc: BaseException) -> CliError | None:
    """A one-line message with its exit code for a known kind of failure; None for anything else."""
    for error in _chain(exc):
        for reader in (_settings_error, _database_error, _redis_error, _stripe_error):
            found = reader(error)
            if found is not None:
                return found
    return None


# --- settings -----------------------------------------------------------------------------------


def _settings_error(exc: BaseException) -> CliError | None:
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return None
    # Each bad variable and why, never the value it holds (it may be a secret).
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
    return CliError(f"{problems}; fix the environment variable (see README, Configuration)", ExitCode.CONFIG)


# --- the database ---------------------------------------------------------------------------------

MIGRATE = "run `python -m worker migrate`"


def shown_database_url(url: str | None = None) -> str:
    """DATABASE_URL as it may be printed: the password masked, no query string, no driver name."""
    from sqlalchemy.engine import make_url

    from models.db import normalise_url

    if url is None:
        settings = _settings()
        if settings is None:
            return "DATABASE_URL"
        url = settings.database_url
    try:
        parsed = make_url(normalise_url(url))
        return parsed.set(drivername=parsed.get_backend_name(), query={}).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://…" if "://" in url else "DATABASE_URL"


_DB_REASONS = (
    (
        re.compile(r"refused", re.I),
        "connection refused",
        "check the host and port, and that PostgreSQL is running",
    ),
    (
        re.compile(
            r"resolve host|translate host name|name or service not known|nodename nor servname"
            r"|name resolution",
            re.I,
        ),
        "unknown host",
        "check the host name",
    ),
    (
        re.compile(r"timeout|timed out", re.I),
        "timed out",
        "check the host, the network and that PostgreSQL is running",
    ),
    (
        re.compile(r"no route to host|network is unreachable", re.I),
        "no route to host",
        "check the host and the network",
    ),
)


def _database_error(exc: BaseException) -> CliError | None:
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    if isinstance(exc, NoSuchModuleError | ArgumentError) and not isinstance(exc, DBAPIError):
        scheme = shown_database_url().split("://", 1)[0]
        what = (
            f"{scheme}:// is not a database this worker can use"
            if isinstance(exc, NoSuchModuleError)
            else ("not a database URL")
        )
        return CliError(
            f"DATABASE_URL: {what}; use sqlite:///path/to/worker.db or postgresql://user:password@host:5432/name",
            ExitCode.CONFIG,
        )
    if not isinstance(exc, DBAPIError):
        return None
    cause = exc.orig if exc.orig is not None else exc
    text = str(cause)
    lowered = text.lower()
    shown = shown_database_url()
    name = type(cause).__name__
    if (
        "no such table" in lowered
        or name == "UndefinedTable"
        or ("relation" in lowered and "does not exist" in lowered)
    ):
        if _has_tables(exc):
            return CliError(
                f"the database at {shown} is missing tables this version needs (not migrated): {MIGRATE}",
                ExitCode.CONFIG,
            )
        return CliError(
            f"the database at {shown} has no tables yet: {MIGRATE} (or check DATABASE_URL)", ExitCode.CONFIG
        )
    if "no such column" in lowered or name == "UndefinedColumn":
        return CliError(
            f"the database at {shown} is older than this version (not migrated): {MIGRATE}", ExitCode.CONFIG
        )
    if "password authentication failed" in lowered or name == "InvalidPassword":
        return CliError(
            f"DATABASE_URL: the server refused the user or password of {shown}; check both in DATABASE_URL",
            ExitCode.CONFIG,
        )
    if re.search(r'database ".*" does not exist', text):
        return CliError(
            f"DATABASE_URL: there is no database {shown.rsplit('/', 1)[-1]!r} on the server of {shown};"
            " create it (createdb) or fix the name",
            ExitCode.CONFIG,
        )
    if "unable to open database file" in lowered:
        return CliError(
            f"DATABASE_URL: cannot open the SQLite file of {shown}; check the path and that this user may"
            " write to its directory",
            ExitCode.CONFIG,
        )
    if "database is locked" in lowered:
        return CliError(
            f"the database at {shown} is locked by another process; try again in a moment",
            ExitCode.UNAVAILABLE,
        )
    for pattern, reason, hint in _DB_REASONS:
        if pattern.search(text):
            return CliError(
                f"DATABASE_URL: cannot connect to {shown} ({reason}); {hint}", ExitCode.UNAVAILABLE
            )
    if isinstance(exc.orig, Exception) and type(exc).__name__ in ("OperationalError", "InterfaceError"):
        return CliError(
            f"DATABASE_URL: the database at {shown} failed ({first_line(cause)}); check that it is up and"
            " that DATABASE_URL points at it",
            ExitCode.UNAVAILABLE,
        )
    return None


def _has_tables(exc: BaseException) -> bool:
    """Whether the database the error came from has any table at all (it was migrated, but not to here)."""
    from sqlalchemy import inspect

    try:
        from worker import runtime

        return bool(inspect(runtime.database().engine).get_table_names())
    except Exception:
        return False


# --- Redis -----------------------------------------------------------------------------------------


def redis_unreachable(exc: BaseException) -> CliError:
    from worker.ops.checks import safe_url

    settings = _settings()
    shown = safe_url(settings.redis_url) if settings else "REDIS_URL"
    text = str(exc).lower()
    reason = next((r for p, r, _ in _DB_REASONS if p.search(text)), None) or first_line(exc)
    return CliError(
        f"REDIS_URL: cannot connect to {shown} ({reason}); check that redis-server is running and REDIS_URL"
        " points at it",
        ExitCode.UNAVAILABLE,
    )


def _redis_error(exc: BaseException) -> CliError | None:
    import redis
    from dramatiq.errors import BrokerConnectionError

    if isinstance(
        exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | BrokerConnectionError
    ):
        return redis_unreachable(exc)
    return None


# --- Stripe ----------------------------------------------------------------------------------------


def _stripe_error(exc: BaseException) -> CliError | None:
    import stripe

    from worker.stripe_api import StripeNotConfigured

    if isinstance(exc, StripeNotConfigured):
        return CliError(
            "STRIPE_API_KEY is not set; set it to a secret or restricted key (sk_… or rk_…)", ExitCode.CONFIG
        )
    if not isinstance(exc, stripe.StripeError):
        return None
    if isinstance(exc, stripe.AuthenticationError):
        # Stripe's own message quotes the key's last characters: never passed on.
        return CliError(
            "STRIPE_API_KEY: Stripe refused the key (invalid, expired or rolled); copy a current key from"
            " Dashboard > Developers > API keys",
            ExitCode.CONFIG,
        )
    if isinstance(exc, stripe.PermissionError):
        return CliError(
            "STRIPE_API_KEY: the key may not read what this command lists; give the restricted key read"
            " access to Events, Charges, Refunds, Disputes, Invoices, Subscriptions and Customers",
            ExitCode.CONFIG,
        )
    from worker.ops.checks import safe_url

    settings = _settings()
    base = safe_url(settings.stripe_api_base) if settings else "STRIPE_API_BASE"
    if isinstance(exc, stripe.APIConnectionError):
        return CliError(
            f"STRIPE_API_BASE: cannot reach {base} ({type(exc).__name__}); check the network (proxy,"
            " firewall) and STRIPE_API_BASE",
            ExitCode.UNAVAILABLE,
        )
    if isinstance(exc, stripe.RateLimitError) or (exc.http_status or 0) >= 500:
        return CliError(
            f"Stripe ({base}) answered {exc.http_status or 'nothing'} after every retry; try again later",
            ExitCode.UNAVAILABLE,
        )
    message = scrub(exc.user_message or type(exc).__name__)
    return CliError(f"Stripe answered {exc.http_status or 'an error'}: {message}", ExitCode.PROBLEMS)

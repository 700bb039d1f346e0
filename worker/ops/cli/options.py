"""Options several commands share, and what every on-call command does before it starts."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.ops.cli.errors import CliError, ExitCode, usage

JSON_HELP = 'One JSON document on stdout, errors too ({"error": ..., "exit_code": N}); anywhere on the line.'
Json = Annotated[bool, typer.Option("--json", help=JSON_HELP, show_default=False)]


def parse_iso(value: str | datetime) -> datetime:
    """An ISO 8601 date or time; UTC when it carries no offset."""
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise typer.BadParameter(
                f"not an ISO 8601 date or time: {value!r} (e.g. 2026-11-01 or 2026-11-01T10:00:00Z)"
            ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def iso_option(help_text: str, name: str) -> typer.models.OptionInfo:
    return typer.Option(name, metavar="ISO", parser=parse_iso, help=help_text, show_default=False)


CUSTOMER_HELP = "Only this customer (their email address, any case)."


def customer_email(value: str | None, label: str = "--customer") -> str | None:
    """The normalised email, or a usage error naming what was given."""
    from handlers.funnel import normalise_email

    if value is None:
        return None
    email = normalise_email(value)
    if email is None:
        raise usage(f"{label}: not an email address: {value!r}")
    return email


def boot(*, on_call: bool = True):
    """Load the settings, set up logging (stderr, scrubbed of secrets) and the domain rules.

    A setting that does not validate is a configuration error (exit 3) naming the variable.
    """
    from worker import runtime
    from worker.ops.logs import configure_logging
    from worker.settings import get_settings

    if on_call:
        # libpq waits for the operating system's TCP timeout (minutes) on a host that does not answer.
        os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    settings = get_settings()
    try:
        configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    except ValueError:
        raise CliError(
            f"LOG_LEVEL: {settings.log_level!r} is not a log level; use DEBUG, INFO, WARNING or ERROR",
            ExitCode.CONFIG,
        ) from None
    if on_call:
        # stripe-python logs every request at INFO: noise between the lines of an on-call command
        # (and over the reconcile progress bar).
        logging.getLogger("stripe").setLevel(logging.WARNING)
    runtime.configure_domain()
    return settings


def database():
    """The process's database; a DATABASE_URL that cannot even be opened is a configuration error."""
    from worker import runtime
    from worker.ops.cli.errors import describe, first_line, shown_database_url

    try:
        return runtime.database()
    except Exception as exc:
        known = describe(exc)
        if known is not None:
            raise known from None
        shown = shown_database_url()
        fix = "use sqlite:///path/to/worker.db or postgresql://user:password@host:5432/name"
        if isinstance(exc, ImportError):
            reason = f"{shown.split('://', 1)[0]}:// needs a driver that is not installed ({first_line(exc)})"
        elif isinstance(exc, OSError):
            reason = f"cannot create the directory of the SQLite file of {shown} ({exc.strerror or exc})"
            fix = "check the path and that this user may create it"
        else:
            reason = f"cannot open {shown} ({type(exc).__name__}: {first_line(exc)})"
        raise CliError(f"DATABASE_URL: {reason}; {fix}", ExitCode.CONFIG) from None


def actors():
    """The Dramatiq actors (and their broker); a REDIS_URL Redis cannot read is a configuration error."""
    from worker.ops.cli.errors import first_line

    try:
        from worker.jobs import actors as module
    except ValueError as exc:
        raise CliError(
            f"REDIS_URL: not a Redis URL ({first_line(exc)}); use redis://host:6379/0", ExitCode.CONFIG
        ) from None
    return module

"""Column types shared by the tables."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Stores UTC as a naive timestamp on every backend and hands back aware UTC datetimes.

    SQLite keeps no time zone, so storing naive UTC everywhere keeps SQLite and PostgreSQL identical.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_unix(seconds: int | float | None) -> datetime | None:
    """A Stripe `created` timestamp as an aware UTC datetime."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with a `Z`, the form every JSON output of the CLI uses."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

"""Sending alerts to a Slack-compatible incoming webhook (ALERT_WEBHOOK_URL).

Delivery is its own Dramatiq actor, never part of event processing, so a sink that is down cannot
block or fail an event: the alert is stored first and sent when the sink answers again. Each alert is
claimed (pending -> sending) before it is posted, so two deliverers never send the same alert twice;
a claim left by a dead process is released by the clock after CLAIM_TIMEOUT.

The webhook URL is a secret (anyone with it can post). httpx quotes the URL it normalised (lower-case
scheme and host, percent-escapes) in its errors and request logs, so a failure is stored and logged
without the URL in any spelling and without any piece of its path, query or user info.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from datetime import timedelta
from urllib.parse import quote, unquote, urlsplit

import httpx
from sqlalchemy import and_, or_, update
from sqlmodel import select

from handlers.money import format_amount
from models import Alert, Database
from models.types import utcnow
from worker.ops.logs import redact

log = logging.getLogger(__name__)

CLAIM_TIMEOUT = timedelta(minutes=5)
RESEND_AFTER = timedelta(minutes=15)
SHOWN_AS = "[alert webhook]"
# Pieces of the path and query shorter than this are too common to scrub ("v1", "T0") and say nothing.
_MIN_PIECE = 4


class SinkUnavailable(RuntimeError):
    """The sink did not take the alert; Dramatiq retries the delivery with backoff."""


def slack_message(alert: Alert) -> dict:
    title = {
        "access_revocation": "Access at risk after a duplicate-purchase refund",
        "dispute": "Dispute",
        "payment_failed": "Installment payment failed",
    }
    amount = (
        format_amount(alert.amount, alert.currency) if alert.amount is not None and alert.currency else ""
    )
    header = f"*{title.get(alert.kind, alert.kind)}* (alert {alert.id}"
    header += f", updated: {alert.state})" if alert.updated_at > alert.created_at and alert.state else ")"
    lines = [header, alert.message]
    if amount:
        lines.append(f"Amount: {amount}")
    lines.append(f"Acknowledge: `python -m worker alerts ack {alert.id} --by NAME`")
    return {"text": "\n".join(lines)}


def _claim(db: Database, alert_id: int) -> Alert | None:
    with db.session() as session:
        claimed = session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.delivery_status == "pending")
            .values(
                delivery_status="sending", delivery_attempts=Alert.delivery_attempts + 1, claimed_at=utcnow()
            )
        ).rowcount
        return session.get(Alert, alert_id) if claimed else None


def deliver(db: Database, alert_id: int, url: str | None, *, timeout: float = 10.0) -> str:
    """Send one alert; returns its delivery status. Raises SinkUnavailable when the sink failed."""
    if url is None:
        with db.session() as session:
            session.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.delivery_status == "pending")
                .values(delivery_status="not_configured")
            )
        return "not_configured"
    alert = _claim(db, alert_id)
    if alert is None:
        return "already_claimed"
    _SINK_URLS.add(url)
    try:
        response = httpx.post(url, json=slack_message(alert), timeout=timeout)
        response.raise_for_status()
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = failure_text(exc, url)
        log.warning("alert %s not delivered: %s", alert_id, error)
        with db.session() as session:
            session.execute(
                update(Alert)
                .where(Alert.id == alert_id)
                .values(delivery_status="pending", last_delivery_error=error)
            )
        raise SinkUnavailable(error) from None
    with db.session() as session:
        session.execute(
            update(Alert)
            .where(Alert.id == alert_id)
            .values(delivery_status="sent", delivered_at=utcnow(), last_delivery_error=None)
        )
    log.info("alert %s delivered", alert_id)
    return "sent"


def failure_text(exc: Exception, url: str) -> str:
    """What went wrong, for `last_delivery_error` and the logs: never any part of the URL's secret."""
    if isinstance(exc, httpx.HTTPStatusError):
        # httpx's own text quotes the URL; the status says all there is to say.
        response = exc.response
        text = f"HTTPStatusError: the alert webhook answered {response.status_code} {response.reason_phrase}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return hide_url(redact(text.strip()), url)[:1000]


def hide_url(text: str, *urls: str) -> str:
    """`text` with each URL, however it is spelled, shown as SHOWN_AS, and no piece of its path,
    query, fragment or user info left."""
    whole, pieces = _patterns(urls)
    if whole is not None:
        text = whole.sub(SHOWN_AS, text)
    if pieces is None:
        return text
    return SHOWN_AS.join(pieces.sub("[redacted]", part) for part in text.split(SHOWN_AS))


@functools.lru_cache(maxsize=16)
def _patterns(urls: tuple[str, ...]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """What to look for (ignoring case, longest first): each URL's spellings, then its pieces."""
    spellings: set[str] = set()
    pieces: set[str] = set()
    for url in urls:
        spellings.update(filter(None, _spellings(url)))
        pieces.update(_secret_pieces(url))

    def pattern(found: set[str]) -> re.Pattern[str] | None:
        ordered = sorted(found, key=len, reverse=True)
        return re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None

    return pattern(spellings), pattern(pieces)


def _spellings(url: str) -> set[str]:
    """The URL as configured and as httpx prints it (lower-case scheme and host, percent-escaped)."""
    spellings = {url, url.strip()}
    with contextlib.suppress(Exception):  # a URL httpx cannot parse has no such spelling
        spellings.add(str(httpx.URL(url.strip())))
    return spellings


def _secret_pieces(url: str) -> set[str]:
    """Every piece of the URL's path, query, fragment and user info: raw, decoded, re-escaped and as
    httpx escapes it, whole and cut at separators and escapes."""
    chunks: list[str] = []
    for spelling in _spellings(url):
        try:
            parts = urlsplit(spelling.strip())
        except ValueError:  # not even splittable: everything after the scheme is suspect
            chunks.append(spelling.partition("://")[2])
            continue
        chunks += [parts.path, parts.query, parts.fragment, parts.username or "", parts.password or ""]
        # A port that is not a number is most likely a secret pasted into the wrong place.
        host_port = parts.netloc.rpartition("@")[2]
        port = host_port.rpartition(":")[2] if ":" in host_port and "]" not in host_port else ""
        chunks.append("" if port.isdigit() else port)
    pieces: set[str] = set()
    for chunk in filter(None, chunks):
        for form in {chunk, unquote(chunk), quote(unquote(chunk), safe="/?&=;:@")}:
            pieces.add(form)
            pieces.update(re.split(r"[/?&=;#:@]", form))
            pieces.update(re.findall(r"(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+", form))
            pieces.update(re.findall(r"[A-Za-z0-9._~-]+", form))
    return {piece for piece in pieces if len(piece) >= _MIN_PIECE}


class _HideSinkUrls(logging.Filter):
    """httpx logs every request's URL at INFO: not the alert webhook's, whatever the log settings."""

    def filter(self, record: logging.LogRecord) -> bool:
        urls = tuple(_SINK_URLS)
        if urls:
            message = record.getMessage()
            hidden = hide_url(message, *urls)
            if hidden != message:
                record.msg, record.args = hidden, ()
        return True


_SINK_URLS: set[str] = set()
logging.getLogger("httpx").addFilter(_HideSinkUrls())


def undelivered(db: Database) -> list[int]:
    """Alerts to send again: never tried for a minute, or last tried over RESEND_AFTER ago.

    Dramatiq retries a failed delivery a few times on its own; after that the clock takes over,
    once every RESEND_AFTER, so a sink that is down for a day does not pile up messages.
    """
    now = utcnow()
    with db.session() as session:
        session.execute(
            update(Alert)
            .where(Alert.delivery_status == "sending", Alert.claimed_at < now - CLAIM_TIMEOUT)
            .values(delivery_status="pending")
        )
        due = or_(
            # updated_at: an alert sent again after a change of state waits its minute like a new one.
            and_(Alert.claimed_at.is_(None), Alert.updated_at < now - timedelta(minutes=1)),
            Alert.claimed_at < now - RESEND_AFTER,
        )
        return list(session.exec(select(Alert.id).where(Alert.delivery_status == "pending", due)).all())

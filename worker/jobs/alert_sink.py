"""Sending alerts to a Slack-compatible incoming webhook (ALERT_WEBHOOK_URL).

Delivery is its own Dramatiq actor, never part of event processing, so a sink that is down cannot
block or fail an event: the alert is stored first and sent when the sink answers again. Each alert is
claimed (pending -> sending) before it is posted, so two deliverers never send the same alert twice;
a claim left by a dead process is released by the clock after CLAIM_TIMEOUT.
"""

from __future__ import annotations

import logging
from datetime import timedelta

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
    try:
        response = httpx.post(url, json=slack_message(alert), timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        error = redact(f"{type(exc).__name__}: {exc}").replace(url, "[alert webhook]")[:1000]
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

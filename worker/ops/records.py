"""Reading and acting on customer records for staff: notes, alerts, acknowledging and resolving."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from models import Alert, CustomerNote, CustomerStripeId, Database
from models.types import iso, utcnow

ALERT_STATUSES = ("open", "acknowledged", "resolved")


class AlertNotFound(LookupError):
    pass


def notes_for(db: Database, email: str) -> list[dict[str, Any]]:
    with db.session() as session:
        notes = session.exec(
            select(CustomerNote)
            .where(CustomerNote.email == email)
            .order_by(CustomerNote.created_at, CustomerNote.key)
        ).all()
        stripe_ids = session.exec(
            select(CustomerStripeId.stripe_customer_id).where(CustomerStripeId.email == email)
        ).all()
    return [
        {
            "customer_email": n.email,
            "kind": n.kind,
            "refund_id": n.refund_id,
            "charge_id": n.charge_id,
            "amount": n.amount,
            "currency": n.currency,
            "status": n.status,
            "text": n.text,
            "created_at": iso(n.created_at),
            "updated_at": iso(n.updated_at),
            "stripe_customer_ids": sorted(stripe_ids),
        }
        for n in notes
    ]


def alert_as_dict(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "status": alert.status,
        "customer_email": alert.customer_email,
        "product": alert.product,
        "refund_id": alert.refund_id,
        "charge_id": alert.charge_id,
        "kept_charge_id": alert.kept_charge_id,
        "amount": alert.amount,
        "currency": alert.currency,
        "message": alert.message,
        "created_at": iso(alert.created_at),
        "updated_at": iso(alert.updated_at),
        "state": alert.state,
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": iso(alert.acknowledged_at),
        "resolved_by": alert.resolved_by,
        "resolved_at": iso(alert.resolved_at),
        "resolution_note": alert.resolution_note,
        "delivery_status": alert.delivery_status,
        "last_delivery_error": alert.last_delivery_error,
    }


def list_alerts(db: Database, status: str | None = None) -> list[dict[str, Any]]:
    query = select(Alert).order_by(Alert.created_at, Alert.id)
    if status:
        query = query.where(Alert.status == status)
    with db.session() as session:
        return [alert_as_dict(a) for a in session.exec(query).all()]


def acknowledge(db: Database, alert_id: int, by: str) -> dict[str, Any]:
    """Mark an open alert as being handled by `by` (a resolved alert stays resolved)."""
    with db.session() as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise AlertNotFound(f"there is no alert {alert_id}")
        if alert.status == "open":
            alert.status, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", by, utcnow()
        return alert_as_dict(alert)


def resolve(db: Database, alert_id: int, by: str, note: str | None) -> dict[str, Any]:
    with db.session() as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise AlertNotFound(f"there is no alert {alert_id}")
        if alert.status != "resolved":
            alert.status, alert.resolved_by, alert.resolved_at = "resolved", by, utcnow()
            alert.resolution_note = note
            if alert.acknowledged_at is None:
                alert.acknowledged_by, alert.acknowledged_at = by, alert.resolved_at
        return alert_as_dict(alert)


def open_alert_count(db: Database) -> int:
    with db.session() as session:
        return len(
            session.exec(select(Alert.id).where(col(Alert.status).in_(["open", "acknowledged"]))).all()
        )

"""Keeping customer records current: their Stripe customer ids, refund notes and access alerts.

`refresh_customers` recomputes a customer's notes and alerts from their complete sales view. It runs
after any event that could change them (a charge, a refund, an invoice, a funnel purchase, a page of
the nightly run). Notes are upserted by refund id and alerts inserted once by key, so running it again,
or for events that arrive in any order or twice, gives one note per refund and at most one alert.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import or_
from sqlmodel import Session, select

from handlers.access_alerts import AlertDraft, access_alert, kept_duplicate
from handlers.refund_notes import refund_note_text
from handlers.sales_view import COUNTED_REFUND_STATUSES, SaleRow, load_sales_view
from models import (
    Alert,
    Charge,
    Customer,
    CustomerNote,
    CustomerStripeId,
    FunnelPurchase,
    Invoice,
    InvoicePayment,
    Refund,
    advisory_lock,
    dialect_insert,
    insert_ignore,
)
from models.types import utcnow

# How far apart two purchases of one product may be and still count as a duplicate. Set from
# DUPLICATE_WINDOW_DAYS by `worker.runtime.configure_domain` at start-up.
DUPLICATE_WINDOW = timedelta(days=30)


def emails_for_charges(session: Session, charge_ids: Iterable[str]) -> set[str]:
    """The customers (by email) that paid these charges, through every link the view uses."""
    ids = [c for c in set(charge_ids) if c]
    if not ids:
        return set()
    charges = session.exec(select(Charge).where(Charge.id.in_(ids))).all()
    emails = {c.customer_email for c in charges if c.customer_email}
    intents = [c.payment_intent for c in charges if c.payment_intent]
    invoice_ids = {c.invoice_id for c in charges if c.invoice_id}
    if intents:
        invoice_ids |= set(
            session.exec(
                select(InvoicePayment.invoice_id).where(InvoicePayment.payment_intent_id.in_(intents))
            ).all()
        )
    conditions = [Invoice.charge_id.in_(ids)]
    if invoice_ids:
        conditions.append(Invoice.id.in_(invoice_ids))
    if intents:
        conditions.append(Invoice.payment_intent_id.in_(intents))
    emails |= {e for e in session.exec(select(Invoice.customer_email).where(or_(*conditions))).all() if e}
    keys = ids + intents
    emails |= {
        e
        for e in session.exec(
            select(FunnelPurchase.customer_email).where(FunnelPurchase.charge_id.in_(keys))
        ).all()
        if e
    }
    customers = [c.customer for c in charges if c.customer]
    if customers:
        emails |= set(
            session.exec(
                select(CustomerStripeId.email).where(CustomerStripeId.stripe_customer_id.in_(customers))
            ).all()
        )
    return emails


def emails_for_refunds(session: Session, refunds: Iterable[dict]) -> set[str]:
    charge_ids = {r.get("charge") for r in refunds if isinstance(r.get("charge"), str)}
    intents = [r["payment_intent"] for r in refunds if isinstance(r.get("payment_intent"), str)]
    if intents:
        charge_ids |= set(session.exec(select(Charge.id).where(Charge.payment_intent.in_(intents))).all())
    return emails_for_charges(session, charge_ids)


def _link_customer(session: Session, email: str, rows: list[SaleRow]) -> None:
    insert_ignore(session, Customer, {"email": email, "created_at": utcnow()})
    for stripe_customer in {r.stripe_customer_id for r in rows if r.stripe_customer_id}:
        insert_ignore(
            session,
            CustomerStripeId,
            {"stripe_customer_id": stripe_customer, "email": email, "first_seen_at": utcnow()},
        )


def _write_note(session: Session, email: str, refund: Refund, sale: SaleRow | None) -> None:
    text = refund_note_text(refund, sale)
    now = utcnow()
    insert = dialect_insert(session)(CustomerNote.__table__).values(
        key=f"refund:{refund.id}",
        email=email,
        kind="refund",
        refund_id=refund.id,
        charge_id=refund.charge,
        amount=refund.amount,
        currency=refund.currency,
        status=refund.status,
        text=text,
        created_at=refund.created or now,
        updated_at=now,
    )
    table = CustomerNote.__table__
    # A refund's note changes only when what it says changes (a status update, the product becoming
    # known); rewriting an identical note would only move its updated_at.
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["key"],
            set_={
                name: insert.excluded[name]
                for name in ("email", "amount", "currency", "status", "text", "updated_at")
            },
            where=or_(table.c.text != insert.excluded.text, table.c.email != insert.excluded.email),
        )
    )


def _refund_that_completed(sale: SaleRow, refunds: list[Refund]) -> Refund | None:
    """Of a fully refunded payment's refunds, the one that took the refunded total to the full amount."""
    total = 0
    for refund in sorted(refunds, key=lambda r: (r.created is None, r.created, r.id)):
        if refund.status not in COUNTED_REFUND_STATUSES:
            continue
        total += refund.amount
        if total >= sale.amount:
            return refund
    return None


def _raise(session: Session, draft: AlertDraft) -> int | None:
    """Insert the alert once; return its id when it is new (so it can be delivered)."""
    new = insert_ignore(
        session, Alert, {**draft.__dict__, "status": "open", "created_at": utcnow()}, conflict_on=["key"]
    )
    if not new:
        return None
    return session.exec(select(Alert.id).where(Alert.key == draft.key)).one()


def refresh_customers(
    session: Session, emails: Iterable[str], *, window: timedelta | None = None
) -> list[int]:
    """Bring each customer's record up to date; return the ids of alerts raised just now."""
    window = window or DUPLICATE_WINDOW
    raised: list[int] = []

    for email in sorted({e for e in emails if e}):
        advisory_lock(session, f"customer:{email}")  # see models.db.advisory_lock
        rows = load_sales_view(session, email)

        _link_customer(session, email, rows)
        by_charge = {r.charge_id: r for r in rows if r.charge_id}
        if not by_charge:
            continue
        refunds = session.exec(select(Refund).where(Refund.charge.in_(list(by_charge)))).all()
        refunds_by_charge: dict[str, list[Refund]] = {}
        for refund in refunds:
            _write_note(session, email, refund, by_charge.get(refund.charge))
            refunds_by_charge.setdefault(refund.charge, []).append(refund)
        for charge_id, charge_refunds in refunds_by_charge.items():
            sale = by_charge[charge_id]
            if sale.refunded_amount < sale.amount:
                continue
            completing = _refund_that_completed(sale, charge_refunds)
            kept = kept_duplicate(sale, rows, window) if completing else None
            if completing and kept:
                alert_id = _raise(session, access_alert(completing.id, sale, kept))
                if alert_id is not None:
                    raised.append(alert_id)
    return raised


def raise_alert(session: Session, draft: AlertDraft) -> int | None:
    """Raise an alert that does not come from a customer refresh (a dispute)."""
    if draft.customer_email:
        insert_ignore(session, Customer, {"email": draft.customer_email, "created_at": utcnow()})
    return _raise(session, draft)

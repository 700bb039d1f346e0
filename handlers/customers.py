"""Keeping customer records current: their Stripe customer ids, refund notes and access alerts.

`refresh_customers` recomputes a customer's notes and alerts from their complete sales view. It runs
after any event that could change them (a charge, a refund, an invoice, a funnel purchase, a page of
the nightly run). Notes are upserted by refund id and alerts inserted once by key, so running it again,
or for events that arrive in any order or twice, gives one note per refund and at most one alert.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import bindparam, or_, select, union
from sqlmodel import Session

from handlers.access_alerts import AlertDraft, access_alert, kept_duplicate
from handlers.refund_notes import refund_note_text
from handlers.sales_view import COUNTED_REFUND_STATUSES, SaleRow, load_customer_facts
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
from models.db import built_once, execute
from models.prepared import Prepared
from models.types import utcnow

# How far apart two purchases of one product may be and still count as a duplicate. Set from
# DUPLICATE_WINDOW_DAYS by `worker.runtime.configure_domain` at start-up.
DUPLICATE_WINDOW = timedelta(days=30)


def emails_for_charges(session: Session, charge_ids: Iterable[str]) -> set[str]:
    """The customers (by email) that paid these charges, through every link the view uses."""
    ids = sorted({c for c in charge_ids if c})
    if not ids:
        return set()
    return {email for (email,) in execute(session, _EMAILS_FOR_CHARGES, {"charge_ids": ids}) if email}


def _emails_for_charges_statement():
    """One UNION of index lookups (run once per event, so one round trip rather than five)."""
    ids = bindparam("charge_ids", expanding=True)
    charges, invoices, purchases = Charge.__table__.c, Invoice.__table__.c, FunnelPurchase.__table__.c
    payments, links = InvoicePayment.__table__.c, CustomerStripeId.__table__.c

    def of_the_charges(column):
        return select(column).where(charges.id.in_(ids)).scalar_subquery()

    paid_invoices = select(payments.invoice_id).where(
        payments.payment_intent_id.in_(of_the_charges(charges.payment_intent))
    )
    return union(
        select(charges.customer_email).where(charges.id.in_(ids)),
        select(invoices.customer_email).where(invoices.charge_id.in_(ids)),
        select(invoices.customer_email).where(invoices.id.in_(of_the_charges(charges.invoice_id))),
        select(invoices.customer_email).where(invoices.id.in_(paid_invoices.scalar_subquery())),
        select(invoices.customer_email).where(
            invoices.payment_intent_id.in_(of_the_charges(charges.payment_intent))
        ),
        select(purchases.customer_email).where(purchases.charge_id.in_(ids)),
        select(purchases.customer_email).where(
            purchases.charge_id.in_(of_the_charges(charges.payment_intent))
        ),
        select(links.email).where(links.stripe_customer_id.in_(of_the_charges(charges.customer))),
    )


_EMAILS_FOR_CHARGES = Prepared(_emails_for_charges_statement())


def emails_for_refunds(session: Session, refunds: Iterable[dict]) -> set[str]:
    charge_ids = {r.get("charge") for r in refunds if isinstance(r.get("charge"), str)}
    intents = [r["payment_intent"] for r in refunds if isinstance(r.get("payment_intent"), str)]
    if intents:
        charge_ids |= set(
            execute(session, _CHARGES_OF_INTENTS, {"intents": sorted(set(intents))}).scalars().all()
        )
    return emails_for_charges(session, charge_ids)


_CHARGES_OF_INTENTS = Prepared(
    select(Charge.__table__.c.id).where(
        Charge.__table__.c.payment_intent.in_(bindparam("intents", expanding=True))
    )
)


def _link_customer(session: Session, email: str, rows: list[SaleRow]) -> None:
    insert_ignore(session, Customer, {"email": email, "created_at": utcnow()})
    for stripe_customer in {r.stripe_customer_id for r in rows if r.stripe_customer_id}:
        insert_ignore(
            session,
            CustomerStripeId,
            {"stripe_customer_id": stripe_customer, "email": email, "first_seen_at": utcnow()},
        )


def _write_note(session: Session, email: str, refund: Refund, sale: SaleRow | None) -> None:
    now = utcnow()
    values = {
        "key": f"refund:{refund.id}",
        "email": email,
        "kind": "refund",
        "refund_id": refund.id,
        "charge_id": refund.charge,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
        "text": refund_note_text(refund, sale),
        "created_at": refund.created or now,
        "updated_at": now,
    }
    insert = dialect_insert(session)
    execute(session, built_once(("refund note", insert), lambda: _note_upsert(insert)), values)


def _note_upsert(insert):
    table = CustomerNote.__table__
    statement = insert(table)
    # A refund's note changes only when what it says changes (a status update, the product becoming
    # known); rewriting an identical note would only move its updated_at.
    return statement.on_conflict_do_update(
        index_elements=["key"],
        set_={
            name: statement.excluded[name]
            for name in ("email", "amount", "currency", "status", "text", "updated_at")
        },
        where=or_(table.c.text != statement.excluded.text, table.c.email != statement.excluded.email),
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
    return execute(session, _ALERT_ID, {"key": draft.key}).scalar_one()


_ALERT_ID = Prepared(select(Alert.__table__.c.id).where(Alert.__table__.c.key == bindparam("key")))


def refresh_customers(
    session: Session, emails: Iterable[str], *, window: timedelta | None = None
) -> list[int]:
    """Bring each customer's record up to date; return the ids of alerts raised just now."""
    window = window or DUPLICATE_WINDOW
    raised: list[int] = []

    for email in sorted({e for e in emails if e}):
        advisory_lock(session, f"customer:{email}")  # see models.db.advisory_lock
        facts = load_customer_facts(session, email)
        rows = facts.view()

        _link_customer(session, email, rows)
        by_charge = {r.charge_id: r for r in rows if r.charge_id}
        if not by_charge:
            continue
        refunds_by_charge: dict[str, list[Refund]] = {}
        for refund in (r for r in facts.refunds if r.charge in by_charge):
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

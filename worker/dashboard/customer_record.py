"""One customer's record for the dashboard: their timeline, plans, and a pre-refund check per payment.

Built from the same facts and rules as the worker's own refresh (`load_customer_facts`, the sales
view, `build_plans`, `kept_duplicate`), so what staff read is what the worker acted on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from handlers import customers as customer_rules
from handlers.access_alerts import is_first_payment, kept_duplicate, product_identity
from handlers.plans import build_plans
from handlers.ranks import COUNTED_REFUND_STATUSES
from handlers.sales_view import EARLIEST, OPEN_DISPUTE_STATUSES, PAID_STATUSES, SaleRow, load_customer_facts
from models import Alert, Customer, CustomerNote, CustomerStripeId

DASHBOARD_ROOT = "https://dashboard.stripe.com"


@dataclass
class Check:
    """One line of the "before you refund" panel: `level` is ok, warn or stop."""

    topic: str
    level: str
    key: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class TimelineEntry:
    at: datetime | None
    kind: str  # purchase | payment | failed_payment | refund | dispute | alert | plan | note
    title: str
    amount: int | None = None
    currency: str | None = None
    status: str | None = None
    detail: str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, url)
    sale: SaleRow | None = None
    checks: list[Check] = field(default_factory=list)
    installment_label: tuple[str, dict] | None = None


@dataclass
class CustomerRecord:
    email: str
    name: str | None
    stripe_customer_ids: list[str]
    timeline: list[TimelineEntry]
    plans: list[Any]
    open_alerts: int
    exists: bool
    # Stripe dashboard pages: each cus_ id, and each plan's subscription.
    customer_links: dict[str, str] = field(default_factory=dict)
    subscription_links: dict[str, str] = field(default_factory=dict)


def stripe_link(kind: str, object_id: str | None, live: bool, account: str = "") -> str | None:
    """The object's page in the Stripe dashboard, in test or live mode (and a Connect account's)."""
    if not object_id:
        return None
    paths = {
        "payment": "payments",
        "customer": "customers",
        "subscription": "subscriptions",
        "invoice": "invoices",
        "refund": "refunds",
        "dispute": "disputes",
    }
    parts = [DASHBOARD_ROOT]
    if account:
        parts.append(account)
    if not live:
        parts.append("test")
    parts += [paths[kind], object_id]
    return "/".join(parts)


def installment_label(row: SaleRow) -> tuple[str, dict] | None:
    if row.kind == "installment" and row.installment:
        if row.installments_total:
            return "installment_k_of_n", {"k": row.installment, "n": row.installments_total}
        return "installment_k", {"k": row.installment}
    if row.kind == "subscription" and row.installment:
        return "payment_k", {"k": row.installment}
    return None


def _same_product_elsewhere(row: SaleRow, rows: list[SaleRow], window: timedelta) -> list[SaleRow]:
    """Other first payments of the same product within the duplicate window (any status but failed)."""
    if not is_first_payment(row) or row.paid_at is None:
        return []
    identity = product_identity(row)
    return [
        other
        for other in rows
        if other is not row
        and other.charge_id != row.charge_id
        and other.status in PAID_STATUSES
        and other.paid_at is not None
        and is_first_payment(other)
        and product_identity(other) == identity
        and abs(other.paid_at - row.paid_at) <= window
    ]


def _name(row: SaleRow) -> str:
    return row.charge_id or row.payment_intent_id or row.funnel_purchase_id or "?"


def refund_checks(
    row: SaleRow, rows: list[SaleRow], disputes: dict[str, Any], window: timedelta
) -> list[Check]:
    """The seed article's pre-refund checklist, answered from the facts (the same duplicate rule as
    the access alert: `kept_duplicate`)."""
    checks: list[Check] = []
    refunded_in_full = row.refunded_amount >= row.amount > 0
    if refunded_in_full:
        checks.append(Check("check_refund", "ok", "already_refunded"))
    # Would this payment, once refunded, leave another paid purchase of the same product behind?
    as_if_refunded = SaleRow(**{**row.__dict__, "refunded_amount": row.amount})
    kept = kept_duplicate(as_if_refunded, rows, window)
    others = _same_product_elsewhere(row, rows, window)
    if kept is not None:
        day = kept.paid_at.date().isoformat() if kept.paid_at else "?"
        checks.append(Check("check_duplicate", "warn", "dup_yes", {"other": _name(kept), "day": day}))
        checks.append(Check("check_access", "warn", "access_risk", {"other": _name(kept)}))
    elif others:
        # The other purchases were refunded already: this one is what the customer still holds.
        listed = ", ".join(_name(other) for other in others)
        checks.append(Check("check_duplicate", "warn", "dup_others_refunded", {"others": listed}))
        if not refunded_in_full:
            checks.append(Check("check_access", "warn", "access_last_copy"))
    else:
        checks.append(Check("check_duplicate", "ok", "dup_no"))
        if not refunded_in_full:
            checks.append(Check("check_access", "ok", "access_ok"))
    label = installment_label(row)
    if label is not None:
        checks.append(Check("check_installment", "warn", "installment_note", {"label": label}))
    else:
        checks.append(Check("check_installment", "ok", "not_installment"))
    dispute = disputes.get(row.charge_id or "")
    if dispute is None:
        checks.append(Check("check_dispute", "ok", "no_dispute"))
    elif dispute.status in OPEN_DISPUTE_STATUSES:
        key = "dispute_open_refundable" if dispute.is_charge_refundable else "dispute_open"
        level = "warn" if dispute.is_charge_refundable else "stop"
        checks.append(Check("check_dispute", level, key, {"status": dispute.status}))
    else:
        checks.append(Check("check_dispute", "ok", "dispute_closed", {"status": dispute.status}))
    return checks


def load_record(session, email: str, window: timedelta) -> CustomerRecord:
    facts = load_customer_facts(session, email)
    parts = [(part, part.view()) for part in facts.by_account()]
    rows = [row for _, part_rows in parts for row in part_rows]
    plans = [plan for part, part_rows in parts for plan in build_plans(part, part_rows)]
    customer = session.get(Customer, email)
    stripe_ids = sorted(
        session.execute(
            select(CustomerStripeId.stripe_customer_id).where(CustomerStripeId.email == email)
        ).scalars()
    )
    notes = (
        session.execute(
            select(CustomerNote).where(CustomerNote.email == email).order_by(CustomerNote.created_at)
        )
        .scalars()
        .all()
    )
    alerts = (
        session.execute(select(Alert).where(Alert.customer_email == email).order_by(Alert.created_at))
        .scalars()
        .all()
    )

    live_of = {c.id: c.livemode for c in facts.charges}
    account_of = {c.id: c.account for c in facts.charges}
    live_default = any(live_of.values())
    disputes = {d.charge: d for d in facts.disputes if d.charge}
    note_of_refund = {n.refund_id: n for n in notes if n.refund_id}

    timeline: list[TimelineEntry] = []
    for _, part_rows in parts:
        for row in part_rows:
            live = live_of.get(row.charge_id or "", live_default)
            account = account_of.get(row.charge_id or "", "")
            links = [
                ("Stripe", link)
                for link in (stripe_link("payment", row.charge_id or row.payment_intent_id, live, account),)
                if link
            ]
            if row.invoice_id:
                links.append(("invoice", stripe_link("invoice", row.invoice_id, live, account)))
            kind = "failed_payment" if row.status == "failed" else "payment"
            entry = TimelineEntry(
                at=row.paid_at,
                kind=kind,
                title=row.product or "",
                amount=row.amount,
                currency=row.currency,
                status=row.status,
                detail=row.failure_message if kind == "failed_payment" else None,
                links=links,
                sale=row,
                installment_label=installment_label(row),
            )
            if row.status in PAID_STATUSES and row.charge_id:
                entry.checks = refund_checks(row, part_rows, disputes, window)
            timeline.append(entry)
    matched = {row.funnel_purchase_id for row in rows if row.funnel_purchase_id}
    for purchase in facts.purchases:
        if purchase.purchase_id in matched:
            continue
        timeline.append(
            TimelineEntry(
                at=purchase.purchased_at,
                kind="purchase",
                title=purchase.product_name,
                amount=purchase.amount,
                currency=purchase.currency,
                status=purchase.status,
                detail=f"funnel purchase {purchase.purchase_id}",
            )
        )
    for refund in facts.refunds:
        note = note_of_refund.get(refund.id)
        live = live_of.get(refund.charge or "", live_default)
        timeline.append(
            TimelineEntry(
                at=refund.created,
                kind="refund",
                title=note.text if note else f"refund {refund.id}",
                amount=refund.amount,
                currency=refund.currency,
                status=refund.status if refund.status else None,
                detail=None if refund.status in COUNTED_REFUND_STATUSES else "not counted",
                links=[("Stripe", stripe_link("payment", refund.charge, live, refund.account))]
                if refund.charge
                else [],
            )
        )
    for dispute in facts.disputes:
        live = live_of.get(dispute.charge or "", live_default)
        timeline.append(
            TimelineEntry(
                at=dispute.created,
                kind="dispute",
                title=dispute.reason or "dispute",
                amount=dispute.amount,
                currency=dispute.currency,
                status=dispute.status,
                detail=f"{dispute.id} on {dispute.charge}",
                links=[("Stripe", stripe_link("dispute", dispute.id, live, dispute.account))],
            )
        )
    for alert in alerts:
        timeline.append(
            TimelineEntry(
                at=alert.created_at,
                kind="alert",
                title=alert.message,
                status=alert.status,
                detail=f"{alert.kind} #{alert.id}",
            )
        )
    for note in notes:
        if note.kind == "refund" and note.refund_id:
            continue  # shown on its refund
        timeline.append(TimelineEntry(at=note.created_at, kind="note", title=note.text, detail=note.kind))
    for plan in plans:
        if plan.canceled_at is not None:
            timeline.append(
                TimelineEntry(
                    at=plan.canceled_at,
                    kind="plan",
                    title=plan.product or plan.subscription_id,
                    status=plan.status,
                    detail=plan.subscription_id,
                )
            )
    timeline.sort(key=lambda e: (e.at is None, e.at or EARLIEST))
    account_of_customer = {c.customer: c.account for c in facts.charges if c.customer}
    account_of_subscription = {s.id: s.account for s in facts.subscriptions}
    return CustomerRecord(
        customer_links={
            cus: stripe_link("customer", cus, live_default, account_of_customer.get(cus, ""))
            for cus in stripe_ids
        },
        subscription_links={
            plan.subscription_id: stripe_link(
                "subscription",
                plan.subscription_id,
                live_default,
                account_of_subscription.get(plan.subscription_id, ""),
            )
            for plan in plans
        },
        email=email,
        name=customer.name
        if customer
        else next((p.customer_name for p in facts.purchases if p.customer_name), None),
        stripe_customer_ids=stripe_ids,
        timeline=timeline,
        plans=plans,
        open_alerts=sum(1 for a in alerts if a.status == "open"),
        exists=bool(customer or rows or facts.purchases or notes or alerts),
    )


def duplicate_window() -> timedelta:
    return customer_rules.DUPLICATE_WINDOW

"""The reconciliation report: per-currency totals and discrepancies for a window, by SQL aggregates,
the counts of each account listed, and the payments the run added, named as the sales view shows them.

Totals and discrepancies are queried rather than built from the sales view in memory, so a window of a
million charges costs the database some work and this process almost no memory. Only the found
payments are read through the sales view, and at most `FOUND_LISTED` of them (the run keeps that many).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from handlers.customers import emails_for_charges
from handlers.ranks import COUNTED_REFUND_STATUSES
from handlers.sales_view import EARLIEST, SaleRow, build_sales_view, load_customer_facts
from models import Charge, FunnelPurchase, Invoice, InvoicePayment, Refund
from models.types import iso

if TYPE_CHECKING:
    from handlers.reconcile import Counts, Tally

SAMPLE = 20
# How the report names the platform's own Stripe account (its rows are stored with account "").
PLATFORM_LABEL = "platform"


def account_label(account: str) -> str:
    return account or PLATFORM_LABEL


def _per_currency(session, query) -> dict[str, int]:
    return {currency: int(total or 0) for currency, total in session.execute(query).all()}


def _charge_subscription():
    """Columns giving a charge's invoice subscription, through either API shape's links."""
    by_payment = aliased(InvoicePayment)
    direct, via_payment, by_charge = aliased(Invoice), aliased(Invoice), aliased(Invoice)
    joins = [
        (by_payment, by_payment.payment_intent_id == Charge.payment_intent),
        (direct, direct.id == Charge.invoice_id),
        (via_payment, via_payment.id == by_payment.invoice_id),
        (by_charge, by_charge.charge_id == Charge.id),
    ]
    subscription = func.coalesce(
        direct.subscription_id, via_payment.subscription_id, by_charge.subscription_id
    )
    return joins, subscription


def _unlinked_stripe_payments(session, start: datetime, end: datetime) -> tuple[int, list[str]]:
    joins, subscription = _charge_subscription()
    linked = exists().where(
        or_(
            FunnelPurchase.charge_id == Charge.id,
            FunnelPurchase.charge_id == Charge.payment_intent,
            and_(subscription.is_not(None), FunnelPurchase.subscription_id == subscription),
        )
    )
    query = select(Charge.id).select_from(Charge)
    for table, condition in joins:
        query = query.outerjoin(table, condition)
    query = query.where(Charge.status == "succeeded", Charge.created >= start, Charge.created < end, ~linked)
    # Counted and sampled in SQL: a window of a million unlinked charges must not be held in memory.
    count = session.execute(select(func.count(func.distinct(query.subquery().c.id)))).scalar_one()
    sample = session.execute(
        query.with_only_columns(Charge.id, Charge.created)
        .distinct()
        .order_by(Charge.created, Charge.id)
        .limit(SAMPLE)
    ).all()
    return count, [row[0] for row in sample]


def _funnel_sales_without_payment(session, start: datetime, end: datetime) -> tuple[int, list[str]]:
    paid = exists().where(
        or_(Charge.id == FunnelPurchase.charge_id, Charge.payment_intent == FunnelPurchase.charge_id)
    )
    billed = exists().where(
        and_(
            FunnelPurchase.subscription_id.is_not(None),
            Invoice.subscription_id == FunnelPurchase.subscription_id,
        )
    )
    query = (
        select(FunnelPurchase.purchase_id)
        .where(FunnelPurchase.purchased_at >= start, FunnelPurchase.purchased_at < end, ~paid, ~billed)
        .order_by(FunnelPurchase.purchased_at, FunnelPurchase.purchase_id)
    )
    ids = list(dict.fromkeys(session.execute(query).scalars().all()))
    return len(ids), ids[:SAMPLE]


def _amount_mismatches(session, start: datetime, end: datetime) -> list[dict[str, Any]]:
    query = (
        select(
            FunnelPurchase.purchase_id,
            FunnelPurchase.amount,
            FunnelPurchase.currency,
            Charge.id,
            Charge.amount,
            Charge.currency,
        )
        .join(
            Charge,
            or_(Charge.id == FunnelPurchase.charge_id, Charge.payment_intent == FunnelPurchase.charge_id),
        )
        .where(FunnelPurchase.purchased_at >= start, FunnelPurchase.purchased_at < end)
        .where(or_(FunnelPurchase.amount != Charge.amount, FunnelPurchase.currency != Charge.currency))
        .order_by(FunnelPurchase.purchased_at, FunnelPurchase.purchase_id)
        .limit(SAMPLE)
    )
    return [
        {
            "funnel_purchase_id": pid,
            "funnel_amount": fa,
            "funnel_currency": fc,
            "charge_id": cid,
            "stripe_amount": sa,
            "stripe_currency": sc,
        }
        for pid, fa, fc, cid, sa, sc in session.execute(query).all()
    ]


def _found_entry(row: SaleRow, account: str) -> dict[str, Any]:
    return {
        "id": row.charge_id,
        "kind": row.kind,
        "installment": row.installment,
        "installments_total": row.installments_total,
        "account": account_label(account),
        "customer_email": row.customer_email,
        "amount": row.amount,
        "currency": row.currency,
        "status": row.status,
        "product": row.product,
        "paid_at": iso(row.paid_at),
        "subscription_id": row.subscription_id,
    }


def found_payments(session, charge_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The payments the run added, as the sales view now shows them (one-time, installment k of N,
    subscription payment k), oldest first: from each customer's view, as staff see it."""
    if not charge_ids:
        return []
    charges = {c.id: c for c in session.exec(select(Charge).where(Charge.id.in_(list(charge_ids)))).scalars()}
    by_email: dict[str | None, list[str]] = defaultdict(list)
    for charge_id in charges:
        emails = sorted(emails_for_charges(session, [charge_id]))
        by_email[emails[0] if emails else None].append(charge_id)
    rows: dict[str, SaleRow] = {}
    for email, ids in by_email.items():
        view = load_customer_facts(session, email).view() if email else []
        rows.update((r.charge_id, r) for r in view if r.charge_id in ids)
    # A payment no customer's view holds (no email reached us): what the charge alone says.
    alone = [charges[i] for i in charges if i not in rows]
    rows.update((r.charge_id, r) for r in build_sales_view(alone, [], [], [], []))
    found = [(rows[i], charges[i].account) for i in charges if i in rows]
    found.sort(key=lambda pair: (pair[0].paid_at is None, pair[0].paid_at or EARLIEST, pair[0].charge_id))
    return [_found_entry(row, account) for row, account in found]


def _tally(tally: Tally) -> dict[str, Any]:
    return {
        "seen": tally.seen,
        "added": tally.added,
        "already_present": tally.already_present,
        "missed_webhooks": tally.missed_webhooks,
        "by_resource": tally.by_resource,
        "api_calls": tally.api_calls,
    }


def build_report(
    session, start: datetime, end: datetime, counts: Counts, *, run_id: int | None
) -> dict[str, Any]:
    in_window = and_(Charge.created >= start, Charge.created < end, Charge.status == "succeeded")
    gross = _per_currency(
        session, select(Charge.currency, func.sum(Charge.amount)).where(in_window).group_by(Charge.currency)
    )
    refunded = _per_currency(
        session,
        select(Refund.currency, func.sum(Refund.amount))
        .where(Refund.created >= start, Refund.created < end, Refund.status.in_(COUNTED_REFUND_STATUSES))
        .group_by(Refund.currency),
    )
    funnel = _per_currency(
        session,
        select(FunnelPurchase.currency, func.sum(FunnelPurchase.amount))
        .where(FunnelPurchase.purchased_at >= start, FunnelPurchase.purchased_at < end)
        .group_by(FunnelPurchase.currency),
    )
    currencies = sorted(set(gross) | set(refunded) | set(funnel) | set(counts.added_by_currency))
    totals = {
        currency: {
            "stripe_gross": gross.get(currency, 0),
            "refunded": refunded.get(currency, 0),
            "net": gross.get(currency, 0) - refunded.get(currency, 0),
            "funnel_view": funnel.get(currency, 0),
            "added": counts.added_by_currency.get(currency, 0),
        }
        for currency in currencies
    }
    unlinked_count, unlinked = _unlinked_stripe_payments(session, start, end)
    missing_count, missing = _funnel_sales_without_payment(session, start, end)
    return {
        "run_id": run_id,
        "window": {"since": iso(start), "until": iso(end)},
        "counts": {
            "seen": counts.seen,
            "added": counts.added,
            "already_present": counts.already_present,
            "missed_webhooks": counts.missed_webhooks,
            "by_resource": counts.by_resource,
        },
        "api_calls": counts.api_calls,
        "totals": totals,
        "discrepancies": {
            "funnel_sales_without_stripe_payment": {"count": missing_count, "sample": missing},
            "amount_mismatches": _amount_mismatches(session, start, end),
            "stripe_payments_without_funnel_purchase": {"count": unlinked_count, "sample": unlinked},
        },
        # Each account listed; the fields above are their sum.
        "accounts": {account_label(name): _tally(tally) for name, tally in counts.accounts.items()},
        # The payments this run added (their webhooks never arrived): the first FOUND_LISTED, and all.
        "found": found_payments(session, counts.found),
        "found_count": counts.found_count,
    }

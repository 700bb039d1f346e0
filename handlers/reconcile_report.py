"""The reconciliation report: per-currency totals and discrepancies for a window, by SQL aggregates.

Queried rather than built from the sales view in memory, so a window of a million charges costs the
database some work and this process almost no memory.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from handlers.ranks import COUNTED_REFUND_STATUSES
from models import Charge, FunnelPurchase, Invoice, InvoicePayment, Refund
from models.types import iso

if TYPE_CHECKING:
    from handlers.reconcile import Counts

SAMPLE = 20


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
    }

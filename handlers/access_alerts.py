"""Duplicate purchases, and the access alert a refund of one of them calls for.

A customer who bought the same product twice by mistake and got one purchase refunded often loses
access to the copy they did pay for: the membership site wired to the funnel revokes access on the
refund. These pure functions decide when that risk exists, from the customer's sales view rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from handlers.money import format_amount
from handlers.sales_view import SaleRow


@dataclass(frozen=True)
class AlertDraft:
    key: str
    kind: str
    customer_email: str | None
    product: str | None
    refund_id: str | None
    charge_id: str | None
    kept_charge_id: str | None
    amount: int | None
    currency: str | None
    message: str
    # What the alert's subject is now (a dispute's status, a failed invoice's state). A change of it is
    # news and is sent again; a fact filled in later (a kept charge, a customer) only updates the alert.
    state: str | None = None


def product_identity(row: SaleRow) -> str:
    """What "the same product" means: the funnel product, else Stripe's product line, else the description."""
    if row.funnel_purchase_id and row.product:
        return f"funnel:{row.product.strip().lower()}"
    return f"text:{(row.product or '').strip().lower()}"


def is_first_payment(row: SaleRow) -> bool:
    """One-time purchases, and the first payment of a plan or subscription (later installments of one
    plan are not duplicates of each other)."""
    return row.kind == "one_time" or row.installment in (None, 1)


def _fully_refunded(row: SaleRow) -> bool:
    return row.refunded_amount >= row.amount > 0


def kept_duplicate(refunded: SaleRow, rows: list[SaleRow], window: timedelta) -> SaleRow | None:
    """The paid, non-refunded purchase of the same product the customer still holds, if any."""
    if not is_first_payment(refunded) or refunded.paid_at is None:
        return None
    identity = product_identity(refunded)
    for row in rows:
        if row is refunded or row.charge_id == refunded.charge_id:
            continue
        if not is_first_payment(row) or _fully_refunded(row) or row.paid_at is None:
            continue
        if product_identity(row) == identity and abs(row.paid_at - refunded.paid_at) <= window:
            return row
    return None


def _payment_name(sale: SaleRow) -> str:
    """How staff find a payment in Stripe: its charge, or (when only the funnel's record of it has
    arrived so far) its payment intent and funnel purchase."""
    if sale.charge_id:
        return f"charge {sale.charge_id}"
    named = [f"payment {sale.payment_intent_id}"] if sale.payment_intent_id else []
    if sale.funnel_purchase_id:
        named.append(f"funnel purchase {sale.funnel_purchase_id}")
    return ", ".join(named) or "purchase"


def access_alert(refund_id: str, refunded: SaleRow, kept: SaleRow) -> AlertDraft:
    amount = format_amount(refunded.amount, refunded.currency)
    paid = kept.paid_at.strftime("%Y-%m-%d") if kept.paid_at else "?"
    message = (
        f"{refunded.customer_email} bought \u201c{refunded.product}\u201d twice; refund {refund_id} fully "
        f"refunded charge {refunded.charge_id} ({amount}), but they still hold paid {_payment_name(kept)} "
        f"({format_amount(kept.amount, kept.currency)}, paid {paid}). The membership site may have revoked "
        "their access on the refund. Check the membership platform, re-grant access if it was removed, "
        "and tell the customer their remaining purchase is intact."
    )
    return AlertDraft(
        key=f"access_revocation:{refund_id}",
        kind="access_revocation",
        customer_email=refunded.customer_email,
        product=refunded.product,
        refund_id=refund_id,
        charge_id=refunded.charge_id,
        kept_charge_id=kept.charge_id,
        amount=refunded.amount,
        currency=refunded.currency,
        message=message,
    )

"""What a failed-installment alert says: who, which product, installment k of N, why, and what next.

One alert per invoice (a plan's or subscription's payment that failed), keyed by the invoice id, so
Stripe's retries of the same invoice update it rather than raise more. Its state moves from `retrying`
to `paid` (a retry succeeded) or `unpaid` (no retry is scheduled); each move is sent again.
"""

from __future__ import annotations

from handlers.access_alerts import AlertDraft
from handlers.money import format_amount
from handlers.sales_view import SaleRow


def _which(row: SaleRow) -> str:
    if row.kind == "installment":
        return f"installment {row.installment or '?'} of {row.installments_total or '?'}"
    return f"subscription payment {row.installment or '?'}"


def payment_failed_alert(failed: SaleRow, paid: SaleRow | None, invoice) -> AlertDraft:
    """`failed` is the invoice's latest failed attempt; `paid` the retry that paid it, if any."""
    amount = format_amount(failed.amount, failed.currency)
    why = (failed.failure_message or "no reason given").rstrip(".")
    who, product = failed.customer_email or "A customer", failed.product or "a product"
    head = f"{who}: {_which(failed)} of \u201c{product}\u201d ({amount}) failed: {why}."
    retry = invoice.next_payment_attempt if invoice is not None else None
    if paid is not None:
        state = "paid"
        tail = f" A retry paid it on {paid.paid_at:%Y-%m-%d} (charge {paid.charge_id}); nothing more to do."
    elif retry is not None:
        state = "retrying"
        tail = (
            f" Stripe retries on {retry:%Y-%m-%d %H:%M} UTC; consider asking the customer to update"
            " their card."
        )
    else:
        state = "unpaid"
        tail = (
            " No retry is scheduled: contact the customer; the subscription stays unpaid (or is cancelled)"
            " until it is paid."
        )
    return AlertDraft(
        key=f"payment_failed:{failed.invoice_id}",
        kind="payment_failed",
        customer_email=failed.customer_email,
        product=failed.product,
        refund_id=None,
        charge_id=failed.charge_id,
        kept_charge_id=None,
        amount=failed.amount,
        currency=failed.currency,
        message=f"{head}{tail} Invoice {failed.invoice_id}.",
        state=state,
    )

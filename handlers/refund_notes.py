"""What a refund note on a customer record says: the history staff would otherwise write by hand."""

from __future__ import annotations

from datetime import datetime

from handlers.money import format_amount
from handlers.sales_view import SaleRow
from models import Refund

STATUS_WORDS = {
    "succeeded": "refunded",
    "pending": "pending",
    "requires_action": "waiting for the customer's action",
    "failed": "FAILED: the money was not returned",
    "canceled": "CANCELED: the money was not returned",
}


def _day(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment else "date unknown"


def _which_payment(sale: SaleRow) -> str:
    if sale.kind == "installment" and sale.installment:
        return f"installment {sale.installment} of {sale.installments_total or '?'}"
    if sale.kind == "subscription" and sale.installment:
        return f"subscription payment {sale.installment}"
    return "one-time payment"


def refund_note_text(refund: Refund, sale: SaleRow | None) -> str:
    """One line a person can read aloud to the customer: when, how much, for what, and its ids."""
    amount = format_amount(refund.amount, refund.currency)
    status = STATUS_WORDS.get(refund.status or "", refund.status or "status unknown")
    full = sale is not None and refund.amount >= sale.amount
    parts = [
        f"{_day(refund.created)} refund of {amount}",
        f"({'full' if full else 'partial'}"
        + (f", of {format_amount(sale.amount, sale.currency)})" if sale is not None else ")"),
    ]
    if sale is not None:
        parts.append(f"for \u201c{sale.product or 'unnamed product'}\u201d, {_which_payment(sale)}")
    parts.append(f"- {status}.")
    parts.append(f"Reason: {(refund.reason or 'none given').replace('_', ' ')}.")
    parts.append(f"Charge {refund.charge or '?'}, refund {refund.id}.")
    return " ".join(parts)

"""What a dispute alert says: inquiry or chargeback, its deadline, and whether a refund still helps.

Stripe's dispute statuses: `warning_needs_response`, `warning_under_review` and `warning_closed` are an
inquiry (the bank asks questions; no money has been taken yet); `needs_response`, `under_review`, `won`,
`lost` and `prevented` are a chargeback. `is_charge_refundable` says whether refunding the charge is
still possible (after a full refund no further funds are withdrawn for the dispute).
"""

from __future__ import annotations

from datetime import datetime

from handlers.access_alerts import AlertDraft
from handlers.money import format_amount
from handlers.sales_view import SaleRow

WHAT_NEXT = {
    "warning_needs_response": "Answer the inquiry in the Stripe dashboard{due}.",
    "warning_under_review": "The bank is reviewing your answer to the inquiry.",
    "warning_closed": "The inquiry closed without becoming a chargeback; nothing more to do.",
    "needs_response": "Submit evidence in the Stripe dashboard{due}.",
    "under_review": "Evidence was submitted; the bank is reviewing it.",
    "won": "The dispute was won: the funds were returned to the balance.",
    "lost": "The dispute was lost: the money is gone and the sale no longer counts as kept.",
    "prevented": "The dispute was prevented before it became a chargeback; nothing more to do.",
}
OPEN_STATUSES = ("warning_needs_response", "needs_response")


def is_inquiry(status: str) -> bool:
    return status.startswith("warning_")


def _due(due_by: datetime | None) -> str:
    if due_by is None:
        return " (the Stripe dashboard shows the deadline)"
    return f" by {due_by.strftime('%Y-%m-%d %H:%M')} UTC"


def _refund_advice(dispute) -> str:
    if dispute.status not in OPEN_STATUSES:
        return ""
    if dispute.is_charge_refundable:
        return (
            " Refunding the charge is still possible: after a full refund no further funds are withdrawn"
            " for this dispute."
        )
    return " Do not refund the disputed charge as well: a refund now does not close the dispute."


def dispute_alert(dispute, sale: SaleRow | None, email: str | None, product: str | None) -> AlertDraft:
    """The alert for one dispute, from the dispute and (when stored) the sale it disputes."""
    who = email or "A customer (not yet known: the disputed charge has not reached us)"
    what = "an inquiry" if is_inquiry(dispute.status) else "a chargeback"
    reason = (dispute.reason or "no reason given").replace("_", " ")
    amount = format_amount(dispute.amount, dispute.currency)
    payment = f"charge {dispute.charge}"
    if sale is not None and sale.kind == "installment" and sale.installment:
        payment += f", installment {sale.installment} of {sale.installments_total or '?'}"
    bought = f" for \u201c{product}\u201d" if product else ""
    next_step = WHAT_NEXT.get(dispute.status, f"Status: {dispute.status}.").format(due=_due(dispute.due_by))
    message = (
        f"{who} opened {what} ({reason}) over {amount} on {payment}{bought}. {next_step}"
        f"{_refund_advice(dispute)} Dispute {dispute.id}, status {dispute.status}."
    )
    return AlertDraft(
        key=f"dispute:{dispute.id}",
        kind="dispute",
        customer_email=email,
        product=product,
        refund_id=None,
        charge_id=dispute.charge,
        kept_charge_id=None,
        amount=dispute.amount,
        currency=dispute.currency,
        message=message,
        state=dispute.status,
    )

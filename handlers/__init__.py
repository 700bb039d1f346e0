"""The dispatch table: which function applies which Stripe event type.

Types not listed here are stored as `ignored` and answered 200, so Stripe stops retrying them; they
stay in the event log and can be replayed once a handler exists.
"""

from __future__ import annotations

from handlers.context import FetchContext, Handler, HandlerContext, UnprocessableEvent
from handlers.disputes import fetch_disputed_charge, record_dispute
from handlers.payments import (
    fetch_charge_links,
    fetch_invoice_links,
    fetch_invoice_payment_links,
    record_charge,
    record_invoice,
    record_invoice_payment,
)
from handlers.purchases import record_funnel_purchase
from handlers.refunds import record_refund_event
from handlers.subscriptions import fetch_subscription_facts, record_subscription

_charge = Handler(apply=record_charge, fetch=fetch_charge_links)
_invoice = Handler(apply=record_invoice, fetch=fetch_invoice_links)
_invoice_payment = Handler(apply=record_invoice_payment, fetch=fetch_invoice_payment_links)
_refund = Handler(apply=record_refund_event)
_dispute = Handler(apply=record_dispute, fetch=fetch_disputed_charge)
_subscription = Handler(apply=record_subscription, fetch=fetch_subscription_facts)

DISPATCH: dict[str, Handler] = {
    "charge.succeeded": _charge,
    "charge.updated": _charge,
    "charge.captured": _charge,
    "charge.failed": _charge,
    "charge.refunded": _charge,
    "charge.refund.updated": _refund,
    "refund.created": _refund,
    "refund.updated": _refund,
    "refund.failed": _refund,
    "invoice.paid": _invoice,
    "invoice.payment_succeeded": _invoice,
    "invoice.payment_failed": _invoice,
    "invoice_payment.paid": _invoice_payment,
    "charge.dispute.created": _dispute,
    "charge.dispute.updated": _dispute,
    "charge.dispute.closed": _dispute,
    "charge.dispute.funds_withdrawn": _dispute,
    "charge.dispute.funds_reinstated": _dispute,
    "customer.subscription.created": _subscription,
    "customer.subscription.updated": _subscription,
    "customer.subscription.deleted": _subscription,
}


# ClickFunnels names its purchase webhooks freely ("created", "updated", ...); all record the purchase.
FUNNEL_PURCHASE = Handler(apply=record_funnel_purchase)


def handler_for(event_type: str) -> Handler | None:
    if event_type.startswith("funnel.purchase."):
        return FUNNEL_PURCHASE
    return DISPATCH.get(event_type)


__all__ = ["DISPATCH", "FetchContext", "Handler", "HandlerContext", "UnprocessableEvent", "handler_for"]

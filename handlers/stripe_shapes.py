"""Facts read from Stripe objects in either API shape, as plain dicts ready for the tables.

Before 2025-03-31 a charge names its invoice (`charge.invoice`) and an invoice names its subscription,
charge and payment intent. From 2025-03-31.basil on those fields are gone: the invoice's subscription
is at `parent.subscription_details.subscription` and the payment is linked through invoice payments.
Webhook payloads come in the seller's endpoint version, so every reader here accepts both.
"""

from __future__ import annotations

from typing import Any

from handlers.fields import minor_units, object_id, optional_str, required
from handlers.funnel import normalise_email
from models.types import from_unix


def _first_line(invoice: dict[str, Any]) -> dict[str, Any]:
    lines = (invoice.get("lines") or {}).get("data") or []
    return lines[0] if lines and isinstance(lines[0], dict) else {}


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """The subscription an invoice bills, from whichever shape the invoice came in."""
    direct = object_id(invoice.get("subscription"))  # before 2025-03-31
    if direct:
        return direct
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    if object_id(details.get("subscription")):
        return object_id(details.get("subscription"))
    for line in (invoice.get("lines") or {}).get("data") or []:
        if not isinstance(line, dict):
            continue
        from_line = object_id(line.get("subscription")) or object_id(
            ((line.get("parent") or {}).get("subscription_item_details") or {}).get("subscription")
        )
        if from_line:
            return from_line
    return None


def _line_price(line: dict[str, Any]) -> dict[str, Any] | str | None:
    # Before basil: line.price (or line.plan); from basil on: line.pricing.price_details.price.
    return (
        line.get("price")
        or line.get("plan")
        or ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    )


def invoice_facts(invoice: dict[str, Any], *, account: str, version: int) -> dict[str, Any]:
    line = _first_line(invoice)
    price = _line_price(line)
    paid_at = (invoice.get("status_transitions") or {}).get("paid_at")
    return {
        "id": required(invoice, "id", str),
        "account": account,
        "subscription_id": invoice_subscription_id(invoice),
        "customer": object_id(invoice.get("customer")),
        "customer_email": normalise_email(invoice.get("customer_email")),
        "billing_reason": optional_str(invoice, "billing_reason", 64),
        "status": optional_str(invoice, "status", 32),
        "amount_paid": minor_units(invoice, "amount_paid", default=0),
        "amount_due": minor_units(invoice, "amount_due", default=0),
        "attempt_count": _count(invoice.get("attempt_count")),
        "next_payment_attempt": _moment(invoice.get("next_payment_attempt")),
        "currency": required(invoice, "currency", str).lower(),
        "product": optional_str(line, "description", 1000) or optional_str(invoice, "description", 1000),
        "price_id": object_id(price),
        "charge_id": object_id(invoice.get("charge")),
        "payment_intent_id": object_id(invoice.get("payment_intent")),
        "paid_at": from_unix(paid_at) if isinstance(paid_at, int) else None,
        "created": from_unix(invoice.get("created")),
        "version": version,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 else 0


def _moment(value: Any) -> Any:
    return from_unix(value) if isinstance(value, int) and not isinstance(value, bool) else None


def invoice_is_paid(invoice: dict[str, Any]) -> bool:
    return invoice.get("status") == "paid" or invoice.get("paid") is True


def invoice_payment_facts(invoice_payment: dict[str, Any], *, version: int) -> dict[str, Any]:
    payment = invoice_payment.get("payment") or {}
    intent = payment.get("payment_intent")
    charge_id = object_id(payment.get("charge"))
    if charge_id is None and isinstance(intent, dict):
        charge_id = object_id(intent.get("latest_charge"))
    paid_at = (invoice_payment.get("status_transitions") or {}).get("paid_at")
    return {
        "id": required(invoice_payment, "id", str),
        "invoice_id": object_id(invoice_payment.get("invoice")) or required(invoice_payment, "invoice", str),
        "payment_intent_id": object_id(intent),
        "charge_id": charge_id,
        "amount_paid": invoice_payment.get("amount_paid"),
        "currency": (invoice_payment.get("currency") or "").lower() or None,
        "status": optional_str(invoice_payment, "status", 32),
        "paid_at": from_unix(paid_at) if isinstance(paid_at, int) else None,
        "version": version,
    }


def charge_email(charge: dict[str, Any]) -> str | None:
    customer = charge.get("customer")
    return (
        normalise_email((charge.get("billing_details") or {}).get("email"))
        or normalise_email(charge.get("receipt_email"))
        or (normalise_email(customer.get("email")) if isinstance(customer, dict) else None)
    )


def charge_facts(
    charge: dict[str, Any], *, account: str, version: int, event_id: str | None
) -> dict[str, Any]:
    return {
        "id": required(charge, "id", str),
        "account": account,
        "amount": minor_units(charge, "amount"),
        "amount_refunded": minor_units(charge, "amount_refunded", default=0),
        "currency": required(charge, "currency", str).lower(),
        "status": required(charge, "status", str),
        "paid": bool(charge.get("paid")),
        "refunded": bool(charge.get("refunded")),
        "customer": object_id(charge.get("customer")),
        "payment_intent": object_id(charge.get("payment_intent")),
        "description": optional_str(charge, "description", 1000),
        "customer_email": charge_email(charge),
        "invoice_id": object_id(charge.get("invoice")),  # before 2025-03-31 only
        "failure_code": optional_str(charge, "failure_code", 64),
        "failure_message": optional_str(charge, "failure_message", 500),
        "livemode": bool(charge.get("livemode")),
        "created": from_unix(charge.get("created")),
        "version": version,
        "last_event_id": event_id,
    }


def refund_facts(
    refund: dict[str, Any], *, account: str, version: int, event_id: str | None
) -> dict[str, Any]:
    return {
        "id": required(refund, "id", str),
        "account": account,
        "charge": object_id(refund.get("charge")),
        "payment_intent": object_id(refund.get("payment_intent")),
        "amount": minor_units(refund, "amount"),
        "currency": required(refund, "currency", str).lower(),
        "status": optional_str(refund, "status", 32),
        "reason": optional_str(refund, "reason", 64),
        "created": from_unix(refund.get("created")),
        "version": version,
        "last_event_id": event_id,
    }


def subscription_period_end(subscription: dict[str, Any]) -> int | None:
    """End of the paid period: `current_period_end` before 2025-03-31, per item from basil on."""
    if isinstance(subscription.get("current_period_end"), int):
        return subscription["current_period_end"]
    ends = [
        item.get("current_period_end")
        for item in (subscription.get("items") or {}).get("data") or []
        if isinstance(item, dict) and isinstance(item.get("current_period_end"), int)
    ]
    return max(ends) if ends else None


def subscription_facts(subscription: dict[str, Any], *, account: str, version: int) -> dict[str, Any]:
    details = subscription.get("cancellation_details")
    return {
        "id": required(subscription, "id", str),
        "account": account,
        "customer": object_id(subscription.get("customer")),
        "status": required(subscription, "status", str)[:32],
        "cancel_at_period_end": subscription.get("cancel_at_period_end") is True,
        "canceled_at": _moment(subscription.get("canceled_at")),
        "ended_at": _moment(subscription.get("ended_at")),
        "current_period_end": _moment(subscription_period_end(subscription)),
        "cancellation_reason": optional_str(details, "reason", 64) if isinstance(details, dict) else None,
        "created": _moment(subscription.get("created")),
        "version": version,
    }


def dispute_facts(dispute: dict[str, Any], *, account: str, version: int) -> dict[str, Any]:
    evidence = dispute.get("evidence_details")
    return {
        "id": required(dispute, "id", str),
        "account": account,
        "charge": object_id(dispute.get("charge")),
        "payment_intent": object_id(dispute.get("payment_intent")),
        "amount": minor_units(dispute, "amount"),
        "currency": required(dispute, "currency", str).lower(),
        "status": required(dispute, "status", str)[:32],
        "reason": optional_str(dispute, "reason", 64),
        "due_by": _moment(evidence.get("due_by")) if isinstance(evidence, dict) else None,
        "is_charge_refundable": dispute.get("is_charge_refundable") is True,
        "created": _moment(dispute.get("created")),
        "version": version,
    }

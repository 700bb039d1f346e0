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
        "currency": required(invoice, "currency", str).lower(),
        "product": optional_str(line, "description", 1000) or optional_str(invoice, "description", 1000),
        "price_id": object_id(price),
        "charge_id": object_id(invoice.get("charge")),
        "payment_intent_id": object_id(invoice.get("payment_intent")),
        "paid_at": from_unix(paid_at) if isinstance(paid_at, int) else None,
        "created": from_unix(invoice.get("created")),
        "version": version,
    }


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

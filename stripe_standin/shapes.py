"""Full newest-shape objects from compact stored ones.

Stored objects only need the fields that vary (ids, amounts, links, status); everything else Stripe
always sends is filled in here on the way out. Field names follow the 2025-03-31.basil+ objects.
The templates' nested values are shared between responses, so nothing downstream may mutate them:
`render.py` and `expand.py` copy before they change anything.
"""

from __future__ import annotations

from typing import Any

_ADDRESS = {"city": None, "country": None, "line1": None, "line2": None, "postal_code": None, "state": None}

# Every field of a dispute's `evidence`; all empty until the seller submits some.
_DISPUTE_EVIDENCE = (
    "access_activity_log", "billing_address", "cancellation_policy", "cancellation_policy_disclosure",
    "cancellation_rebuttal", "customer_communication", "customer_email_address", "customer_name",
    "customer_purchase_ip", "customer_signature", "duplicate_charge_documentation",
    "duplicate_charge_explanation", "duplicate_charge_id", "product_description", "receipt",
    "refund_policy", "refund_policy_disclosure", "refund_refusal_explanation", "service_date",
    "service_documentation", "shipping_address", "shipping_carrier", "shipping_date",
    "shipping_documentation", "shipping_tracking_number", "uncategorized_file", "uncategorized_text",
)  # fmt: skip

DEFAULTS: dict[str, dict[str, Any]] = {
    "charge": {
        "amount": 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": {"address": _ADDRESS, "email": None, "name": None, "phone": None, "tax_id": None},
        "calculated_statement_descriptor": None,
        "captured": True,
        "currency": "usd",
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": None,
        "payment_method": None,
        "payment_method_details": None,
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": False,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    },
    "refund": {
        "amount": 0,
        "balance_transaction": None,
        "charge": None,
        "currency": "usd",
        "destination_details": None,
        "metadata": {},
        "payment_intent": None,
        "reason": None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    },
    "customer": {
        "address": None,
        "balance": 0,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": None,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    },
    "payment_intent": {
        "amount": 0,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "confirmation_method": "automatic",
        "currency": "usd",
        "customer": None,
        "description": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    },
    "invoice": {
        "account_country": "US",
        "account_name": None,
        "account_tax_ids": None,
        "amount_overpaid": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": False,
        "automatic_tax": {"enabled": False, "liability": None, "status": None, "disabled_reason": None},
        "automatically_finalizes_at": None,
        "billing_reason": "manual",
        "collection_method": "charge_automatically",
        "currency": "usd",
        "custom_fields": None,
        "customer": None,
        "customer_address": None,
        "customer_email": None,
        "customer_name": None,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "ending_balance": 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "test_clock": None,
        "total_discount_amounts": [],
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
    },
    "invoice_payment": {
        "amount_paid": None,
        "amount_requested": 0,
        "currency": "usd",
        "invoice": None,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": None},
        "status": "paid",
    },
    "subscription": {
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"enabled": False, "liability": None, "disabled_reason": None},
        "billing_cycle_anchor_config": None,
        "billing_mode": {"type": "classic"},
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "currency": "usd",
        "customer": None,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "latest_invoice": None,
        "livemode": False,
        "metadata": {},
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": None,
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "status": "active",
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    },
    "dispute": {
        "amount": 0,
        "balance_transactions": [],
        "charge": None,
        "currency": "usd",
        "enhanced_eligibility_types": [],
        "evidence": dict.fromkeys(_DISPUTE_EVIDENCE),
        "evidence_details": {
            "due_by": None,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": None,
        "payment_method_details": None,
        "reason": "general",
        "status": "needs_response",
    },
    "event": {
        "api_version": None,
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
    },
}


def _charge(obj: dict[str, Any]) -> None:
    obj.setdefault("amount_captured", obj["amount"] if obj["captured"] else 0)


def _payment_intent(obj: dict[str, Any]) -> None:
    obj.setdefault("amount_received", obj["amount"] if obj["status"] == "succeeded" else 0)
    obj.setdefault("client_secret", f"{obj['id']}_secret_standin")


def subscription_of(invoice: dict[str, Any]) -> str | None:
    """The subscription an invoice bills, read the basil way."""
    parent = invoice.get("parent") or {}
    return (parent.get("subscription_details") or {}).get("subscription")


def _invoice(obj: dict[str, Any]) -> None:
    total = obj.setdefault("total", obj.get("amount_due", 0))
    paid = obj["status"] == "paid"
    obj.setdefault("subtotal", total)
    obj.setdefault("subtotal_excluding_tax", total)
    obj.setdefault("total_excluding_tax", total)
    obj.setdefault("amount_due", total)
    obj.setdefault("amount_paid", total if paid else 0)
    obj.setdefault("amount_remaining", obj["amount_due"] - obj["amount_paid"])
    obj.setdefault("attempted", paid)
    obj.setdefault("attempt_count", 1 if paid else 0)
    obj.setdefault("effective_at", None if obj["status"] == "draft" else obj["created"])
    obj.setdefault("period_start", obj["created"])
    obj.setdefault("period_end", obj["created"])
    obj.setdefault(
        "status_transitions",
        {
            "finalized_at": None if obj["status"] == "draft" else obj["created"],
            "marked_uncollectible_at": None,
            "paid_at": obj["created"] if paid else None,
            "voided_at": None,
        },
    )
    if "lines" not in obj:
        obj["lines"] = _invoice_lines(obj)


def _invoice_lines(invoice: dict[str, Any]) -> dict[str, Any]:
    """One line for the whole amount, linked to the subscription the basil way (`parent`)."""
    subscription = subscription_of(invoice)
    if subscription:
        parent = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription,
                "subscription_item": invoice.get("subscription_item"),
            },
        }
    else:
        parent = None
    line = {
        "id": "il_" + invoice["id"].removeprefix("in_"),
        "object": "line_item",
        "amount": invoice["total"],
        "currency": invoice["currency"],
        "description": invoice.get("description"),
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": invoice["livemode"],
        "metadata": {},
        "parent": parent,
        "period": {"start": invoice["period_start"], "end": invoice["period_end"]},
        "pretax_credit_amounts": [],
        "pricing": None,
        "quantity": 1,
        "subtotal": invoice["total"],
        "taxes": [],
    }
    return {"object": "list", "data": [line], "has_more": False, "url": f"/v1/invoices/{invoice['id']}/lines"}


def _invoice_payment(obj: dict[str, Any]) -> None:
    paid = obj["status"] == "paid"
    if obj["amount_paid"] is None and paid:
        obj["amount_paid"] = obj["amount_requested"]
    obj.setdefault("status_transitions", {"canceled_at": None, "paid_at": obj["created"] if paid else None})


def _subscription(obj: dict[str, Any]) -> None:
    obj.setdefault("start_date", obj["created"])
    obj.setdefault("billing_cycle_anchor", obj["start_date"])
    obj.setdefault(
        "items",
        {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={obj['id']}",
        },
    )


_FILL = {
    "charge": _charge,
    "payment_intent": _payment_intent,
    "invoice": _invoice,
    "invoice_payment": _invoice_payment,
    "subscription": _subscription,
}


def complete(stored: dict[str, Any]) -> dict[str, Any]:
    """A new top-level dict with every field Stripe sends; `stored` is not changed."""
    kind = stored.get("object", "")
    obj = {**DEFAULTS.get(kind, {}), **stored}
    fill = _FILL.get(kind)
    if fill is not None:
        fill(obj)
    return obj

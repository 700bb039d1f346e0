"""A seller's month as Stripe events, in the pre-2025-03-31 shape and in the basil-and-later shape.

A funnel sale of a 3-payment plan (the funnel records payment 1; payments 2 and 3 happen directly
between the customer and Stripe), a monthly subscription, and a one-time purchase.
"""

from __future__ import annotations

from typing import Any

from tests.stripe_fixtures import charge, event

DAY = 86_400
T0 = 1_790_000_000  # 2026-09-21
PRE_BASIL = "2024-06-20"
BASIL = "2025-03-31.basil"
PLAN_EMAIL = "buyer@example.com"


def funnel_purchase(
    purchase_id: int = 1001,
    *,
    name: str = "Course (3 payments)",
    cents: int = 10_000,
    currency: str = "usd",
    cancel_after: int | None = 3,
    subscription_id: str | None = "sub_plan",
    charge_id: str | None = "pi_plan1",
    email: str = "Buyer@Example.com",
    created_at: str = "2026-09-21T00:00:00Z",
) -> dict[str, Any]:
    product: dict[str, Any] = {
        "id": 77,
        "name": name,
        "amount": {"cents": cents, "currency_iso": currency.upper()},
    }
    if cancel_after is not None:
        product.update(stripe_plan="plan_course", stripe_cancel_after_payments=cancel_after)
    purchase = {
        "id": purchase_id,
        "products": [product],
        "contact": {"email": email, "first_name": "Aiko", "last_name": "Sato"},
        "subscription_id": subscription_id,
        "charge_id": charge_id,
        "status": "paid",
        "created_at": created_at,
        "updated_at": created_at,
    }
    return {"event": "created", "purchase": purchase}


def _invoice(
    invoice_id: str,
    subscription: str,
    number: int,
    created: int,
    *,
    shape: str,
    charge_id: str,
    intent: str,
    amount: int,
    email: str,
    description: str,
) -> dict[str, Any]:
    invoice: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "amount_paid": amount,
        "currency": "usd",
        "customer": "cus_plan",
        "customer_email": email,
        "billing_reason": "subscription_create" if number == 1 else "subscription_cycle",
        "status": "paid",
        "created": created,
        "status_transitions": {"paid_at": created + 5},
        "lines": {
            "object": "list",
            "data": [{"id": f"il_{invoice_id}", "description": description, "amount": amount}],
        },
    }
    if shape == PRE_BASIL:
        invoice.update(subscription=subscription, charge=charge_id, payment_intent=intent, paid=True)
        invoice["lines"]["data"][0]["subscription"] = subscription
    else:
        invoice["parent"] = {
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription},
        }
        invoice["lines"]["data"][0]["parent"] = {"subscription_item_details": {"subscription": subscription}}
    return invoice


def subscription_payment_events(
    subscription: str,
    payments: int,
    *,
    shape: str,
    amount: int = 10_000,
    email: str = PLAN_EMAIL,
    prefix: str = "plan",
    description: str = "Course (3 payments)",
    start: int = T0,
) -> list[dict[str, Any]]:
    """charge.succeeded + invoice.paid (+ invoice_payment.paid from basil on) for each payment."""
    events = []
    for number in range(1, payments + 1):
        created = start + (number - 1) * 30 * DAY
        charge_id, intent, invoice_id = f"ch_{prefix}{number}", f"pi_{prefix}{number}", f"in_{prefix}{number}"
        paid = charge(
            charge_id,
            amount=amount,
            payment_intent=intent,
            created=created,
            customer="cus_plan",
            billing_details={"email": email},
            description="Subscription update",
        )
        if shape == PRE_BASIL:
            paid["invoice"] = invoice_id
        events.append(
            event("charge.succeeded", paid, event_id=f"evt_{charge_id}", created=created, api_version=shape)
        )
        invoice = _invoice(
            invoice_id,
            subscription,
            number,
            created,
            shape=shape,
            charge_id=charge_id,
            intent=intent,
            amount=amount,
            email=email,
            description=description,
        )
        events.append(
            event(
                "invoice.paid", invoice, event_id=f"evt_{invoice_id}", created=created + 5, api_version=shape
            )
        )
        if shape != PRE_BASIL:
            invoice_payment = {
                "id": f"inpay_{prefix}{number}",
                "object": "invoice_payment",
                "invoice": invoice_id,
                "amount_paid": amount,
                "currency": "usd",
                "payment": {"type": "payment_intent", "payment_intent": intent},
                "status": "paid",
                "status_transitions": {"paid_at": created + 5},
            }
            events.append(
                event(
                    "invoice_payment.paid",
                    invoice_payment,
                    event_id=f"evt_inpay_{prefix}{number}",
                    created=created + 6,
                    api_version=shape,
                )
            )
    return events

"""The demo's month of a funnel seller, as Stripe objects, the events Stripe would send, and funnel webhooks.

- Aiko buys a 3-payment plan (33,000 JPY each). The funnel records payment 1; payments 2 and 3 are
  charged by Stripe directly. Payment 3's webhooks are never delivered: the nightly run finds it.
- Ben subscribes to a monthly membership ($29), two payments so far.
- Mika buys the same video course twice by mistake, a minute apart, under two Stripe customers (the
  funnel made a new one for the second order); staff refund the second in full.
- Ken buys a coaching session and gets part of it refunded.
- Ben's bank disputes his second membership payment as fraudulent (a chargeback awaiting a response).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "2025-03-31.basil"
DAY = 86_400


@dataclass
class Scenario:
    objects: list[dict[str, Any]] = field(default_factory=list)  # what the Stripe stand-in holds
    events: list[dict[str, Any]] = field(default_factory=list)  # what Stripe delivers, in order
    funnel_webhooks: list[dict[str, Any]] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)  # object ids whose webhooks never arrive
    _counter: int = 0

    def event(self, event_type: str, obj: dict[str, Any], created: int, *, delivered: bool = True) -> None:
        self._counter += 1
        document = {
            "id": f"evt_demo{self._counter:04d}",
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "livemode": False,
            "pending_webhooks": 1,
            "type": event_type,
            # A snapshot: the object changes later (a refund), the event keeps what it said then.
            "data": {"object": copy.deepcopy(obj)},
        }

        if delivered:
            self.events.append(document)


def _charge(
    charge_id: str, amount: int, currency: str, created: int, customer: str, email: str, text: str
) -> dict:
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": 0,
        "currency": currency,
        "customer": customer,
        "billing_details": {"email": email, "name": None},
        "description": text,
        "paid": True,
        "refunded": False,
        "status": "succeeded",
        "captured": True,
        "payment_intent": "pi_" + charge_id.removeprefix("ch_"),
        "created": created,
        "livemode": False,
    }


def _subscription_payment(
    s: Scenario, sub: str, n: int, charge: dict, product: str, *, delivered: bool
) -> None:
    invoice_id, created = f"in_{charge['id'].removeprefix('ch_')}", charge["created"]
    invoice = {
        "id": invoice_id,
        "object": "invoice",
        "customer": charge["customer"],
        "customer_email": charge["billing_details"]["email"],
        "currency": charge["currency"],
        "amount_due": charge["amount"],
        "amount_paid": charge["amount"],
        "billing_reason": "subscription_create" if n == 1 else "subscription_cycle",
        "status": "paid",
        "created": created,
        "status_transitions": {"paid_at": created + 2},
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub}},
        "lines": {
            "object": "list",
            "data": [{"id": f"il_{invoice_id}", "description": product, "amount": charge["amount"]}],
        },
    }
    invoice_payment = {
        "id": f"inpay_{charge['id'].removeprefix('ch_')}",
        "object": "invoice_payment",
        "invoice": invoice_id,
        "amount_paid": charge["amount"],
        "amount_requested": charge["amount"],
        "currency": charge["currency"],
        "is_default": True,
        "payment": {"type": "payment_intent", "payment_intent": charge["payment_intent"]},
        "status": "paid",
        "status_transitions": {"paid_at": created + 2},
        "created": created + 2,
    }
    s.objects += [charge, invoice, invoice_payment]
    s.event("charge.succeeded", charge, created, delivered=delivered)
    s.event("invoice.paid", invoice, created + 2, delivered=delivered)
    s.event("invoice_payment.paid", invoice_payment, created + 3, delivered=delivered)
    if not delivered:
        s.undelivered.append(charge["id"])


def _funnel(
    purchase_id: int,
    email: str,
    name: str,
    cents: int,
    currency: str,
    created: int,
    *,
    charge_id: str,
    subscription: str | None = None,
    payments: int | None = None,
) -> dict:
    product: dict[str, Any] = {
        "id": purchase_id * 10,
        "name": name,
        "amount": {"cents": cents, "currency_iso": currency.upper()},
    }
    if subscription:
        product.update(stripe_plan=f"plan_{purchase_id}", stripe_cancel_after_payments=payments or 50_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    return {
        "event": "created",
        "purchase": {
            "id": purchase_id,
            "products": [product],
            "contact": {"email": email},
            "subscription_id": subscription,
            "charge_id": charge_id,
            "status": "paid",
            "created_at": stamp,
            "updated_at": stamp,
        },
    }


def build(now: int | None = None) -> Scenario:
    now = int(time.time()) if now is None else now
    start = now - 65 * DAY
    s = Scenario()
    s.objects += [
        {"id": "cus_demo_aiko", "object": "customer", "email": "aiko@example.jp", "created": start},
        {"id": "cus_demo_ben", "object": "customer", "email": "ben@example.com", "created": start},
        {"id": "cus_demo_mika1", "object": "customer", "email": "mika@example.com", "created": start},
        {"id": "cus_demo_mika2", "object": "customer", "email": "mika@example.com", "created": start},
        {"id": "cus_demo_ken", "object": "customer", "email": "ken@example.com", "created": start},
    ]

    plan = "Online course (3 payments)"
    s.funnel_webhooks.append(
        _funnel(
            5001,
            "Aiko@Example.jp",
            plan,
            33_000,
            "jpy",
            start,
            charge_id="pi_demo_plan1",
            subscription="sub_demo_plan",
            payments=3,
        )
    )
    for n in (1, 2, 3):
        charge = _charge(
            f"ch_demo_plan{n}",
            33_000,
            "jpy",
            start + (n - 1) * 30 * DAY,
            "cus_demo_aiko",
            "aiko@example.jp",
            "Subscription update",
        )
        _subscription_payment(s, "sub_demo_plan", n, charge, plan, delivered=n < 3)

    membership = "Membership (monthly)"
    s.funnel_webhooks.append(
        _funnel(
            5002,
            "ben@example.com",
            membership,
            2_900,
            "usd",
            start + 10 * DAY,
            charge_id="pi_demo_member1",
            subscription="sub_demo_member",
        )
    )
    for n in (1, 2):
        charge = _charge(
            f"ch_demo_member{n}",
            2_900,
            "usd",
            start + (10 + (n - 1) * 30) * DAY,
            "cus_demo_ben",
            "ben@example.com",
            "Subscription update",
        )
        _subscription_payment(s, "sub_demo_member", n, charge, membership, delivered=True)

    course, bought = "Video course", now - 3 * DAY
    for n, customer in ((1, "cus_demo_mika1"), (2, "cus_demo_mika2")):
        charge = _charge(
            f"ch_demo_video{n}", 19_800, "usd", bought + (n - 1) * 60, customer, "mika@example.com", course
        )
        s.funnel_webhooks.append(
            _funnel(
                5002 + n,
                "mika@example.com",
                course,
                19_800,
                "usd",
                charge["created"],
                charge_id=charge["payment_intent"],
            )
        )
        s.objects.append(charge)
        s.event("charge.succeeded", charge, charge["created"])
    _refund(s, "ch_demo_video2", "re_demo_duplicate", 19_800, "usd", bought + DAY, "duplicate")

    coaching = _charge(
        "ch_demo_coach", 12_000, "usd", now - 2 * DAY, "cus_demo_ken", "ken@example.com", "Coaching session"
    )
    s.funnel_webhooks.append(
        _funnel(
            5005,
            "ken@example.com",
            "Coaching session",
            12_000,
            "usd",
            coaching["created"],
            charge_id=coaching["payment_intent"],
        )
    )
    s.objects.append(coaching)
    s.event("charge.succeeded", coaching, coaching["created"])
    _refund(s, "ch_demo_coach", "re_demo_partial", 4_000, "usd", now - DAY, "requested_by_customer")
    _dispute(s, "ch_demo_member2", "dp_demo_member2", now - DAY // 2, due_in_days=7)
    return s


def _dispute(s: Scenario, charge_id: str, dispute_id: str, created: int, due_in_days: int) -> None:
    """A chargeback (not an inquiry): the money is held until the seller answers by `due_by`."""
    charge = next(o for o in s.objects if o["id"] == charge_id)
    charge["disputed"] = True
    dispute = {
        "id": dispute_id,
        "object": "dispute",
        "amount": charge["amount"],
        "charge": charge_id,
        "currency": charge["currency"],
        "payment_intent": charge["payment_intent"],
        "reason": "fraudulent",
        "status": "needs_response",
        "is_charge_refundable": False,
        "livemode": False,
        "created": created,
        "evidence_details": {
            "due_by": created + due_in_days * DAY,
            "has_evidence": False,
            "submission_count": 0,
        },
        "metadata": {},
    }
    s.objects.append(dispute)
    s.event("charge.dispute.created", dispute, created)


def _refund(
    s: Scenario, charge_id: str, refund_id: str, amount: int, currency: str, created: int, reason: str
) -> None:
    charge = next(o for o in s.objects if o["id"] == charge_id)
    charge.update(
        amount_refunded=charge["amount_refunded"] + amount,
        refunded=charge["amount_refunded"] + amount >= charge["amount"],
    )
    pending = {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "charge": charge_id,
        "currency": currency,
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "pending",
        "created": created,
    }
    succeeded = {**pending, "status": "succeeded"}
    s.objects.append(succeeded)
    s.event("charge.refunded", {**charge}, created)
    s.event("refund.created", pending, created)
    s.event("refund.updated", succeeded, created + 5)
    s.events.append(s.events[-2])  # Stripe delivers at least once: refund.created arrives twice

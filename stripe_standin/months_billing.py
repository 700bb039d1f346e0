"""A plan's or subscription's billing life on Stripe: checkout, renewals, declines and retries, cancellation.

ClickFunnels 1.0 bills a payment plan as an ordinary subscription that it cancels after N paid invoices.
Stripe drafts each renewal's invoice when the period begins, finalizes and charges it an hour later, and
retries a declined invoice on the same PaymentIntent (each attempt is a new charge).
"""

from __future__ import annotations

from typing import Any

from stripe_standin.months_facts import (
    DAY,
    HOUR,
    START,
    ChargeFact,
    InvoiceFact,
    PurchaseFact,
    SubscriptionFact,
    add_interval,
)
from stripe_standin.months_stripe import Account, Decline
from stripe_standin.render import is_pre_basil


class Billing:
    def __init__(self, account: Account) -> None:
        self.account = account
        self._invoice_sequence: dict[str, int] = {}  # customer -> invoices numbered so far
        self._invoice_payment_of: dict[str, str] = {}  # invoice id -> its default invoice_payment

    def start_subscription(self, when: int, purchase: PurchaseFact) -> SubscriptionFact:
        """The funnel's checkout of a plan or subscription: the first invoice is paid on the spot."""
        product = purchase.product
        period_end = add_interval(when, product.interval, product.interval_count)
        fact = SubscriptionFact(
            self.account.ids.new("sub_"), self.account.ids.new("si_", 14), purchase, when, period_end
        )
        purchase.subscription = fact
        self.account.ledger.subscriptions.append(fact)
        invoice, invoice_fact = self._draft_invoice(fact, when, "subscription_create", (when, when))
        subscription = {
            "id": fact.id,
            "object": "subscription",
            "created": when,
            "customer": purchase.customer_id,
            "currency": product.currency,
            "default_payment_method": self.account.cards[purchase.customer_id]["id"],
            "status": "active",
            "start_date": when,
            "billing_cycle_anchor": when,
            "latest_invoice": invoice["id"],
            "items": self._items(fact),
        }
        self.account.save(when, subscription)
        self.account.save(when, invoice)
        self.account.emit(when, "customer.subscription.created", subscription)
        self.attempt(fact, invoice_fact, when, None)
        return fact

    def _items(self, fact: SubscriptionFact) -> dict[str, Any]:
        product = fact.purchase.product
        recurring = {"interval": product.interval, "interval_count": product.interval_count}
        price = {
            "id": product.plan_id,
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": START - 400 * DAY,
            "currency": product.currency,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": product.name,
            "product": product.stripe_product,
            "recurring": {**recurring, "meter": None, "trial_period_days": None, "usage_type": "licensed"},
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring",
            "unit_amount": product.amount,
            "unit_amount_decimal": str(product.amount),
        }
        plan = {
            "id": product.plan_id,
            "object": "plan",
            "active": True,
            "amount": product.amount,
            "amount_decimal": str(product.amount),
            "billing_scheme": "per_unit",
            "created": price["created"],
            "currency": product.currency,
            **recurring,
            "livemode": False,
            "metadata": {},
            "meter": None,
            "nickname": product.name,
            "product": product.stripe_product,
            "tiers_mode": None,
            "transform_usage": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
        item = {
            "id": fact.item_id,
            "object": "subscription_item",
            "created": fact.purchase.created,
            "current_period_start": fact.period_start,
            "current_period_end": fact.period_end,
            "discounts": [],
            "metadata": {},
            "plan": plan,
            "price": price,
            "quantity": 1,
            "subscription": fact.id,
            "tax_rates": [],
        }
        return {
            "object": "list",
            "data": [item],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={fact.id}",
        }

    def _draft_invoice(
        self, fact: SubscriptionFact, when: int, reason: str, usage_period: tuple[int, int]
    ) -> tuple[dict[str, Any], InvoiceFact]:
        """A subscription invoice as Stripe drafts it. `usage_period` is Stripe's invoice period (the
        period just ended, or the creation time for the first invoice); the line bills the new period."""
        product, purchase = fact.purchase.product, fact.purchase
        customer = self.account.live[purchase.customer_id]
        invoice_id = self.account.ids.new("in_")
        renewal = reason == "subscription_cycle"
        invoice_fact = InvoiceFact(invoice_id, len(fact.invoices) + 1, when)
        fact.invoices.append(invoice_fact)
        line = {
            "id": self.account.ids.new("il_"),
            "object": "line_item",
            "amount": product.amount,
            "currency": product.currency,
            "description": f"1 × {product.name}",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": invoice_id,
            "livemode": False,
            "metadata": {},
            "parent": {
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": fact.id,
                    "subscription_item": fact.item_id,
                },
            },
            "period": {"start": fact.period_start, "end": fact.period_end},
            "pretax_credit_amounts": [],
            "pricing": {
                "type": "price_details",
                "price_details": {"price": product.plan_id, "product": product.stripe_product},
                "unit_amount_decimal": str(product.amount),
            },
            "quantity": 1,
            "subtotal": product.amount,
            "taxes": [],
        }
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "created": when,
            "customer": purchase.customer_id,
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "currency": product.currency,
            "billing_reason": reason,
            "status": "draft",
            "auto_advance": True,
            "total": product.amount,
            "amount_due": product.amount,
            "amount_paid": 0,
            "amount_remaining": product.amount,
            "attempt_count": 0,
            "attempted": False,
            # A renewal is finalized and charged about an hour after it is drafted.
            "next_payment_attempt": when + HOUR if renewal else None,
            "effective_at": None,
            "period_start": usage_period[0],
            "period_end": usage_period[1],
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"metadata": {}, "subscription": fact.id},
            },
            "lines": {
                "object": "list",
                "data": [line],
                "has_more": False,
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
        }
        return invoice, invoice_fact

    def renew(self, fact: SubscriptionFact, when: int) -> InvoiceFact:
        """A new billing period begins: the subscription moves on and its invoice is drafted."""
        product = fact.purchase.product
        before = self.account.copy(fact.id)
        ended = (fact.period_start, fact.period_end)
        fact.period_start, fact.period_end = (
            when,
            add_interval(when, product.interval, product.interval_count),
        )
        invoice, invoice_fact = self._draft_invoice(fact, when, "subscription_cycle", ended)
        subscription = {**before, "latest_invoice": invoice["id"], "items": self._items(fact)}
        self.account.save(when, invoice)
        self.account.save(when, subscription)
        previous: dict[str, Any] = {"latest_invoice": before["latest_invoice"]}
        if is_pre_basil(self.account.endpoint.version_at(when)):
            previous.update(current_period_start=ended[0], current_period_end=ended[1])
        else:
            previous["items"] = before["items"]
        self.account.emit(when, "customer.subscription.updated", subscription, previous)
        return invoice_fact

    def attempt(
        self,
        fact: SubscriptionFact,
        invoice_fact: InvoiceFact,
        when: int,
        decline: Decline | None,
        next_attempt: int | None = None,
    ) -> ChargeFact:
        """One payment attempt on an invoice: the first finalizes it; retries reuse its PaymentIntent."""
        purchase = fact.purchase
        invoice = self.account.copy(invoice_fact.id)
        description = "Subscription creation" if invoice_fact.number == 1 else "Subscription update"
        if invoice_fact.payment_intent is None:
            body = self.account.ids.body()
            charge_id = "ch_" + body
            intent = self.account.intent(when, purchase, "pi_" + body, description)
            invoice_fact.payment_intent = intent["id"]
            self._finalize(invoice, invoice_fact, when)
        else:
            charge_id = self.account.ids.new("ch_")
            intent = self.account.copy(invoice_fact.payment_intent)
        charge = self.account.charge(when, charge_id, purchase, intent["id"], description, decline)
        intent["latest_charge"] = charge_id
        invoice.update(attempt_count=invoice["attempt_count"] + 1, attempted=True)
        if decline is None:
            self._paid(fact, invoice_fact, invoice, intent, charge, when)
        else:
            self._failed(fact, invoice_fact, invoice, intent, charge, when, decline, next_attempt)
        return self.account.record_charge(charge, purchase, fact, invoice_fact.number)

    def _finalize(self, invoice: dict[str, Any], invoice_fact: InvoiceFact, when: int) -> None:
        customer_id = invoice["customer"]
        sequence = self._invoice_sequence.get(customer_id, 0) + 1
        self._invoice_sequence[customer_id] = sequence
        invoice.update(
            status="open",
            number=f"{self.account.live[customer_id]['invoice_prefix']}-{sequence:04d}",
            effective_at=when,
            status_transitions={**invoice["status_transitions"], "finalized_at": when},
        )
        invoice_fact.status = "open"
        payment = {
            "id": self.account.ids.new("inpay_"),
            "object": "invoice_payment",
            "created": when,
            "invoice": invoice["id"],
            "amount_requested": invoice["amount_due"],
            "amount_paid": None,
            "currency": invoice["currency"],
            "is_default": True,
            "payment": {"type": "payment_intent", "payment_intent": invoice_fact.payment_intent},
            "status": "open",
            "status_transitions": {"canceled_at": None, "paid_at": None},
        }
        self.account.save(when, payment)
        self._invoice_payment_of[invoice["id"]] = payment["id"]

    def _paid(
        self,
        fact: SubscriptionFact,
        invoice_fact: InvoiceFact,
        invoice: dict[str, Any],
        intent: dict[str, Any],
        charge: dict[str, Any],
        when: int,
    ) -> None:
        intent.update(status="succeeded", last_payment_error=None)
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            next_payment_attempt=None,
            status_transitions={**invoice["status_transitions"], "paid_at": when},
        )
        invoice_fact.status = "paid"
        payment = self.account.copy(self._invoice_payment_of[invoice["id"]])
        payment.update(
            status="paid",
            amount_paid=payment["amount_requested"],
            status_transitions={"canceled_at": None, "paid_at": when},
        )
        for obj in (intent, charge, invoice, payment):
            self.account.save(when, obj)
        self.account.emit(when, "charge.succeeded", charge)
        self.account.emit(when, "invoice.paid", invoice)
        self.account.emit(when, "invoice.payment_succeeded", invoice)
        self.account.emit(when, "invoice_payment.paid", payment)
        if fact.status == "past_due":
            self._set_status(fact, when, "active")

    def _failed(
        self,
        fact: SubscriptionFact,
        invoice_fact: InvoiceFact,
        invoice: dict[str, Any],
        intent: dict[str, Any],
        charge: dict[str, Any],
        when: int,
        decline: Decline,
        next_attempt: int | None,
    ) -> None:
        intent.update(
            status="requires_payment_method",
            last_payment_error={
                "type": "card_error",
                "charge": charge["id"],
                "code": decline.code,
                "decline_code": decline.decline_code,
                "message": decline.message,
            },
        )
        invoice["next_payment_attempt"] = next_attempt
        invoice_fact.failed_attempts += 1
        for obj in (intent, charge, invoice):
            self.account.save(when, obj)
        self.account.emit(when, "charge.failed", charge)
        self.account.emit(when, "invoice.payment_failed", invoice)
        if fact.status == "active":
            self._set_status(fact, when, "past_due")

    def _set_status(self, fact: SubscriptionFact, when: int, status: str) -> None:
        subscription = self.account.copy(fact.id)
        previous = {"status": subscription["status"]}
        subscription["status"] = fact.status = status
        self.account.save(when, subscription)
        self.account.emit(when, "customer.subscription.updated", subscription, previous)

    def mark_unpaid(self, fact: SubscriptionFact, when: int) -> None:
        """The retries are spent: the account's setting "mark the subscription as unpaid" applies."""
        self._set_status(fact, when, "unpaid")

    def cancel(self, fact: SubscriptionFact, when: int, *, by: str, void_open: bool = False) -> None:
        """Cancel now: by the funnel after a plan's last payment, or by the seller.

        Stripe stops collecting the subscription's open invoices; `void_open` also voids them, as the
        seller's platform does ("orders still being billed are all cancelled")."""
        fact.unpaid_at_cancel = bool(fact.open_invoices)
        for invoice_fact in fact.open_invoices:
            self._stop_collecting(invoice_fact, when, void_open)
        subscription = self.account.copy(fact.id)
        subscription.update(
            status="canceled",
            canceled_at=when,
            ended_at=when,
            cancellation_details={"comment": None, "feedback": None, "reason": "cancellation_requested"},
        )
        fact.status, fact.ended_by, fact.canceled_at = "canceled", by, when
        self.account.save(when, subscription)
        self.account.emit(when, "customer.subscription.deleted", subscription, requested=True)

    def _stop_collecting(self, invoice_fact: InvoiceFact, when: int, void: bool) -> None:
        invoice = self.account.copy(invoice_fact.id)
        invoice.update(auto_advance=False, next_payment_attempt=None)
        if not void:
            self.account.save(when, invoice)
            return
        invoice.update(status="void", status_transitions={**invoice["status_transitions"], "voided_at": when})
        invoice_fact.status = "void"
        intent = self.account.copy(invoice_fact.payment_intent)
        intent.update(status="canceled", canceled_at=when, cancellation_reason="void_invoice")
        payment = self.account.copy(self._invoice_payment_of[invoice_fact.id])
        payment.update(status="canceled", status_transitions={"canceled_at": when, "paid_at": None})
        for obj in (intent, payment, invoice):
            self.account.save(when, obj)
        self.account.emit(when, "invoice.voided", invoice, requested=True)

    def cancel_at_period_end(self, fact: SubscriptionFact, when: int) -> None:
        """The seller cancels a paid-up subscription from the end of its period; it ends then."""
        subscription = self.account.copy(fact.id)
        previous = {"cancel_at": None, "cancel_at_period_end": False, "canceled_at": None}
        subscription.update(cancel_at=fact.period_end, cancel_at_period_end=True, canceled_at=when)
        self.account.save(when, subscription)
        self.account.emit(when, "customer.subscription.updated", subscription, previous, requested=True)
        ended = dict(subscription, status="canceled", ended_at=fact.period_end)
        ended["cancellation_details"] = {
            "comment": None,
            "feedback": None,
            "reason": "cancellation_requested",
        }
        fact.status, fact.ended_by, fact.canceled_at = "canceled", "seller", when
        self.account.save(fact.period_end, ended)
        self.account.emit(fact.period_end, "customer.subscription.deleted", ended)

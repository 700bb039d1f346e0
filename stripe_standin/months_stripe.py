"""The seller's Stripe account through a month: customers, payments and refunds, as Stripe makes them.

Every action takes the time it happens at and records on a Timeline the objects it changes (newest API
shape) and the events Stripe sends for it; it also updates the month's facts (months_facts.py). Callers
act on any one object in time order; different objects may be written in any order. Subscriptions are in
months_billing.py, disputes in months_disputes.py; both act through an Account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stripe_standin.months_facts import ChargeFact, Ids, Ledger, PurchaseFact, RefundFact, SubscriptionFact
from stripe_standin.months_timeline import Endpoint, Timeline
from stripe_standin.store import COLLECTION_OF_OBJECT

_NO_ADDRESS = {
    "city": None,
    "country": None,
    "line1": None,
    "line2": None,
    "postal_code": None,
    "state": None,
}
_APPROVED = {
    "network_status": "approved_by_network",
    "reason": None,
    "risk_level": "normal",
    "seller_message": "Payment complete.",
    "type": "authorized",
}
_CARDS = (("visa", "4242", "JP"), ("mastercard", "4444", "JP"), ("visa", "1881", "US"),
          ("amex", "0005", "US"), ("jcb", "0505", "JP"), ("visa", "3220", "DE"))  # fmt: skip


@dataclass(frozen=True)
class Decline:
    code: str
    decline_code: str
    message: str


DECLINES = (
    Decline("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    Decline("card_declined", "generic_decline", "Your card was declined."),
    Decline("expired_card", "expired_card", "Your card has expired."),
    Decline("card_declined", "do_not_honor", "Your card was declined."),
)


def _declined_outcome(decline: Decline) -> dict[str, Any]:
    if decline.decline_code == "generic_decline":
        message = "The bank did not return any further details with this decline."
    else:
        message = f"The bank returned the decline code `{decline.decline_code}`."
    return {
        "network_status": "declined_by_network",
        "reason": decline.decline_code,
        "risk_level": "normal",
        "seller_message": message,
        "type": "issuer_declined",
    }


class Account:
    def __init__(self, ids: Ids, endpoint: Endpoint, ledger: Ledger) -> None:
        self.ids = ids
        self.endpoint = endpoint
        self.ledger = ledger
        self.timeline = Timeline()
        self.live: dict[str, dict[str, Any]] = {}
        self.cards: dict[str, dict[str, Any]] = {}

    # -- objects and events (months_billing.py and months_disputes.py use these too) -------------

    def copy(self, object_id: str) -> dict[str, Any]:
        return dict(self.live[object_id])

    def save(self, when: int, obj: dict[str, Any]) -> None:
        self.live[obj["id"]] = obj
        self.timeline.put(when, COLLECTION_OF_OBJECT[obj["object"]], obj)

    def emit(
        self,
        when: int,
        event_type: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
        *,
        requested: bool = False,
    ) -> None:
        """Record the event Stripe sends now, if the endpoint's version gets it. `requested`: an API or
        Dashboard request made the change (the event names it), rather than Stripe's own schedule."""
        if not self.endpoint.sends(event_type, when):
            return
        self.timeline.event(
            when,
            self.ids.new("evt_"),
            event_type,
            COLLECTION_OF_OBJECT[obj["object"]],
            obj["id"],
            self.endpoint.version_at(when),
            previous,
            self.ids.new("req_", 14) if requested else None,
        )

    # -- customers and payments -------------------------------------------------------------------

    def customer(self, when: int, purchase: PurchaseFact) -> str:
        """The Stripe customer the funnel makes for an order (it may make a new one for every order)."""
        person = purchase.person
        customer_id = self.ids.new("cus_", 14)
        brand, last4, country = _CARDS[len(self.cards) % len(_CARDS)]
        self.cards[customer_id] = {
            "id": self.ids.new("pm_"),
            "brand": brand,
            "last4": last4,
            "country": country,
            "exp_month": 1 + len(self.cards) % 12,
            "exp_year": 2027 + len(self.cards) % 4,
        }
        customer = {
            "id": customer_id,
            "object": "customer",
            "created": when,
            "email": purchase.typed_email.strip(),
            "name": person.name,
            "invoice_prefix": self.ids.hex(8),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": self.cards[customer_id]["id"],
                "footer": None,
                "rendering_options": None,
            },
        }
        self.save(when, customer)
        person.customers.append(customer_id)
        return customer_id

    def charge(
        self,
        when: int,
        charge_id: str,
        purchase: PurchaseFact,
        intent_id: str | None,
        description: str,
        decline: Decline | None,
    ) -> dict[str, Any]:
        product, card = purchase.product, self.cards[purchase.customer_id]
        charge = {
            "id": charge_id,
            "object": "charge",
            "created": when,
            "amount": product.amount,
            "currency": product.currency,
            "customer": purchase.customer_id,
            "payment_intent": intent_id,
            "payment_method": card["id"],
            "description": description,
            "billing_details": {
                "address": {**_NO_ADDRESS, "country": card["country"]},
                "email": purchase.typed_email.strip(),
                "name": purchase.person.name,
                "phone": None,
                "tax_id": None,
            },
            "payment_method_details": {
                "type": "card",
                "card": {
                    "brand": card["brand"],
                    "country": card["country"],
                    "exp_month": card["exp_month"],
                    "exp_year": card["exp_year"],
                    "funding": "credit",
                    "last4": card["last4"],
                    "network": card["brand"],
                },
            },
            "calculated_statement_descriptor": "FUNNEL SELLER",
        }
        if decline is None:
            charge.update(
                status="succeeded",
                paid=True,
                captured=True,
                amount_captured=product.amount,
                balance_transaction=self.ids.new("txn_"),
                outcome=_APPROVED,
                receipt_url=f"https://pay.stripe.com/receipts/payment/{charge_id}",
            )
        else:
            charge.update(
                status="failed",
                paid=False,
                captured=False,
                amount_captured=0,
                failure_code=decline.code,
                failure_message=decline.message,
                outcome=_declined_outcome(decline),
            )
        return charge

    def record_charge(
        self,
        charge: dict[str, Any],
        purchase: PurchaseFact,
        subscription: SubscriptionFact | None = None,
        installment: int | None = None,
    ) -> ChargeFact:
        fact = ChargeFact(
            id=charge["id"],
            payment_intent=charge["payment_intent"],
            created=charge["created"],
            amount=charge["amount"],
            currency=charge["currency"],
            purchase=purchase,
            succeeded=charge["status"] == "succeeded",
            installment=installment,
            subscription=subscription,
        )
        purchase.charges.append(fact)
        self.ledger.charges.append(fact)
        return fact

    def sell(self, when: int, purchase: PurchaseFact, *, legacy_charge: bool = False) -> ChargeFact:
        """A one-time checkout. A legacy charge is made without a PaymentIntent (the old Charges API)."""
        body = self.ids.body()
        intent_id = None if legacy_charge else "pi_" + body
        charge = self.charge(when, "ch_" + body, purchase, intent_id, purchase.product.name, None)
        if intent_id:
            intent = self.intent(when, purchase, intent_id, purchase.product.name)
            intent.update(status="succeeded", latest_charge=charge["id"])
            self.save(when, intent)
        self.save(when, charge)
        self.emit(when, "charge.succeeded", charge)
        return self.record_charge(charge, purchase)

    def intent(self, when: int, purchase: PurchaseFact, intent_id: str, description: str) -> dict[str, Any]:
        product = purchase.product
        return {
            "id": intent_id,
            "object": "payment_intent",
            "created": when,
            "amount": product.amount,
            "currency": product.currency,
            "customer": purchase.customer_id,
            "description": description,
            "payment_method": self.cards[purchase.customer_id]["id"],
            "capture_method": "automatic",
            "setup_future_usage": "off_session" if product.kind != "one_time" else None,
            "status": "requires_payment_method",
        }

    # -- refunds ----------------------------------------------------------------------------------

    def refund(
        self, charge_fact: ChargeFact, when: int, amount: int, reason: str | None, status: str = "succeeded"
    ) -> RefundFact:
        """Staff refund from the dashboard; card refunds mostly succeed at once, some stay pending."""
        charge = self.copy(charge_fact.id)
        previous = {"amount_refunded": charge.get("amount_refunded", 0)}
        charge["amount_refunded"] = previous["amount_refunded"] + amount
        if charge["amount_refunded"] >= charge["amount"]:
            previous["refunded"] = False
            charge["refunded"] = True
        refund = {
            "id": self.ids.new("re_"),
            "object": "refund",
            "created": when,
            "amount": amount,
            "charge": charge_fact.id,
            "currency": charge_fact.currency,
            "payment_intent": charge_fact.payment_intent,
            "reason": reason,
            "status": status,
            "balance_transaction": self.ids.new("txn_"),
            "destination_details": {
                "type": "card",
                "card": {
                    "reference": None,
                    "reference_status": "pending",
                    "reference_type": None,
                    "type": "refund",
                },
            },
        }
        fact = RefundFact(refund["id"], charge_fact, amount, when, reason, status)
        charge_fact.refunds.append(fact)
        self.ledger.refunds.append(fact)
        self.save(when, refund)
        self.save(when, charge)
        self.emit(when, "charge.refunded", charge, previous, requested=True)
        self.emit(when, "refund.created", refund, requested=True)
        return fact

    def settle_refund(
        self, fact: RefundFact, when: int, status: str, failure_reason: str | None = None
    ) -> None:
        """A pending refund succeeds or fails; a failed one gives the money back to the seller's balance."""
        refund = self.copy(fact.id)
        previous = {"status": refund["status"]}
        refund["status"] = fact.status = status
        if status == "failed":
            refund.update(failure_reason=failure_reason, failure_balance_transaction=self.ids.new("txn_"))
            charge = self.copy(fact.charge.id)
            charge.update(amount_refunded=charge["amount_refunded"] - fact.amount, refunded=False)
            self.save(when, charge)
        self.save(when, refund)
        self.emit(when, "charge.refund.updated", refund, previous)
        self.emit(when, "refund.updated", refund, previous)
        if status == "failed":
            self.emit(when, "refund.failed", refund)

"""Deterministic, fast fake data for a funnel seller: charges, customers, refunds, installment plans.

    from stripe_standin.generate import populate
    counts = populate(store, charges=100_000, seed=7)

What it makes, like the seller in DOMAIN.md:
- one-time purchases (mostly JPY, some USD), some by returning customers, some by the same person under
  a new `cus_` id (the funnel may create a customer per order);
- installment plans (3, 6 or 12 monthly payments, cancelled after the last) and open-ended monthly
  subscriptions: each payment is an invoice (`subscription_create`, then `subscription_cycle`) paid by a
  payment intent and its charge, linked the basil way through an invoice_payment;
- refunds (full and partial; reasons requested_by_customer / duplicate / fraudulent), including
  accidental duplicate purchases where one of the two charges is refunded as `duplicate`;
- with `events=True`: charge.succeeded, charge.refunded, refund.created, invoice.paid,
  invoice_payment.paid, customer.subscription.deleted (off by default: they double the object count).
Objects are compact (see shapes.py) and events share their object's dict unless it changed later,
which keeps 100k charges to a few hundred MB at most and a few seconds to build.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from stripe_standin.render import LATEST
from stripe_standin.store import Store

DAY = 86_400
MONTH = 30 * DAY
DEFAULT_END = 1_763_000_000  # fixed, so the same seed gives the same timestamps every run

# (description, amount in the currency's smallest unit, currency, payments: 1 one-time, N plan, 0 open-ended)
ONE_TIME = [
    ("Online course: funnel basics", 29_800, "jpy", 1),
    ("Video course bundle", 49_800, "jpy", 1),
    ("E-book", 1_980, "jpy", 1),
    ("Seminar ticket", 9_800, "jpy", 1),
    ("Workshop ticket", 4_900, "usd", 1),
]
INSTALLMENTS = [
    ("Coaching program (3 payments)", 33_000, "jpy", 3),
    ("Mastermind (6 payments)", 55_000, "jpy", 6),
    ("Business academy (12 payments)", 19_800, "jpy", 12),
]
SUBSCRIPTIONS = [
    ("Online community (monthly)", 9_800, "jpy", 0),
    ("Members site (monthly)", 2_980, "jpy", 0),
]
FIRST = [
    "haruto",
    "yui",
    "sota",
    "hina",
    "ren",
    "mei",
    "yuto",
    "aoi",
    "riku",
    "sakura",
    "kenji",
    "emi",
    "alex",
    "sam",
]
LAST = [
    "sato",
    "suzuki",
    "takahashi",
    "tanaka",
    "ito",
    "watanabe",
    "yamamoto",
    "nakamura",
    "kobayashi",
    "kato",
]
REASONS = ["requested_by_customer"] * 8 + ["duplicate", "fraudulent"]


@dataclass
class Options:
    charges: int = 100_000
    seed: int = 0
    end: int = DEFAULT_END
    days: int = 365
    refund_rate: float = 0.05
    installment_rate: float = 0.06
    subscription_rate: float = 0.03
    returning_customer_rate: float = 0.30
    new_id_same_person_rate: float = 0.05
    duplicate_rate: float = 0.01
    events: bool = False
    event_api_version: str | None = LATEST


class _Builder:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.tag = f"S{options.seed}x"
        self.counters: dict[str, int] = {}
        self.out: dict[str, list[dict[str, Any]]] = {
            name: []
            for name in (
                "customers", "payment_intents", "charges", "refunds", "subscriptions", "invoices",
                "invoice_payments", "events",
            )
        }  # fmt: skip
        self.customers: list[dict[str, Any]] = []
        self.charge_count = 0

    def new_id(self, prefix: str) -> str:
        number = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = number
        return f"{prefix}{self.tag}{number:010d}"

    def event(self, event_type: str, obj: dict[str, Any], created: int, previous: dict | None = None) -> None:
        if not self.o.events:
            return
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {
            "id": self.new_id("evt_"),
            "object": "event",
            "type": event_type,
            "created": created,
            "data": data,
        }
        if self.o.event_api_version:
            event["api_version"] = self.o.event_api_version
        self.out["events"].append(event)

    # -- people -------------------------------------------------------------------------------------

    def customer(self, created: int) -> dict[str, Any]:
        rng = self.rng
        if self.customers and rng.random() < self.o.returning_customer_rate:
            return self.customers[rng.randrange(len(self.customers))]
        if self.customers and rng.random() < self.o.new_id_same_person_rate:
            person = self.customers[rng.randrange(len(self.customers))]
            email, name = person["email"], person["name"]
        else:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first}.{last}{len(self.customers)}@example.com"
            name = f"{first.title()} {last.title()}"
        customer = {
            "id": self.new_id("cus_"),
            "object": "customer",
            "created": created,
            "email": email,
            "name": name,
        }
        self.customers.append(customer)
        self.out["customers"].append(customer)
        return customer

    # -- money --------------------------------------------------------------------------------------

    def pay(
        self, customer: dict, amount: int, currency: str, created: int, description: str
    ) -> dict[str, Any]:
        """A payment intent and its charge (the charge is what the seller later refunds)."""
        intent_id, charge_id = self.new_id("pi_"), self.new_id("ch_")
        charge = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "currency": currency,
            "created": created,
            "customer": customer["id"],
            "description": description,
            "payment_intent": intent_id,
            "receipt_email": customer["email"],
        }
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "currency": currency,
            "created": created,
            "customer": customer["id"],
            "description": description,
            "latest_charge": charge_id,
        }
        self.out["charges"].append(charge)
        self.out["payment_intents"].append(intent)
        self.charge_count += 1
        self.event("charge.succeeded", charge, created)
        return charge

    def refund(self, charge: dict[str, Any], created: int, reason: str, amount: int | None = None) -> None:
        refunded_before = charge.get("amount_refunded", 0)
        amount = min(amount or charge["amount"], charge["amount"] - refunded_before)
        if amount <= 0:
            return
        if self.o.events and refunded_before == 0:
            # charge.succeeded showed the charge as it was: give that event its own unrefunded copy.
            for event in reversed(self.out["events"]):
                if event["data"]["object"] is charge:
                    event["data"]["object"] = dict(charge)
                    break
        refund = {
            "id": self.new_id("re_"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "currency": charge["currency"],
            "created": created,
            "payment_intent": charge["payment_intent"],
            "reason": reason,
        }
        self.out["refunds"].append(refund)
        charge["amount_refunded"] = refunded_before + amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.event("refund.created", refund, created)
        self.event(
            "charge.refunded", charge, created, {"amount_refunded": refunded_before, "refunded": False}
        )

    def maybe_refund(self, charge: dict[str, Any]) -> None:
        rng = self.rng
        if rng.random() >= self.o.refund_rate:
            return
        created = min(
            charge["created"] + rng.randint(3_600, 20 * DAY), max(self.o.end, charge["created"] + 3_600)
        )
        partial = rng.random() < 0.2
        self.refund(charge, created, rng.choice(REASONS), charge["amount"] // 2 if partial else None)

    # -- purchases ----------------------------------------------------------------------------------

    def one_time(self, created: int) -> None:
        description, amount, currency, _ = self.rng.choice(ONE_TIME)
        customer = self.customer(created)
        charge = self.pay(customer, amount, currency, created, description)
        if self.charge_count < self.o.charges and self.rng.random() < self.o.duplicate_rate:
            # Bought twice by mistake a few minutes apart; staff refund the second one.
            again = self.pay(customer, amount, currency, created + self.rng.randint(30, 900), description)
            self.refund(again, again["created"] + self.rng.randint(DAY // 2, 3 * DAY), "duplicate")
        else:
            self.maybe_refund(charge)

    def plan(self, created: int, product: tuple[str, int, str, int]) -> None:
        description, amount, currency, payments = product
        rng = self.rng
        customer = self.customer(created)
        subscription_id, item_id = self.new_id("sub_"), self.new_id("si_")
        # Open-ended subscriptions end when the member cancels; plans after their last payment.
        planned = payments or (rng.randint(1, 24) if rng.random() < 0.4 else 10_000)
        # The first payment is taken at purchase; later ones monthly, up to the end of the window.
        months_left = max(0, (self.o.end - created) // MONTH) + 1
        count = min(planned, months_left, max(1, self.o.charges - self.charge_count))
        due = [created + n * MONTH for n in range(count)]
        # One `parent` for all the invoices of a subscription: stored objects are never mutated.
        parent = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription_id},
        }
        invoice = None
        for n, when in enumerate(due):
            invoice = self.invoice(customer, parent, item_id, amount, currency, when, n, description)
        last = due[-1]
        subscription = {
            "id": subscription_id,
            "object": "subscription",
            "created": created,
            "customer": customer["id"],
            "currency": currency,
            "description": description,
            "latest_invoice": invoice["id"] if invoice else None,
            "metadata": {"payments": str(payments)} if payments else {},
            "status": "active",
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": item_id,
                        "object": "subscription_item",
                        "created": created,
                        "current_period_start": last,
                        "current_period_end": last + MONTH,
                        "metadata": {},
                        "price": {
                            "id": f"price_{description[:12].replace(' ', '')}{amount}",
                            "object": "price",
                            "currency": currency,
                            "product": f"prod_{description[:12].replace(' ', '')}",
                            "recurring": {"interval": "month", "interval_count": 1},
                            "type": "recurring",
                            "unit_amount": amount,
                        },
                        "quantity": 1,
                        "subscription": subscription_id,
                    }
                ],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={subscription_id}",
            },
        }
        if count == planned:
            ended = last + rng.randint(60, 3_600)
            subscription.update(status="canceled", canceled_at=ended, ended_at=ended)
            self.event("customer.subscription.deleted", subscription, ended)
        self.out["subscriptions"].append(subscription)

    def invoice(self, customer, parent, item_id, amount, currency, when, n, description) -> dict:
        charge = self.pay(
            customer, amount, currency, when, "Subscription creation" if n == 0 else "Subscription update"
        )
        invoice_id = self.new_id("in_")
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "created": when,
            "customer": customer["id"],
            "customer_email": customer["email"],
            "currency": currency,
            "description": description,
            "status": "paid",
            "total": amount,
            "billing_reason": "subscription_create" if n == 0 else "subscription_cycle",
            "period_start": when,
            "period_end": when + MONTH,
            "parent": parent,
            "subscription_item": item_id,
        }
        payment = {
            "id": self.new_id("inpay_"),
            "object": "invoice_payment",
            "created": when,
            "invoice": invoice_id,
            "amount_requested": amount,
            "currency": currency,
            "payment": {"type": "payment_intent", "payment_intent": charge["payment_intent"]},
        }
        self.out["invoices"].append(invoice)
        self.out["invoice_payments"].append(payment)
        self.event("invoice.paid", invoice, when)
        self.event("invoice_payment.paid", payment, when)
        self.maybe_refund(charge)
        return invoice

    def purchase_kind(self) -> tuple[str, int, str, int] | None:
        roll = self.rng.random()
        if roll < self.o.installment_rate:
            return self.rng.choice(INSTALLMENTS)
        if roll < self.o.installment_rate + self.o.subscription_rate:
            return self.rng.choice(SUBSCRIPTIONS)
        return None

    def run(self) -> dict[str, list[dict[str, Any]]]:
        window = self.o.days * DAY
        start = self.o.end - window
        gap = window / max(1.0, self.o.charges / self._charges_per_purchase())
        t = float(start)
        while self.charge_count < self.o.charges:
            t += self.rng.expovariate(1 / gap)
            created = int(t)
            product = self.purchase_kind()
            if product is None:
                self.one_time(created)
            else:
                self.plan(created, product)
        return self.out

    def _charges_per_purchase(self) -> float:
        """How many charges a purchase makes on average, so purchases spread over the whole window."""
        o = self.o
        months = o.days / 30
        plan_average = sum(min(p[3], months / 2 + 0.5) for p in INSTALLMENTS) / len(INSTALLMENTS)
        open_ended = months / 2 + 0.5
        return (
            (1 - o.installment_rate - o.subscription_rate) * (1 + o.duplicate_rate)
            + o.installment_rate * plan_average
            + o.subscription_rate * open_ended
        )


def generate(charges: int = 100_000, **options: Any) -> dict[str, list[dict[str, Any]]]:
    """The objects, by collection (newest API shape, compact), deterministic for a given `seed`."""
    # Hundreds of thousands of new dicts and no reference cycles: cyclic GC passes would only cost time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Builder(Options(charges=charges, **options)).run()
    finally:
        if was_enabled:
            gc.enable()


def populate(store: Store, charges: int = 100_000, **options: Any) -> dict[str, int]:
    """Generate into `store`; returns how many objects of each kind were added.

    Afterwards the objects are moved out of the cyclic GC's sight (`gc.freeze`), so a server holding
    100k charges does not rescan them all on every full collection while it is being benchmarked.
    """
    generated = generate(charges, **options)
    for name, objects in generated.items():
        store.add_many(objects, collection=name)
    gc.freeze()
    return {name: len(objects) for name, objects in generated.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate stripe-standin data; print counts, time, memory.")
    parser.add_argument("--charges", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", action="store_true", help="also generate the events for the objects")
    parser.add_argument("--out", help="write a seed JSON file for `python -m stripe_standin --seed`")
    args = parser.parse_args(argv)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    store = Store()
    counts = populate(store, args.charges, seed=args.seed, events=args.events)
    seconds = time.perf_counter() - began
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "counts": counts,
                "seconds": round(seconds, 2),
                "peak_rss_growth_mb": (rss_after - rss_before) // 1024,
            }
        )
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(generate(args.charges, seed=args.seed, events=args.events), handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Seeded, realistic seller months for ClickFunnels 1.0 on Stripe, each with its ground truth.

    month = make_month(7)   # deterministic for the seed; well under 0.1 s
    month.store             # every Stripe object in its final state: serve it with StandinServer
    month.deliveries        # Stripe events, funnel webhooks and CSV exports in arrival order
    month.truth             # what a perfect tool shows once it has all of them and a nightly run

    python -m stripe_standin.months --seed 7    # the month's scenario counts, as JSON

The month is written as facts (months_story.py, months_stripe.py), replayed in time order into a Store
(months_timeline.py), posted by the funnel (months_funnel.py) and delivered (months_delivery.py). The
truth below is read from the facts, never from the objects, so tests can hold one against the other.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from stripe_standin.months_delivery import arrange, forced_arrivals
from stripe_standin.months_facts import (
    COUNTED_REFUND_STATUSES,
    DAY,
    END,
    OPEN_DISPUTE_STATUSES,
    START,
    ChargeFact,
    Ledger,
    PurchaseFact,
    RefundFact,
    SubscriptionFact,
)
from stripe_standin.months_funnel import funnel_deliveries
from stripe_standin.months_story import SellerMonth
from stripe_standin.months_summary import SCENARIOS, month_summary
from stripe_standin.store import Store

__all__ = [
    "SCENARIOS", "Delivery", "Month", "Truth", "TruthAlert", "TruthPlan", "TruthSale", "make_month",
    "month_summary", "sale_status", "truth_of",
]  # fmt: skip

ACCESS_WINDOW = 30 * DAY  # the access rule looks at two first payments at most 30 days apart


@dataclass
class Delivery:
    kind: str  # "stripe" | "funnel" | "csv"
    body: Any  # stripe: the event dict; funnel: the webhook body dict; csv: the CSV file text (str)


@dataclass(frozen=True)
class TruthSale:
    """One per real payment attempt: every succeeded charge, and every failed charge."""

    charge_id: str
    payment_intent_id: str | None
    customer_email: str  # normalised: stripped, lower case
    amount: int  # minor units
    currency: str  # lower case
    kind: str  # "one_time" | "installment" | "subscription"
    installment: int | None  # k: the k-th invoice of its subscription (retries of one invoice share k)
    installments_total: int | None  # N for a payment plan, else None
    subscription_id: str | None
    status: str  # "paid" | "refunded" | "partially_refunded" | "failed" | "disputed" | "dispute_lost"
    refunded_amount: int  # the charge's refunds whose final status is succeeded, pending or requires_action
    funnel_purchase_id: str | None  # the funnel order this payment belongs to, if the funnel's record arrived
    product: str | None  # the funnel product's name when funnel_purchase_id is set
    source: str  # "funnel" for the very payment the funnel recorded (the order's first), else "stripe"


@dataclass(frozen=True)
class TruthPlan:
    """One per subscription (installment plan or open-ended subscription)."""

    subscription_id: str
    customer_email: str
    kind: str  # "installment" | "subscription"
    installments_paid: int  # paid invoices
    installments_total: int | None
    failed_payments: int  # failed charges (attempts) of this subscription
    status: str  # "active" | "past_due" | "unpaid" | "completed" | "cancelled"
    access_ends_at: int | None  # cancelled with unpaid invoices: then; cancelled paid-up: the period's end
    funnel_purchase_id: str | None


@dataclass(frozen=True)
class TruthAlert:
    key: str  # "access_revocation:<refund id>" | "dispute:<dispute id>" | "payment_failed:<invoice id>"
    kind: str  # "access_revocation" | "dispute" | "payment_failed"
    customer_email: str
    charge_id: str | None  # refunded charge / disputed charge / (payment_failed: None)
    kept_charge_id: str | None  # access_revocation: the other purchase's still-paid first payment
    dispute_status: str | None  # dispute: its final status


@dataclass
class Truth:
    sales: list[TruthSale]
    plans: list[TruthPlan]
    alerts: list[TruthAlert]
    notes: dict[str, str]  # "refund:<refund id>" -> the refund's final status, failed ones included
    gross: dict[str, int]  # per currency: sum of succeeded charges' amounts
    refunded: dict[str, int]  # per currency: sum of counted refunds (succeeded, pending, requires_action)


@dataclass
class Month:
    seed: int
    start: int  # unix seconds; every object's `created` is in [start, end)
    end: int
    store: Store  # every object in its FINAL state (newest shape), events included
    deliveries: list[Delivery]  # in arrival order, after dropping, duplicating and shuffling
    truth: Truth


def make_month(seed: int, *, purchases: int = 40) -> Month:
    """A seller's month of `purchases` funnel orders and all that follows them, deterministic for `seed`."""
    story = SellerMonth(seed, purchases)
    story.write()
    store = Store()
    events = story.stripe.timeline.replay(store)
    webhooks, exports = funnel_deliveries(story.ledger.purchases, seed)
    rng = random.Random(f"stripe-standin-months-delivery-{seed}")
    forced = forced_arrivals(story.ledger, events, rng)
    arrived = arrange(events, store, forced, webhooks, exports, rng)
    deliveries = [Delivery(kind, body) for kind, body in arrived]
    return Month(seed, START, END, store, deliveries, truth_of(story.ledger))


# -- ground truth -------------------------------------------------------------------------------------


def truth_of(ledger: Ledger) -> Truth:
    sales = sorted((_sale(charge) for charge in ledger.charges), key=lambda s: s.charge_id)
    plans = [_plan(subscription) for subscription in ledger.subscriptions]
    alerts = _access_alerts(ledger.purchases) + _dispute_alerts(ledger) + _payment_failed_alerts(ledger)
    gross: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    for charge in ledger.charges:
        if charge.succeeded:
            gross[charge.currency] += charge.amount
            refunded[charge.currency] += charge.refunded_amount
    return Truth(
        sales=sales,
        plans=sorted(plans, key=lambda p: p.subscription_id),
        alerts=sorted(alerts, key=lambda a: a.key),
        notes={f"refund:{refund.id}": refund.status for refund in ledger.refunds},
        gross=dict(gross),
        refunded={currency: amount for currency, amount in refunded.items() if amount},
    )


def sale_status(charge: ChargeFact) -> str:
    """Failed; else a lost dispute; else an open dispute; else how much is refunded. A won dispute or a
    closed inquiry leaves the refund status."""
    if not charge.succeeded:
        return "failed"
    statuses = {dispute.status for dispute in charge.disputes}
    if "lost" in statuses:
        return "dispute_lost"
    if statuses & OPEN_DISPUTE_STATUSES:
        return "disputed"
    if charge.refunded_amount >= charge.amount:
        return "refunded"
    return "partially_refunded" if charge.refunded_amount else "paid"


def _funnel_id(purchase: PurchaseFact) -> str | None:
    return str(purchase.order_id) if purchase.recorded else None


def _sale(charge: ChargeFact) -> TruthSale:
    purchase = charge.purchase
    product = purchase.product
    return TruthSale(
        charge_id=charge.id,
        payment_intent_id=charge.payment_intent,
        customer_email=purchase.person.email,
        amount=charge.amount,
        currency=charge.currency,
        kind=product.kind,
        installment=charge.installment,
        installments_total=product.payments if product.kind == "installment" else None,
        subscription_id=charge.subscription.id if charge.subscription else None,
        status=sale_status(charge),
        refunded_amount=charge.refunded_amount,
        funnel_purchase_id=_funnel_id(purchase),
        product=product.name if purchase.recorded else None,
        source="funnel" if purchase.recorded and charge is purchase.first_charge else "stripe",
    )


def _plan(subscription: SubscriptionFact) -> TruthPlan:
    purchase = subscription.purchase
    product = purchase.product
    status, access_ends_at = subscription.status, None
    if status == "canceled":
        status = "completed" if subscription.ended_by == "funnel" else "cancelled"
    if status == "cancelled":
        # The platform's rule: with money outstanding access ends at once, else with the paid period.
        access_ends_at = (
            subscription.canceled_at if subscription.unpaid_at_cancel else subscription.period_end
        )
    failed = sum(1 for charge in purchase.charges if not charge.succeeded)
    return TruthPlan(
        subscription_id=subscription.id,
        customer_email=purchase.person.email,
        kind=product.kind,
        installments_paid=subscription.paid_invoices,
        installments_total=product.payments if product.kind == "installment" else None,
        failed_payments=failed,
        status=status,
        access_ends_at=access_ends_at,
        funnel_purchase_id=_funnel_id(purchase),
    )


def _completing_refund(charge: ChargeFact) -> RefundFact | None:
    """The counted refund that brought the charge's refunds up to its whole amount."""
    total = 0
    for refund in sorted(charge.refunds, key=lambda r: r.created):
        if refund.status in COUNTED_REFUND_STATUSES:
            total += refund.amount
            if total >= charge.amount:
                return refund
    return None


def _access_alerts(purchases: list[PurchaseFact]) -> list[TruthAlert]:
    """Two purchases of one funnel product by one email, first payments within 30 days: one fully refunded,
    the other still paid and not fully refunded. The membership system took access away from both."""
    by_buyer_product: dict[tuple[str, str], list[PurchaseFact]] = defaultdict(list)
    for purchase in purchases:
        if purchase.recorded:
            by_buyer_product[(purchase.person.email, purchase.product.name)].append(purchase)
    alerts: dict[str, TruthAlert] = {}
    for group in by_buyer_product.values():
        for refunded in group:
            refund = _completing_refund(refunded.first_charge)
            if refund is None:
                continue
            for kept in group:
                first = kept.first_charge
                close = abs(first.created - refunded.first_charge.created) <= ACCESS_WINDOW
                still_paid = first.succeeded and first.refunded_amount < first.amount
                key = f"access_revocation:{refund.id}"
                if kept is not refunded and close and still_paid and key not in alerts:
                    alerts[key] = TruthAlert(
                        key,
                        "access_revocation",
                        refunded.person.email,
                        refunded.first_charge.id,
                        first.id,
                        None,
                    )
    return list(alerts.values())


def _dispute_alerts(ledger: Ledger) -> list[TruthAlert]:
    return [
        TruthAlert(
            f"dispute:{dispute.id}",
            "dispute",
            dispute.charge.purchase.person.email,
            dispute.charge.id,
            None,
            dispute.status,
        )
        for dispute in ledger.disputes
    ]


def _payment_failed_alerts(ledger: Ledger) -> list[TruthAlert]:
    """One per invoice with a failed attempt, whether or not a retry paid it later: staff were told."""
    return [
        TruthAlert(
            f"payment_failed:{invoice.id}",
            "payment_failed",
            subscription.purchase.person.email,
            None,
            None,
            None,
        )  # fmt: skip
        for subscription in ledger.subscriptions
        for invoice in subscription.invoices
        if invoice.failed_attempts
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a generated seller month's scenario counts as JSON.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--purchases", type=int, default=40)
    args = parser.parse_args(argv)
    json.dump(month_summary(make_month(args.seed, purchases=args.purchases)), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

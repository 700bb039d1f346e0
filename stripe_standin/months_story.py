"""The seller's month: who buys what, and what then happens to each payment.

Everything is drawn from one `random.Random(seed)`. The rates are set so that a 40-purchase month holds a
few of the common scenarios and seeds 0..49 together hold every one (tests/unit/test_months.py checks).
Each object's story is written in time order (see months_stripe.py); nothing is scheduled after HORIZON,
so whatever would come later simply has not happened yet when the month ends.
"""

from __future__ import annotations

import random

from stripe_standin.months_billing import Billing
from stripe_standin.months_disputes import Disputes
from stripe_standin.months_facts import (
    DAY,
    DOMAINS,
    FIRST_NAMES,
    HORIZON,
    HOUR,
    INSTALLMENTS,
    LAST_NAMES,
    ONE_TIME,
    PURCHASE_DAYS,
    SPAN_DAYS,
    START,
    SUBSCRIPTIONS,
    ChargeFact,
    DisputeFact,
    Ids,
    InvoiceFact,
    Ledger,
    Person,
    Product,
    PurchaseFact,
    SubscriptionFact,
)
from stripe_standin.months_stripe import DECLINES, Account
from stripe_standin.months_timeline import OLD_VERSIONS, Endpoint

KIND_WEIGHTS = {"one_time": 0.55, "installment": 0.25, "subscription": 0.20}
CURRENCY_WEIGHTS = {"jpy": 5, "usd": 4, "eur": 1}
CHANNELS = {"webhook": 0.55, "both": 0.25, "csv": 0.12, "none": 0.08}
# The plan's N travels only in the purchase webhook (`stripe_cancel_after_payments`; the CSV has no such
# column), so a plan always has its webhook: without it nothing tells a plan from a subscription.
PLAN_CHANNELS = {"webhook": 0.65, "both": 0.35}
PAIRS = {"duplicate": 0.08, "two_seats": 0.03, "rebuy_in_window": 0.025, "rebuy_late": 0.025}

P_RETURNING_BUYER = 0.25
P_SAME_CUSTOMER = 0.35  # else the funnel makes a new cus_ for the order
P_LEGACY_CHARGE = 0.08  # a one-time sale through the old Charges API: no PaymentIntent
P_DISPUTE = 0.045
P_INQUIRY_ESCALATES = 0.5  # of inquiries answered with evidence
P_REFUND_FIRST_PAYMENT = 0.12
P_REFUND_LATER_PAYMENT = 0.05
P_RENEWAL_FAILS = 0.10
P_RETRY_RECOVERS = 0.55
P_SELLER_CANCELS_UNPAID = 0.45
P_SELLER_CANCELS_PAID_UP = 0.25  # of open-ended subscriptions
REFUND_FATES = {"instant": 0.72, "pending_then_succeeded": 0.10, "pending_then_failed": 0.12, "slow": 0.06}
REFUND_FAILURES = ("expired_or_canceled_card", "lost_or_stolen_card", "declined", "unknown")
# Days after the first failed attempt on which Stripe retries, per billing interval (all within the period).
RETRY_DAYS = {("week", 1): (1, 3, 5), ("week", 2): (2, 5, 9), ("month", 1): (3, 8, 15)}


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _end_of_day(when: int) -> int:
    return when - when % DAY + DAY - 1


class SellerMonth:
    def __init__(self, seed: int, purchases: int) -> None:
        self.rng = random.Random(seed)
        self.wanted = purchases
        self.ledger = Ledger()
        upgraded_at = START + int(self.rng.uniform(0.3, 0.7) * SPAN_DAYS * DAY)
        self.endpoint = Endpoint(self.rng.choice(OLD_VERSIONS), upgraded_at)
        self.stripe = Account(Ids(seed), self.endpoint, self.ledger)
        self.billing = Billing(self.stripe)
        self.disputes = Disputes(self.stripe)
        self.people: list[Person] = []
        self.next_order_id = 21_900_000 + self.rng.randrange(90_000)

    def write(self) -> None:
        times = sorted(
            int(self.rng.uniform(START + HOUR, START + PURCHASE_DAYS * DAY)) for _ in range(self.wanted)
        )
        pairs = {
            "duplicate": self._duplicate,
            "two_seats": self._two_seats,
            "rebuy_in_window": self._rebuy_in_window,
            "rebuy_late": self._rebuy_late,
        }
        slot = 0
        while slot < len(times):
            pair = _weighted(self.rng, {**PAIRS, "single": 1 - sum(PAIRS.values())})
            if pair != "single" and len(times) - slot >= 2 and pairs[pair](times[slot]):
                slot += 2  # a pair is two of the month's purchases
            else:
                self._single(times[slot])
                slot += 1

    # -- people and orders ------------------------------------------------------------------------

    def _pick_product(self, kinds: dict[str, float] = KIND_WEIGHTS) -> Product:
        kind = _weighted(self.rng, kinds)
        products = {"one_time": ONE_TIME, "installment": INSTALLMENTS, "subscription": SUBSCRIPTIONS}[kind]
        return self.rng.choices(products, weights=[CURRENCY_WEIGHTS[p.currency] for p in products])[0]

    def _pick_person(self, product: Product) -> Person:
        """A returning buyer now and then, never for a product they already have (only the pair
        scenarios buy one product twice, so every such pair is one the month means)."""
        returning = [p for p in self.people if product.name not in p.products]
        if returning and self.rng.random() < P_RETURNING_BUYER:
            return self.rng.choice(returning)
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower().replace("'", "")
        email = f"{local}{len(self.people) + 1}@{self.rng.choice(DOMAINS)}"
        person = Person(first, last, email)
        self.people.append(person)
        return person

    def _typed_email(self, person: Person) -> str:
        """The email as the buyer typed it into the funnel's order form."""
        local, domain = person.email.split("@")
        style = self.rng.random()
        if style < 0.45:
            return person.email
        capitalised = ".".join(part.capitalize() for part in local.split("."))
        if style < 0.70:
            return f"{capitalised}@{domain}"
        if style < 0.85:
            return f"{local}@{domain.title().replace('.Com', '.COM')}"
        return f"  {capitalised}@{domain.capitalize()} "

    def _channel(self, product: Product, *, recorded: bool = False) -> str:
        if product.kind == "installment":
            return _weighted(self.rng, PLAN_CHANNELS)
        channels = {k: v for k, v in CHANNELS.items() if not (recorded and k == "none")}
        return _weighted(self.rng, channels)

    def _order(
        self, when: int, product: Product, person: Person, channel: str, scenario: str
    ) -> PurchaseFact:
        self.next_order_id += self.rng.randint(1, 40)  # other funnels' orders come in between
        purchase = PurchaseFact(
            self.next_order_id, product, person, self._typed_email(person), "", when, channel, scenario
        )
        if person.customers and self.rng.random() < P_SAME_CUSTOMER:
            purchase.customer_id = person.customers[-1]
        else:
            purchase.customer_id = self.stripe.customer(when - self.rng.randint(2, 20), purchase)
        person.products.add(product.name)
        self.ledger.purchases.append(purchase)
        return purchase

    def _live(
        self, purchase: PurchaseFact, *, aftermath: bool = True, staff_cancel_at: int | None = None
    ) -> None:
        """The purchase's checkout and, for a plan or subscription, its whole billing life."""
        if purchase.product.kind == "one_time":
            legacy = self.rng.random() < P_LEGACY_CHARGE
            self.stripe.sell(purchase.created, purchase, legacy_charge=legacy)
            if aftermath:
                self._aftermath(purchase.first_charge, first_payment=True)
            return
        fact = self.billing.start_subscription(purchase.created, purchase)
        if aftermath:
            self._aftermath(purchase.first_charge, first_payment=True)
        if staff_cancel_at is not None:
            self.billing.cancel(fact, staff_cancel_at, by="seller")
            return
        self._bill(fact)

    # -- purchase scenarios -----------------------------------------------------------------------

    def _single(self, when: int) -> None:
        product = self._pick_product()
        person = self._pick_person(product)
        self._live(self._order(when, product, person, self._channel(product), "single"))

    def _duplicate(self, when: int) -> bool:
        """Bought twice by mistake minutes apart; staff fully refund one (and cancel its subscription)."""
        product = self._pick_product({"one_time": 0.6, "installment": 0.2, "subscription": 0.2})
        person = self._pick_person(product)
        first = self._order(when, product, person, self._channel(product, recorded=True), "duplicate")
        again = when + self.rng.randint(60, 900)
        second = self._order(again, product, person, self._channel(product, recorded=True), "duplicate")
        refunded = self.rng.choice((first, second))
        refund_at = again + self.rng.randint(2 * HOUR, 3 * DAY)
        for purchase in (first, second):
            self._live(purchase, aftermath=False, staff_cancel_at=refund_at if purchase is refunded else None)
        fate = _weighted(
            self.rng, {"instant": 0.8, "pending_then_succeeded": 0.08, "pending_then_failed": 0.12}
        )
        self._refund(refunded.first_charge, refund_at, product.amount, "duplicate", fate, refund_again=True)
        return True

    def _two_seats(self, when: int) -> bool:
        """The same product twice on purpose (a second seat); at most a partial refund: no alert."""
        product = self._pick_product({"one_time": 1.0})
        person = self._pick_person(product)
        purchases = [
            self._order(when + offset, product, person, self._channel(product, recorded=True), "two_seats")
            for offset in (0, self.rng.randint(60, 600))
        ]
        for purchase in purchases:
            self._live(purchase, aftermath=False)
        if self.rng.random() < 0.5:
            charge = self.rng.choice(purchases).first_charge
            refund_at = charge.created + self.rng.randint(HOUR, 5 * DAY)
            self._refund(charge, refund_at, self._part_of(charge), "requested_by_customer", "instant")
        return True

    def _rebuy_in_window(self, when: int) -> bool:
        """Bought again within 30 days, then the first copy refunded in full: the access rule fires."""
        again = when + self.rng.randint(3 * DAY, 20 * DAY)
        return self._rebuy(when, again, refund_first_after=again, scenario="rebuy_in_window")

    def _rebuy_late(self, when: int) -> bool:
        """Refunded, then bought again more than 30 days later: outside the rule's window."""
        again = when + self.rng.randint(35 * DAY, 55 * DAY)
        return self._rebuy(when, again, refund_first_after=when, scenario="rebuy_late")

    def _rebuy(self, when: int, again: int, *, refund_first_after: int, scenario: str) -> bool:
        if again > HORIZON - 4 * DAY:
            return False
        product = self._pick_product({"one_time": 1.0})
        person = self._pick_person(product)
        first = self._order(when, product, person, self._channel(product, recorded=True), scenario)
        self._live(first, aftermath=False)
        refund_at = refund_first_after + self.rng.randint(HOUR, 3 * DAY)
        self._refund(first.first_charge, refund_at, product.amount, "requested_by_customer", "instant")
        self._live(self._order(again, product, person, self._channel(product, recorded=True), scenario),
                   aftermath=False)  # fmt: skip
        return True

    # -- what happens to a payment ----------------------------------------------------------------

    def _aftermath(self, charge: ChargeFact, *, first_payment: bool) -> None:
        roll = self.rng.random()
        refund_rate = P_REFUND_FIRST_PAYMENT if first_payment else P_REFUND_LATER_PAYMENT
        if roll < P_DISPUTE:
            self._dispute(charge)
        elif roll < P_DISPUTE + refund_rate:
            self._refunds(charge)

    def _part_of(self, charge: ChargeFact) -> int:
        step = 100  # whole hundreds of yen, whole dollars or euros
        part = round(charge.amount * self.rng.uniform(0.2, 0.7) / step) * step
        return min(max(part, step), charge.amount - step)

    def _refunds(self, charge: ChargeFact) -> None:
        when = charge.created + self.rng.randint(HOUR, 20 * DAY)
        if when > HORIZON:
            return
        reason = self.rng.choice(("requested_by_customer",) * 6 + (None, None, "fraudulent"))
        shape = _weighted(self.rng, {"full": 0.6, "partial": 0.25, "partial_then_rest": 0.15})
        if shape == "full":
            self._refund(charge, when, charge.amount, reason, _weighted(self.rng, REFUND_FATES))
            return
        part = self._part_of(charge)
        if shape == "partial":
            self._refund(charge, when, part, reason, _weighted(self.rng, REFUND_FATES))
            return
        self._refund(charge, when, part, reason, "instant")
        rest_at = when + self.rng.randint(DAY, 10 * DAY)
        if rest_at <= HORIZON:
            self._refund(charge, rest_at, charge.amount - part, reason, _weighted(self.rng, REFUND_FATES))

    def _refund(
        self,
        charge: ChargeFact,
        when: int,
        amount: int,
        reason: str | None,
        fate: str,
        *,
        refund_again: bool = False,
    ) -> None:
        """One refund and its fate; after a failure staff may refund again (`refund_again`, or by chance)."""
        if when > HORIZON:
            return
        refund = self.stripe.refund(
            charge, when, amount, reason, "succeeded" if fate == "instant" else "pending"
        )
        if fate in ("instant", "slow"):
            return  # a slow refund is still pending when the month ends
        settled_at = when + self.rng.randint(DAY, 8 * DAY)
        if settled_at > HORIZON:
            return
        if fate == "pending_then_succeeded":
            self.stripe.settle_refund(refund, settled_at, "succeeded")
            return
        self.stripe.settle_refund(refund, settled_at, "failed", self.rng.choice(REFUND_FAILURES))
        if refund_again or self.rng.random() < 0.5:
            self._refund(charge, settled_at + self.rng.randint(HOUR, 2 * DAY), amount, reason, "instant")

    def _dispute(self, charge: ChargeFact) -> None:
        early = self.rng.random() < 0.5  # early enough for the charge's own event to arrive after it
        gap = self.rng.randint(2 * HOUR, 2 * DAY) if early else self.rng.randint(3 * DAY, 40 * DAY)
        when = charge.created + gap
        if when > HORIZON:
            return
        inquiry = self.rng.random() < 0.35
        if inquiry:
            reason = self.rng.choice(("general", "fraudulent", "unrecognized"))
        else:
            reasons = ["fraudulent"] * 3 + ["product_not_received", "unrecognized", "credit_not_processed"]
            reasons += ["subscription_canceled"] if charge.subscription else ["general"]
            reason = self.rng.choice(reasons)
        due_by = _end_of_day(when + self.rng.randint(7, 21) * DAY)
        dispute = self.disputes.open_dispute(charge, when, inquiry=inquiry, reason=reason, due_by=due_by)
        fates = ("dropped", "late", "") if early else ("dropped", "", "", "")
        dispute.charge_event_fate = self.rng.choice(fates)
        if inquiry:
            self._inquiry(dispute, due_by)
        else:
            self._chargeback(dispute, when)

    def _inquiry(self, dispute: DisputeFact, due_by: int) -> None:
        path = _weighted(self.rng, {"refund": 0.25, "evidence": 0.55, "silence": 0.20})
        when = dispute.created + self.rng.randint(HOUR, 5 * DAY)
        if when > HORIZON:
            return
        if path == "refund":
            # Refunding is still possible during an inquiry, and it heads off a chargeback.
            charge = dispute.charge
            self.stripe.refund(charge, when, charge.amount, "requested_by_customer")
            when += self.rng.randint(2 * DAY, 10 * DAY)
        elif path == "evidence":
            self.disputes.submit_evidence(dispute, when)
            when += self.rng.randint(3 * DAY, 15 * DAY)
            if self.rng.random() < P_INQUIRY_ESCALATES:
                if when <= HORIZON:
                    self.disputes.escalate(dispute, when, _end_of_day(when + 14 * DAY))
                    self._chargeback(dispute, when)
                return
        else:
            when = due_by + self.rng.randint(DAY, 5 * DAY)
        if when <= HORIZON:
            self.disputes.close_dispute(dispute, when, "warning_closed")

    def _chargeback(self, dispute: DisputeFact, opened: int) -> None:
        when = opened + self.rng.randint(HOUR, 5 * DAY)
        if when > HORIZON:
            return
        if self.rng.random() < 0.15:
            self.disputes.close_dispute(dispute, when, "lost")  # the seller accepts it
            return
        self.disputes.submit_evidence(dispute, when)
        when += self.rng.randint(7 * DAY, 40 * DAY)
        if when <= HORIZON:
            self.disputes.close_dispute(dispute, when, "won" if self.rng.random() < 0.45 else "lost")

    # -- subscriptions ----------------------------------------------------------------------------

    def _bill(self, fact: SubscriptionFact) -> None:
        """Renew period after period until the plan completes, the seller cancels, payment stops, or the
        month ends."""
        product = fact.purchase.product
        cancel_after = None
        if product.kind == "subscription" and self.rng.random() < P_SELLER_CANCELS_PAID_UP:
            cancel_after = self.rng.randint(1, 4)
        while True:
            paid = fact.paid_invoices
            if product.payments and paid >= product.payments:
                self.billing.cancel(
                    fact, fact.purchase.charges[-1].created + self.rng.randint(60, 1_800), by="funnel"
                )
                return
            if cancel_after is not None and paid >= cancel_after:
                self._cancel_paid_up(fact)
                return
            if fact.period_end > HORIZON:
                return
            invoice = self.billing.renew(fact, fact.period_end)
            if not self._collect(fact, invoice, invoice.created + HOUR):
                return

    def _cancel_paid_up(self, fact: SubscriptionFact) -> None:
        """The seller cancels a paid-up subscription: at once or from the period's end (access runs to it)."""
        when = self.rng.randint(fact.purchase.charges[-1].created + HOUR, fact.period_end - HOUR)
        if when > HORIZON:
            return
        if fact.period_end <= HORIZON and self.rng.random() < 0.35:
            self.billing.cancel_at_period_end(fact, when)
        else:
            self.billing.cancel(fact, when, by="seller")

    def _collect(self, fact: SubscriptionFact, invoice: InvoiceFact, when: int) -> bool:
        """Charge a renewal, retrying a decline on Stripe's schedule; True when it was paid."""
        if self.rng.random() >= P_RENEWAL_FAILS:
            self._aftermath(self.billing.attempt(fact, invoice, when, None), first_payment=False)
            return True
        product = fact.purchase.product
        decline = self.rng.choice(DECLINES)
        offsets = RETRY_DAYS[(product.interval, product.interval_count)]
        attempts = [when] + [when + days * DAY + self.rng.randint(0, 6) * HOUR for days in offsets]
        recovers_on = self.rng.randint(1, len(offsets)) if self.rng.random() < P_RETRY_RECOVERS else None
        cancels_after = None
        if recovers_on is None and self.rng.random() < P_SELLER_CANCELS_UNPAID:
            cancels_after = self.rng.randint(1, len(attempts))  # failed attempts before the seller cancels
        for number, at in enumerate(attempts):
            if at > HORIZON:
                return False
            if number == recovers_on:
                self._aftermath(self.billing.attempt(fact, invoice, at, None), first_payment=False)
                return True
            following = attempts[number + 1] if number + 1 < len(attempts) else None
            self.billing.attempt(fact, invoice, at, decline, following)
            if cancels_after == number + 1 and following is not None:
                self.billing.cancel(fact, at + self.rng.randint(HOUR, 18 * HOUR), by="seller",
                                   void_open=self.rng.random() < 0.5)  # fmt: skip
                return False
        self.billing.mark_unpaid(fact, attempts[-1])
        cancel_at = attempts[-1] + self.rng.randint(DAY, 6 * DAY)
        if cancels_after == len(attempts) and cancel_at <= HORIZON:
            self.billing.cancel(fact, cancel_at, by="seller", void_open=self.rng.random() < 0.5)
        return False

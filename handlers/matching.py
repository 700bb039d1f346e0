"""How funnel purchases are tied to Stripe payments: the rules in one pure function.

The rules (README, "How payments are matched"):
1. Two funnel records of one purchase (its webhook and a row of a sales export) are one sale: same
   purchase id and the same product name. Two purchases of one product are two sales.
2. A sale whose record carries a payment id matches the Stripe payment with that id, `ch_` or `pi_`,
   either way round (a `pi_` matches its charge, a `ch_` matches the charge itself). Of several charges
   on one payment intent (a failed attempt, then the one that succeeded) the succeeded one is the sale's.
3. A sale with a `subscription_id` and no payment id is that subscription's first paid invoice: the
   charge of its `subscription_create` invoice, else the earliest paid charge of the subscription. It
   is never an extra row next to that charge.
4. A sale whose payment has not arrived yet is shown once, as the funnel's row; when the payment
   arrives, that payment's row replaces it. So there is never a second row for one payment.
5. Every later payment of a subscription belongs to the sale that bought the subscription.

Everything here is plain data in and plain data out, so the rules are tested table by table
(tests/unit/test_matching.py) without a database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Payment:
    """A Stripe charge as matching needs it."""

    charge_id: str
    payment_intent_id: str | None
    succeeded: bool
    created: datetime | None
    subscription_id: str | None = None
    billing_reason: str | None = None  # of the charge's invoice, when known


@dataclass(frozen=True)
class FunnelRecord:
    """One funnel record of one product of a purchase (a webhook's, or a sales export row's)."""

    purchase_id: str
    product_key: str
    product_name: str
    payment_id: str | None = None  # ch_ or pi_, as the funnel stores it
    subscription_id: str | None = None
    purchased_at: datetime | None = None
    origin: str = "webhook"  # webhook | import


@dataclass
class Sale:
    """One funnel sale: the records that describe it, and the Stripe payment that is its own."""

    records: list[FunnelRecord]
    payment: str | None = None  # the charge id of the sale's own payment, once it has arrived

    @property
    def first(self) -> FunnelRecord:
        return self.records[0]

    @property
    def purchase_id(self) -> str:
        return self.first.purchase_id

    @property
    def payment_id(self) -> str | None:
        return next((r.payment_id for r in self.records if r.payment_id), None)

    @property
    def subscription_id(self) -> str | None:
        return next((r.subscription_id for r in self.records if r.subscription_id), None)


@dataclass
class Matches:
    sales: list[Sale]
    # charge id -> (the sale it belongs to, whether it is the very payment the funnel recorded)
    sale_of_charge: dict[str, tuple[Sale, bool]] = field(default_factory=dict)
    # (charge id, payment intent) of every sale's own payment
    owned: set[tuple[str, str | None]] = field(default_factory=set)
    # The same, as lookups (scanning `owned` per sale and per payment made matching quadratic:
    # minutes for 100k payments): every owned charge id and intent, and the sale owning each intent.
    owned_ids: set[str] = field(default_factory=set)
    owner_of_intent: dict[str, Sale] = field(default_factory=dict)

    def unpaid_sales(self) -> list[Sale]:
        """Sales whose own payment has not arrived: each is shown as one funnel row."""
        return [sale for sale in self.sales if sale.payment is None and not self._covered(sale)]

    def _covered(self, sale: Sale) -> bool:
        # An order bump on the same checkout charge as the main product: that charge's row covers it.
        return sale.payment_id is not None and sale.payment_id in self.owned_ids


def sale_identity(record: FunnelRecord) -> tuple[str, str]:
    return record.purchase_id, " ".join(record.product_name.split()).lower()


def group_sales(records: Iterable[FunnelRecord]) -> list[Sale]:
    """Rule 1: records of one purchase and product name are one sale (the same product twice in one
    order is kept as two, by its position among that order's records of the name)."""
    by_origin: dict[tuple[str, str], dict[str, list[FunnelRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in sorted(records, key=lambda r: (r.purchase_id, r.product_key)):
        by_origin[sale_identity(record)][record.origin].append(record)
    sales = []
    for groups in by_origin.values():
        count = max(len(group) for group in groups.values())
        for position in range(count):
            sales.append(Sale([g[position] for g in groups.values() if position < len(g)]))
    return sales


def match(records: Sequence[FunnelRecord], payments: Sequence[Payment]) -> Matches:
    """Apply rules 1 to 5 to the funnel records and Stripe payments of one customer (or of everyone)."""
    sales = group_sales(records)
    result = Matches(sales)
    by_id = {p.charge_id: p for p in payments}
    by_intent: dict[str, list[Payment]] = defaultdict(list)
    by_subscription: dict[str, list[Payment]] = defaultdict(list)
    for payment in payments:
        if payment.payment_intent_id:
            by_intent[payment.payment_intent_id].append(payment)
        if payment.subscription_id and payment.succeeded:
            by_subscription[payment.subscription_id].append(payment)

    claimed: set[str] = set()
    for sale in sales:  # rule 2
        own = _by_payment_id(sale.payment_id, by_id, by_intent) if sale.payment_id else None
        if own is not None and own.charge_id not in claimed:
            _own(result, sale, own, claimed)
    for sale in sales:  # rule 3
        if sale.payment is None and sale.payment_id is None and sale.subscription_id:
            own = _first_payment(by_subscription.get(sale.subscription_id, []), claimed)
            if own is not None:
                _own(result, sale, own, claimed)

    owner_of_subscription: dict[str, Sale] = {}
    for sale in sales:
        if sale.subscription_id:
            owner_of_subscription.setdefault(sale.subscription_id, sale)
    for payment in payments:  # rule 5 (and failed attempts on a sale's own payment intent)
        if payment.charge_id in result.sale_of_charge:
            continue
        owner = owner_of_subscription.get(payment.subscription_id or "") or _intent_owner(
            result, payment.payment_intent_id
        )
        if owner is not None:
            result.sale_of_charge[payment.charge_id] = (owner, False)
    return result


def _own(result: Matches, sale: Sale, payment: Payment, claimed: set[str]) -> None:
    sale.payment = payment.charge_id
    claimed.add(payment.charge_id)
    result.sale_of_charge[payment.charge_id] = (sale, True)
    result.owned.add((payment.charge_id, payment.payment_intent_id))
    result.owned_ids.add(payment.charge_id)
    if payment.payment_intent_id:
        result.owned_ids.add(payment.payment_intent_id)
        result.owner_of_intent.setdefault(payment.payment_intent_id, sale)


def _by_payment_id(
    payment_id: str, by_id: dict[str, Payment], by_intent: dict[str, list[Payment]]
) -> Payment | None:
    if payment_id in by_id:
        payment = by_id[payment_id]
        # A pi_ stored as the charge id's intent: prefer its succeeded charge to a failed attempt.
        if payment.succeeded or not payment.payment_intent_id:
            return payment if payment.succeeded else None
        payment_id = payment.payment_intent_id
    attempts = [p for p in by_intent.get(payment_id, []) if p.succeeded]
    return min(attempts, key=_when) if attempts else None


def _first_payment(candidates: list[Payment], claimed: set[str]) -> Payment | None:
    free = [p for p in candidates if p.charge_id not in claimed]
    created = [p for p in free if p.billing_reason == "subscription_create"]
    if created:
        return min(created, key=_when)
    # Without the invoice's billing reason, only the earliest paid charge can be the first; once that
    # is taken (or it is a known renewal) there is no first payment to give.
    earliest = min(candidates, key=_when) if candidates else None
    if earliest is None or earliest.charge_id in claimed or earliest.billing_reason not in (None, "manual"):
        return None
    return earliest


def _intent_owner(result: Matches, payment_intent: str | None) -> Sale | None:
    return result.owner_of_intent.get(payment_intent) if payment_intent else None


def _when(payment: Payment) -> tuple[datetime, str]:
    return payment.created or EARLIEST, payment.charge_id

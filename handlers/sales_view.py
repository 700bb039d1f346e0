"""The complete sales view: every payment Stripe took, tied to the funnel purchase it belongs to.

ClickFunnels 1.0 shows only the first payment of a payment plan or subscription; this view shows them
all. It is derived on read from the stored facts (charges, invoices, invoice payments, refunds, funnel
purchases), so it is the same whatever order the events arrived in. `build_sales_view` is the pure
core; `load_sales_view` reads the database and calls it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlmodel import Session

from models import Charge, FunnelPurchase, Invoice, InvoicePayment, Refund
from models.db import execute
from models.prepared import Prepared
from models.types import iso

# Sorts before every real time; aware, like every datetime the models hand back.
EARLIEST = datetime.min.replace(tzinfo=UTC)

# Refund statuses that take money back (or will); failed and canceled ones do not.

COUNTED_REFUND_STATUSES = {"succeeded", "pending", "requires_action", None}


@dataclass
class SaleRow:
    charge_id: str | None
    payment_intent_id: str | None
    customer_email: str | None
    product: str | None
    amount: int
    currency: str
    paid_at: datetime | None
    source: str  # funnel: the funnel recorded this payment; stripe: we reconciled it from Stripe
    kind: str  # one_time | installment | subscription
    installment: int | None
    installments_total: int | None
    subscription_id: str | None
    invoice_id: str | None
    refunded_amount: int
    funnel_purchase_id: str | None
    stripe_customer_id: str | None = None
    found_by: str | None = None  # webhook | reconcile | funnel

    def as_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["paid_at"] = iso(self.paid_at)
        return row


class _Links:
    """Lookups from a charge to its invoice and to its funnel purchase, in both API shapes."""

    def __init__(
        self,
        invoices: Sequence[Invoice],
        invoice_payments: Sequence[InvoicePayment],
        purchases: Sequence[FunnelPurchase],
    ) -> None:
        self.invoice_by_id = {i.id: i for i in invoices}
        self.invoice_by_charge = {i.charge_id: i for i in invoices if i.charge_id}
        self.invoice_by_intent = {i.payment_intent_id: i for i in invoices if i.payment_intent_id}
        self.invoice_id_by_intent = {
            p.payment_intent_id: p.invoice_id for p in invoice_payments if p.payment_intent_id
        }
        self.invoice_id_by_charge = {p.charge_id: p.invoice_id for p in invoice_payments if p.charge_id}
        self.purchase_by_payment: dict[str, FunnelPurchase] = {}
        self.purchase_by_subscription: dict[str, FunnelPurchase] = {}
        for purchase in sorted(purchases, key=lambda p: (p.purchase_id, p.product_key)):
            if purchase.charge_id:
                self.purchase_by_payment.setdefault(purchase.charge_id, purchase)
            if purchase.subscription_id:
                self.purchase_by_subscription.setdefault(purchase.subscription_id, purchase)

    def invoice_for(self, charge: Charge) -> Invoice | None:
        invoice_id = (
            charge.invoice_id
            or self.invoice_id_by_charge.get(charge.id)
            or (self.invoice_id_by_intent.get(charge.payment_intent) if charge.payment_intent else None)
        )
        if invoice_id and invoice_id in self.invoice_by_id:
            return self.invoice_by_id[invoice_id]
        return self.invoice_by_charge.get(charge.id) or (
            self.invoice_by_intent.get(charge.payment_intent) if charge.payment_intent else None
        )

    def subscription_for(self, charge: Charge, invoice: Invoice | None) -> str | None:
        if invoice and invoice.subscription_id:
            return invoice.subscription_id
        for invoice_id in (charge.invoice_id, self.invoice_id_by_intent.get(charge.payment_intent or "")):
            # An invoice payment may name an invoice we have not stored yet: no subscription known.
            if invoice_id and invoice_id in self.invoice_by_id:
                return self.invoice_by_id[invoice_id].subscription_id
        return None

    def purchase_for(self, charge: Charge, subscription_id: str | None) -> tuple[FunnelPurchase | None, bool]:
        """The funnel purchase and whether the funnel itself recorded this very payment."""
        for key in (charge.id, charge.payment_intent):
            if key and key in self.purchase_by_payment:
                return self.purchase_by_payment[key], True
        if subscription_id and subscription_id in self.purchase_by_subscription:
            return self.purchase_by_subscription[subscription_id], False
        return None, False


def _refunded(charge: Charge, refunds: Iterable[Refund]) -> int:
    counted = sum(r.amount for r in refunds if r.status in COUNTED_REFUND_STATUSES)
    return max(charge.amount_refunded or 0, counted)


def _kind(subscription_id: str | None, purchase: FunnelPurchase | None) -> tuple[str, int | None]:
    if purchase is not None and purchase.installments_total:
        return "installment", purchase.installments_total
    if subscription_id or (purchase is not None and purchase.is_subscription):
        return "subscription", None
    return "one_time", None


def build_sales_view(
    charges: Sequence[Charge],
    invoices: Sequence[Invoice],
    invoice_payments: Sequence[InvoicePayment],
    refunds: Sequence[Refund],
    purchases: Sequence[FunnelPurchase],
) -> list[SaleRow]:
    """One row per payment, oldest first; installment k of N is the k-th payment of its subscription."""
    links = _Links(invoices, invoice_payments, purchases)
    refunds_by_charge: dict[str, list[Refund]] = defaultdict(list)
    for refund in refunds:
        if refund.charge:
            refunds_by_charge[refund.charge].append(refund)

    rows: list[SaleRow] = []
    recorded_by_funnel: set[tuple[str, str]] = set()
    for charge in charges:
        if charge.status != "succeeded":
            continue
        invoice = links.invoice_for(charge)
        subscription_id = links.subscription_for(charge, invoice)
        purchase, funnel_recorded = links.purchase_for(charge, subscription_id)
        if purchase is not None and funnel_recorded:
            recorded_by_funnel.add((purchase.purchase_id, purchase.product_name))

        kind, total = _kind(subscription_id, purchase)
        rows.append(
            SaleRow(
                charge_id=charge.id,
                payment_intent_id=charge.payment_intent,
                customer_email=charge.customer_email
                or (invoice.customer_email if invoice else None)
                or (purchase.customer_email if purchase else None),
                product=(purchase.product_name if purchase else None)
                or (invoice.product if invoice else None)
                or charge.description,
                amount=charge.amount,
                currency=charge.currency,
                paid_at=charge.created,
                source="funnel" if funnel_recorded else "stripe",
                kind=kind,
                installment=None,
                installments_total=total,
                subscription_id=subscription_id,
                invoice_id=invoice.id if invoice else charge.invoice_id,
                refunded_amount=_refunded(charge, refunds_by_charge.get(charge.id, ())),
                funnel_purchase_id=purchase.purchase_id if purchase else None,
                stripe_customer_id=charge.customer,
                found_by=charge.found_by,
            )
        )

    rows.extend(_funnel_only_rows(purchases, recorded_by_funnel, rows))
    _number_installments(rows)
    rows.sort(
        key=lambda r: (r.paid_at is None, r.paid_at or EARLIEST, r.charge_id or r.payment_intent_id or "")
    )
    return rows


def _funnel_only_rows(
    purchases: Sequence[FunnelPurchase], recorded: set[tuple[str, str]], stripe_rows: list[SaleRow]
) -> list[SaleRow]:
    """Purchases the funnel recorded whose Stripe payment we have not seen (yet).

    One purchase can be stored twice, from its webhook (keyed by product id) and from a sales export
    (keyed by product name): it is still one sale, so such rows are shown once.
    """
    first_payment_seen = {
        r.subscription_id for r in stripe_rows if r.subscription_id and r.source == "funnel"
    }
    payments_seen = {key for r in stripe_rows for key in (r.charge_id, r.payment_intent_id) if key}
    shown = {(purchase_id, name.strip().lower()) for purchase_id, name in recorded}
    rows = []
    for purchase in purchases:
        identity = (purchase.purchase_id, purchase.product_name.strip().lower())
        if identity in shown or (purchase.charge_id and purchase.charge_id in payments_seen):
            continue
        if purchase.subscription_id and purchase.subscription_id in first_payment_seen:
            continue
        shown.add(identity)

        kind, total = _kind(purchase.subscription_id, purchase)
        payment = purchase.charge_id or ""
        rows.append(
            SaleRow(
                charge_id=payment if payment.startswith("ch_") else None,
                payment_intent_id=payment if payment.startswith("pi_") else None,
                customer_email=purchase.customer_email,
                product=purchase.product_name,
                amount=purchase.amount,
                currency=purchase.currency,
                paid_at=purchase.purchased_at,
                source="funnel",
                kind=kind,
                installment=None,
                installments_total=total,
                subscription_id=purchase.subscription_id,
                invoice_id=None,
                refunded_amount=0,
                funnel_purchase_id=purchase.purchase_id,
                found_by="funnel",
            )
        )
    return rows


def _number_installments(rows: list[SaleRow]) -> None:
    by_subscription: dict[str, list[SaleRow]] = defaultdict(list)
    for row in rows:
        if row.subscription_id:
            by_subscription[row.subscription_id].append(row)
    for group in by_subscription.values():
        # The funnel's own record of the first payment sorts first on a tie: it is payment 1.
        group.sort(key=lambda r: (r.paid_at or EARLIEST, r.found_by != "funnel", r.charge_id or ""))
        for number, row in enumerate(group, start=1):
            row.installment = number


@dataclass
class SalesFacts:
    """The stored facts a sales view is built from (table rows, read-only)."""

    charges: Sequence[Any]
    invoices: Sequence[Any]
    invoice_payments: Sequence[Any]
    refunds: Sequence[Any]
    purchases: Sequence[Any]

    def view(self) -> list[SaleRow]:
        return build_sales_view(
            self.charges, self.invoices, self.invoice_payments, self.refunds, self.purchases
        )


def load_sales_view(session: Session, customer_email: str | None = None) -> list[SaleRow]:
    """Read what the view needs (one customer's payments, or everything) and build it."""
    if customer_email is None:
        return SalesFacts(*(execute(session, select(t)).all() for t in _TABLES)).view()
    return load_customer_facts(session, customer_email).view()


def load_customer_facts(session: Session, customer_email: str) -> SalesFacts:
    """One customer's facts: everything tied to their email, their subscriptions and their payments.

    Runs for every event that touches a customer, so it reads plain rows through statements built once
    (the ORM would build an object per row and a statement per call). `refunds` also holds the refunds
    of payments only the funnel recorded, so a refund can get its note before its charge is stored.
    """
    email = {"email": customer_email}
    purchases = execute(session, _PURCHASES_BY_EMAIL, email).all()
    invoices = execute(session, _INVOICES_BY_EMAIL, email).all()
    subscriptions = {i.subscription_id for i in invoices if i.subscription_id}
    subscriptions |= {p.subscription_id for p in purchases if p.subscription_id}
    if subscriptions:
        more = execute(session, _INVOICES_BY_SUBSCRIPTION, {"ids": sorted(subscriptions)}).all()
        invoices = list({i.id: i for i in [*invoices, *more]}.values())
    invoice_ids = sorted(i.id for i in invoices)
    invoice_payments = (
        execute(session, _INVOICE_PAYMENTS_BY_INVOICE, {"ids": invoice_ids}).all() if invoice_ids else []
    )
    intents = {p.payment_intent_id for p in invoice_payments if p.payment_intent_id}
    intents |= {i.payment_intent_id for i in invoices if i.payment_intent_id}
    charge_ids = {p.charge_id for p in invoice_payments if p.charge_id} | {
        i.charge_id for i in invoices if i.charge_id
    }
    funnel_payments = {p.charge_id for p in purchases if p.charge_id}
    charges = execute(
        session,
        _CHARGES_OF_CUSTOMER,
        {**email, "ids": sorted(charge_ids | funnel_payments), "intents": sorted(intents | funnel_payments)},
    ).all()
    paid = sorted({c.id for c in charges} | funnel_payments)
    refunds = execute(session, _REFUNDS_BY_CHARGE, {"ids": paid}).all() if paid else []
    return SalesFacts(charges, invoices, invoice_payments, refunds, purchases)


_TABLES = (
    Charge.__table__,
    Invoice.__table__,
    InvoicePayment.__table__,
    Refund.__table__,
    FunnelPurchase.__table__,
)


def _where_in(table, column: str) -> Prepared:
    return Prepared(select(table).where(table.c[column].in_(bindparam("ids", expanding=True))))


_PURCHASES_BY_EMAIL = Prepared(
    select(FunnelPurchase.__table__).where(FunnelPurchase.__table__.c.customer_email == bindparam("email"))
)
_INVOICES_BY_EMAIL = Prepared(
    select(Invoice.__table__).where(Invoice.__table__.c.customer_email == bindparam("email"))
)
_INVOICES_BY_SUBSCRIPTION = _where_in(Invoice.__table__, "subscription_id")
_INVOICE_PAYMENTS_BY_INVOICE = _where_in(InvoicePayment.__table__, "invoice_id")
_REFUNDS_BY_CHARGE = _where_in(Refund.__table__, "charge")
_CHARGES_OF_CUSTOMER = Prepared(
    select(Charge.__table__).where(
        (Charge.__table__.c.customer_email == bindparam("email"))
        | Charge.__table__.c.id.in_(bindparam("ids", expanding=True))
        | Charge.__table__.c.payment_intent.in_(bindparam("intents", expanding=True))
    )
)

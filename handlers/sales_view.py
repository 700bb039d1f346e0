"""The complete sales view: every payment Stripe took, tied to the funnel purchase it belongs to.

ClickFunnels 1.0 shows only the first payment of a payment plan or subscription; this view shows them
all. It is derived on read from the stored facts (charges, invoices, invoice payments, refunds, funnel
purchases), so it is the same whatever order the events arrived in. `build_sales_view` is the pure
core; `load_sales_view` reads the database and calls it.
"""

from __future__ import annotations

import json
from collections import defaultdict, namedtuple
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Integer,
    String,
    TypeDecorator,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    null,
    select,
    union,
    union_all,
)
from sqlmodel import Session

from handlers.matching import FunnelRecord, Matches, Payment, match
from handlers.ranks import COUNTED_REFUND_STATUSES
from models import (
    Charge,
    CustomerStripeId,
    Dispute,
    FunnelPurchase,
    Invoice,
    InvoicePayment,
    Refund,
    Subscription,
)
from models.db import execute
from models.prepared import Prepared
from models.types import iso

# Sorts before every real time; aware, like every datetime the models hand back.
EARLIEST = datetime.min.replace(tzinfo=UTC)

# Whether one email is one customer across Connect accounts (MERGE_CUSTOMERS_ACROSS_ACCOUNTS); set at
# start-up by `worker.runtime.configure_domain`. Off: each account's customers are kept apart.
MERGE_CUSTOMERS_ACROSS_ACCOUNTS = False

# A dispute in these states still holds the money in question; `lost` took it; the rest returned it.
OPEN_DISPUTE_STATUSES = frozenset(
    {"warning_needs_response", "warning_under_review", "needs_response", "under_review"}
)
# Statuses of a row that took money (and count in the view's gross).
PAID_STATUSES = frozenset({"paid", "refunded", "partially_refunded", "disputed", "dispute_lost"})


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
    # paid | refunded | partially_refunded | failed | disputed | dispute_lost
    status: str = "paid"
    dispute_id: str | None = None
    dispute_status: str | None = None
    failure_message: str | None = None

    def as_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["paid_at"] = iso(self.paid_at)
        return row

    @property
    def took_money(self) -> bool:
        return self.status in PAID_STATUSES


class _Links:
    """Lookups from a charge to its invoice (and so its subscription), in both API shapes."""

    def __init__(self, invoices: Sequence[Invoice], invoice_payments: Sequence[InvoicePayment]) -> None:
        self.invoice_by_id = {i.id: i for i in invoices}
        self.invoice_by_charge = {i.charge_id: i for i in invoices if i.charge_id}
        self.invoice_by_intent = {i.payment_intent_id: i for i in invoices if i.payment_intent_id}
        self.invoice_id_by_intent = {
            p.payment_intent_id: p.invoice_id for p in invoice_payments if p.payment_intent_id
        }
        self.invoice_id_by_charge = {p.charge_id: p.invoice_id for p in invoice_payments if p.charge_id}

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


def refunded_amount(charge: Charge, refunds: Iterable[Refund]) -> int:
    """What was taken back: the counted refunds, or the charge's own total when it is the newer word.

    A charge's `amount_refunded` falls again when a refund fails, but only a later charge event says
    so; a refund that failed after the charge was last described overrules the charge's figure.
    """
    refunds = list(refunds)
    counted = sum(r.amount for r in refunds if r.status in COUNTED_REFUND_STATUSES)
    stated = charge.amount_refunded or 0
    if any(r.status not in COUNTED_REFUND_STATUSES and r.version >= charge.version for r in refunds):
        return counted
    return max(stated, counted)


def _kind(subscription_id: str | None, purchase: FunnelPurchase | None) -> tuple[str, int | None]:
    if purchase is not None and purchase.installments_total:
        return "installment", purchase.installments_total
    if subscription_id or (purchase is not None and purchase.is_subscription):
        return "subscription", None
    return "one_time", None


def _status(row: SaleRow, dispute: Dispute | None) -> str:
    if row.status == "failed":
        return "failed"
    if dispute is not None and dispute.status == "lost":
        return "dispute_lost"
    if dispute is not None and dispute.status in OPEN_DISPUTE_STATUSES:
        return "disputed"
    if row.refunded_amount >= row.amount > 0:
        return "refunded"
    if row.refunded_amount > 0:
        return "partially_refunded"
    return "paid"


def _record(purchase: FunnelPurchase) -> FunnelRecord:
    return FunnelRecord(
        purchase_id=purchase.purchase_id,
        product_key=purchase.product_key,
        product_name=purchase.product_name,
        payment_id=purchase.charge_id,
        subscription_id=purchase.subscription_id,
        purchased_at=purchase.purchased_at,
        origin=purchase.origin,
    )


def build_sales_view(
    charges: Sequence[Charge],
    invoices: Sequence[Invoice],
    invoice_payments: Sequence[InvoicePayment],
    refunds: Sequence[Refund],
    purchases: Sequence[FunnelPurchase],
    disputes: Sequence[Dispute] = (),
) -> list[SaleRow]:
    """One row per payment attempt, oldest first; installment k of N is the k-th invoice of its
    subscription (a failed attempt and the retry that paid the same invoice share k)."""
    links = _Links(invoices, invoice_payments)
    refunds_by_charge: dict[str, list[Refund]] = defaultdict(list)
    for refund in refunds:
        if refund.charge:
            refunds_by_charge[refund.charge].append(refund)
    dispute_of_charge = {
        d.charge: d for d in sorted(disputes, key=lambda d: (d.created or EARLIEST, d.id)) if d.charge
    }
    purchase_of_record = {(p.purchase_id, p.product_key): p for p in purchases}

    shown = [c for c in charges if c.status in ("succeeded", "failed")]
    invoice_of = {c.id: links.invoice_for(c) for c in shown}
    matches = match(
        [_record(p) for p in purchases],
        [
            Payment(
                charge_id=c.id,
                payment_intent_id=c.payment_intent,
                succeeded=c.status == "succeeded",
                created=c.created,
                subscription_id=invoice_of[c.id].subscription_id if invoice_of[c.id] else None,
                billing_reason=invoice_of[c.id].billing_reason if invoice_of[c.id] else None,
            )
            for c in shown
        ],
    )

    def purchase_of(sale) -> FunnelPurchase:
        return purchase_of_record[(sale.first.purchase_id, sale.first.product_key)]

    rows: list[SaleRow] = []
    for charge in shown:
        invoice = invoice_of[charge.id]
        subscription_id = invoice.subscription_id if invoice else None
        sale, funnel_recorded = matches.sale_of_charge.get(charge.id, (None, False))
        purchase = purchase_of(sale) if sale is not None else None
        subscription_id = subscription_id or (sale.subscription_id if funnel_recorded and sale else None)
        kind, total = _kind(subscription_id, purchase)
        failed = charge.status == "failed"
        row = SaleRow(
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
            refunded_amount=0 if failed else refunded_amount(charge, refunds_by_charge.get(charge.id, ())),
            funnel_purchase_id=purchase.purchase_id if purchase else None,
            stripe_customer_id=charge.customer,
            found_by=charge.found_by,
            status="failed" if failed else "paid",
            failure_message=charge.failure_message if failed else None,
        )
        dispute = None if failed else dispute_of_charge.get(charge.id)
        row.status = _status(row, dispute)
        if dispute is not None:
            row.dispute_id, row.dispute_status = dispute.id, dispute.status
        rows.append(row)

    rows.extend(_funnel_only_rows(matches, purchase_of))
    rows.extend(_failed_invoice_rows(invoices, rows, matches, purchase_of))
    _number_installments(rows, links.invoice_by_id)
    rows.sort(key=_in_time_order)
    return rows


def _funnel_only_rows(matches: Matches, purchase_of) -> list[SaleRow]:
    """Sales the funnel recorded whose Stripe payment we have not seen (yet): one row each."""
    rows = []
    for sale in matches.unpaid_sales():
        purchase = purchase_of(sale)
        kind, total = _kind(sale.subscription_id, purchase)
        payment = sale.payment_id or ""
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
                subscription_id=sale.subscription_id,
                invoice_id=None,
                refunded_amount=0,
                funnel_purchase_id=purchase.purchase_id,
                found_by="funnel",
            )
        )
    return rows


def _failed_invoice_rows(
    invoices: Sequence[Invoice], rows: list[SaleRow], matches: Matches, purchase_of
) -> list[SaleRow]:
    """A subscription invoice whose payment failed, known only from `invoice.payment_failed`: one
    failed row, until the failed charge itself (or the retry that paid it) is stored."""
    with_rows = {r.invoice_id for r in rows if r.invoice_id}
    owner = {s.subscription_id: s for s in matches.sales if s.subscription_id}
    failed = []
    for invoice in invoices:
        if invoice.id in with_rows or not invoice.subscription_id or invoice.status == "paid":
            continue
        if not invoice.attempt_count:
            continue
        sale = owner.get(invoice.subscription_id)
        purchase = purchase_of(sale) if sale is not None else None
        kind, total = _kind(invoice.subscription_id, purchase)
        failed.append(
            SaleRow(
                charge_id=None,
                payment_intent_id=invoice.payment_intent_id,
                customer_email=invoice.customer_email or (purchase.customer_email if purchase else None),
                product=(purchase.product_name if purchase else None) or invoice.product,
                amount=invoice.amount_due,
                currency=invoice.currency,
                paid_at=invoice.created,
                source="stripe",
                kind=kind,
                installment=None,
                installments_total=total,
                subscription_id=invoice.subscription_id,
                invoice_id=invoice.id,
                refunded_amount=0,
                funnel_purchase_id=purchase.purchase_id if purchase else None,
                stripe_customer_id=invoice.customer,
                found_by="webhook",
                status="failed",
            )
        )
    return failed


def _number_installments(rows: list[SaleRow], invoice_by_id: dict[str, Invoice]) -> None:
    """Number each subscription's payments by the invoice they paid (or tried to pay).

    The funnel's own row of a first payment whose charge has not arrived is payment 1; an invoice with
    `billing_reason: subscription_create` comes first; the others follow in time order.
    """
    slots: dict[str, dict[str, list[SaleRow]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.subscription_id:
            slot = row.invoice_id or f"row:{id(row)}"
            slots[row.subscription_id][slot].append(row)

    def order(item: tuple[str, list[SaleRow]]):
        slot, group = item
        invoice = invoice_by_id.get(slot)
        first = not invoice and any(r.source == "funnel" for r in group)
        created = invoice.billing_reason == "subscription_create" if invoice else False
        when = min((r.paid_at or EARLIEST for r in group), default=EARLIEST)
        if invoice and invoice.created:
            when = min(when, invoice.created)
        return (not (first or created), when, slot)

    for by_slot in slots.values():
        for number, (_, group) in enumerate(sorted(by_slot.items(), key=order), start=1):
            for row in group:
                row.installment = number


@dataclass
class SalesFacts:
    """The stored facts a sales view is built from (table rows, read-only)."""

    charges: Sequence[Any]
    invoices: Sequence[Any]
    invoice_payments: Sequence[Any]
    refunds: Sequence[Any]
    purchases: Sequence[Any]
    disputes: Sequence[Any] = ()
    subscriptions: Sequence[Any] = ()

    def view(self) -> list[SaleRow]:
        rows = []
        for part in self.by_account():
            rows += build_sales_view(
                part.charges,
                part.invoices,
                part.invoice_payments,
                part.refunds,
                part.purchases,
                part.disputes,
            )
        if len(rows) > 1:
            rows.sort(key=_in_time_order)
        return rows

    def by_account(self) -> list[SalesFacts]:
        """The facts of each Stripe account apart, unless customers are merged across accounts.

        Under Connect one email can be a customer of several sellers: buying the same course from two
        sellers is not a duplicate purchase, and one seller's plan is not another's. Funnel purchases
        carry no account: each goes with the account its payment or subscription is in (else the
        platform's, else the first), so it is matched, or shown as a funnel row, once.
        """
        accounts = sorted(
            {c.account for c in self.charges}
            | {i.account for i in self.invoices}
            | {s.account for s in self.subscriptions}
            | {d.account for d in self.disputes}
        )
        if MERGE_CUSTOMERS_ACROSS_ACCOUNTS or len(accounts) <= 1:
            return [self]
        home = "" if "" in accounts else accounts[0]
        account_of_payment = {c.id: c.account for c in self.charges}
        account_of_payment |= {c.payment_intent: c.account for c in self.charges if c.payment_intent}
        account_of_subscription = {i.subscription_id: i.account for i in self.invoices if i.subscription_id}
        account_of_subscription |= {s.id: s.account for s in self.subscriptions}
        account_of_invoice = {i.id: i.account for i in self.invoices}

        def purchase_account(p) -> str:
            return (
                account_of_payment.get(p.charge_id or "")
                or account_of_subscription.get(p.subscription_id or "")
                or home
            )

        return [
            SalesFacts(
                charges=[c for c in self.charges if c.account == account],
                invoices=[i for i in self.invoices if i.account == account],
                invoice_payments=[
                    p for p in self.invoice_payments if account_of_invoice.get(p.invoice_id, home) == account
                ],
                refunds=[r for r in self.refunds if r.account == account],
                purchases=[p for p in self.purchases if purchase_account(p) == account],
                disputes=[d for d in self.disputes if d.account == account],
                subscriptions=[s for s in self.subscriptions if s.account == account],
            )
            for account in accounts
        ]


def _in_time_order(row: SaleRow):
    return (row.paid_at is None, row.paid_at or EARLIEST, row.charge_id or row.payment_intent_id or "")


def load_sales_view(session: Session, customer_email: str | None = None) -> list[SaleRow]:
    """Read what the view needs (one customer's payments, or everything) and build it."""
    if customer_email is None:
        return load_all_facts(session).view()
    return load_customer_facts(session, customer_email).view()


def load_all_facts(session: Session) -> SalesFacts:
    return SalesFacts(*(execute(session, select(t)).all() for t in _TABLES))


def load_customer_facts(session: Session, customer_email: str) -> SalesFacts:
    """One customer's facts: everything tied to their email, their subscriptions and their payments.

    Runs for every event that touches a customer, so it reads plain rows through statements built once
    (the ORM would build an object per row and a statement per call). `refunds` also holds the refunds
    of payments only the funnel recorded, so a refund can get its note before its charge is stored.
    """
    # One statement (`_CUSTOMER_FACTS`): each step below reads what the steps before it found, as one
    # statement per step did (ten for a customer with subscriptions, six without), in SQL.
    (purchases, invoices, more, invoice_payments, charges, refunds, disputes, subscriptions, unseen) = (
        _CUSTOMER_FACTS.read(session, {"email": customer_email})
    )
    # Invoices by the customer's email, then the other invoices of their subscriptions.
    invoices = list({i.id: i for i in [*invoices, *more]}.values())
    # A subscription known only by its Stripe customer (no payment or purchase names it yet): its
    # invoices still say whether it was paid up when it ended.
    return SalesFacts(
        charges, [*invoices, *unseen], invoice_payments, refunds, purchases, disputes, subscriptions
    )


def _customer_facts(in_):
    """`load_customer_facts`' reads: which rows each part holds.

    purchases and invoices by the email; the invoices of the subscriptions those name; the invoice
    payments of all those invoices; the charges by the email, or paid by those invoices and payments
    (by id or payment intent), or recorded by the funnel purchases; the refunds and disputes of those
    charges and of the funnel's payments; the subscriptions named so far, or of the Stripe customers of
    those charges and invoices, or linked to the email; and the invoices of subscriptions found only by
    their Stripe customer (no invoice read so far names them).
    """
    email = bindparam("email")
    refunds, disputes, payments = Refund.__table__, Dispute.__table__, InvoicePayment.__table__
    purchases = select(_purchases).where(_purchases.c.customer_email == email).cte("p")
    by_email = select(_invoices).where(_invoices.c.customer_email == email).cte("ie")
    named = union(
        select(by_email.c.subscription_id).where(by_email.c.subscription_id.is_not(None)),
        select(purchases.c.subscription_id).where(purchases.c.subscription_id.is_not(None)),
    ).cte("named")
    more = (
        select(_invoices).where(_invoices.c.subscription_id.in_(select(named.c.subscription_id))).cte("more")
    )
    invoices = union_all(
        *(
            select(t.c.id, t.c.charge_id, t.c.payment_intent_id, t.c.customer, t.c.subscription_id)
            for t in (by_email, more)
        )
    ).cte("inv")
    paying = select(payments).where(payments.c.invoice_id.in_(select(invoices.c.id))).cte("pay")
    funnel = select(purchases.c.charge_id).where(purchases.c.charge_id.is_not(None))
    # Each way of finding a row is a SELECT of its own, united: an OR of lookups in other rows would be
    # a scan of the whole table (neither PostgreSQL nor SQLite uses an index for each of its terms).
    charges = union(
        select(_charges).where(_charges.c.customer_email == email),
        select(_charges).where(
            _charges.c.id.in_(union(select(paying.c.charge_id), select(invoices.c.charge_id), funnel))
        ),
        select(_charges).where(
            _charges.c.payment_intent.in_(
                union(select(paying.c.payment_intent_id), select(invoices.c.payment_intent_id), funnel)
            )
        ),
    ).cte("ch")
    paid = union(select(charges.c.id), funnel)
    linked = select(_links.c.stripe_customer_id).where(_links.c.email == email)
    subscriptions = union(
        select(_subscriptions).where(_subscriptions.c.id.in_(select(named.c.subscription_id))),
        select(_subscriptions).where(
            _subscriptions.c.customer.in_(
                union(select(charges.c.customer), select(invoices.c.customer), linked)
            )
        ),
    ).cte("sb")
    seen = select(invoices.c.subscription_id).where(invoices.c.subscription_id.is_not(None))
    return (
        select(*purchases.c),
        select(*by_email.c),
        select(*more.c),
        select(*paying.c),
        select(*charges.c),
        select(refunds).where(refunds.c.charge.in_(paid)),
        select(disputes).where(disputes.c.charge.in_(paid)),
        select(*subscriptions.c),
        select(_invoices).where(
            _invoices.c.subscription_id.in_(select(subscriptions.c.id).where(subscriptions.c.id.not_in(seen)))
        ),
    )


_TABLES = (
    Charge.__table__,
    Invoice.__table__,
    InvoicePayment.__table__,
    Refund.__table__,
    FunnelPurchase.__table__,
    Dispute.__table__,
    Subscription.__table__,
)


# How many customers one batch of `load_customers_facts` reads together: keeps every IN list well under
# SQLite's 32,766 bound parameters even for customers with long histories.
BATCH_EMAILS = 200


def load_customers_facts(session: Session, customer_emails: Iterable[str]) -> dict[str, SalesFacts]:
    """`load_customer_facts` of each email, read together: one statement per table for the whole batch
    (IN lists), each customer's part picked out in Python by the same conditions as the statements of
    `load_customer_facts`, so each email gets exactly the rows its own statements would return.

    The nightly run refreshes about a hundred customers a page; reading them one by one took ten
    statements each (round trips on PostgreSQL).
    """
    emails = sorted({e for e in customer_emails if e})
    loaded: dict[str, SalesFacts] = {}
    for start in range(0, len(emails), BATCH_EMAILS):
        loaded.update(_load_batch(session, emails[start : start + BATCH_EMAILS]))
    return loaded


def _grouped(rows: Iterable[Any], key: str) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = defaultdict(list)
    for row in rows:
        groups[getattr(row, key)].append(row)
    return groups


def _grouped_by_ids(session: Session, statement, ids: list[str], key: str) -> dict[Any, list[Any]]:
    """The rows `statement` reads for these ids, grouped by `key`; no statement is sent for no ids."""
    return _grouped(execute(session, statement(session), {"ids": ids}).all() if ids else [], key)


def _load_batch(session: Session, emails: list[str]) -> dict[str, SalesFacts]:
    """`load_customers_facts` for one batch; the steps are those of `load_customer_facts`."""
    if len(emails) == 1:
        return {emails[0]: load_customer_facts(session, emails[0])}
    purchases_of = _grouped(
        execute(session, _PURCHASES_BY_EMAILS(session), {"emails": emails}).all(), "customer_email"
    )
    invoices_of = _grouped(
        execute(session, _INVOICES_BY_EMAILS(session), {"emails": emails}).all(), "customer_email"
    )
    links_of = _grouped(execute(session, _LINKS_BY_EMAILS(session), {"emails": emails}).all(), "email")

    subscriptions_of: dict[str, set[str]] = {}
    for email in emails:
        subscriptions = {i.subscription_id for i in invoices_of.get(email, ()) if i.subscription_id}
        subscriptions |= {p.subscription_id for p in purchases_of.get(email, ()) if p.subscription_id}
        subscriptions_of[email] = subscriptions
    all_subscriptions = sorted(set().union(*subscriptions_of.values()))
    more_of = _grouped_by_ids(session, _INVOICES_OF_SUBSCRIPTIONS, all_subscriptions, "subscription_id")
    invoices_by_email: dict[str, list[Any]] = {}
    for email in emails:
        invoices = invoices_of.get(email, [])
        if subscriptions_of[email]:
            wanted = subscriptions_of[email]
            # In the order one statement over these subscriptions gives: by subscription, then as stored.
            more = [i for s in sorted(wanted) for i in more_of.get(s, ())]
            invoices = list({i.id: i for i in [*invoices, *more]}.values())
        invoices_by_email[email] = invoices

    all_invoice_ids = sorted({i.id for invoices in invoices_by_email.values() for i in invoices})
    payments_of = _grouped_by_ids(session, _PAYMENTS_OF_INVOICES, all_invoice_ids, "invoice_id")
    payments_by_email: dict[str, list[Any]] = {}
    ids_of: dict[str, set[str]] = {}
    intents_of: dict[str, set[str]] = {}
    funnel_of: dict[str, set[str]] = {}
    for email in emails:
        invoices = invoices_by_email[email]
        payments = [
            p for invoice_id in sorted({i.id for i in invoices}) for p in payments_of.get(invoice_id, ())
        ]
        payments_by_email[email] = payments
        intents = {p.payment_intent_id for p in payments if p.payment_intent_id}
        intents |= {i.payment_intent_id for i in invoices if i.payment_intent_id}
        charge_ids = {p.charge_id for p in payments if p.charge_id} | {
            i.charge_id for i in invoices if i.charge_id
        }
        funnel = {p.charge_id for p in purchases_of.get(email, ()) if p.charge_id}
        funnel_of[email] = funnel
        ids_of[email], intents_of[email] = charge_ids | funnel, intents | funnel

    # Each charge goes to every email whose statement would match it: by email, id or payment intent.
    emails_by_id: dict[str, list[str]] = defaultdict(list)
    emails_by_intent: dict[str, list[str]] = defaultdict(list)
    for email in emails:
        for charge_id in ids_of[email]:
            emails_by_id[charge_id].append(email)
        for intent in intents_of[email]:
            emails_by_intent[intent].append(email)
    charges = execute(
        session,
        _CHARGES_OF_CUSTOMERS(session),
        {"emails": emails, "ids": sorted(emails_by_id) or [""], "intents": sorted(emails_by_intent) or [""]},
    ).all()
    wanted_emails = set(emails)
    charges_by_email: dict[str, list[Any]] = defaultdict(list)
    for charge in charges:
        owners = set(emails_by_id.get(charge.id, ()))
        if charge.payment_intent:
            owners.update(emails_by_intent.get(charge.payment_intent, ()))
        if charge.customer_email in wanted_emails:
            owners.add(charge.customer_email)
        for email in owners:
            charges_by_email[email].append(charge)

    paid_of = {email: {c.id for c in charges_by_email[email]} | funnel_of[email] for email in emails}
    all_paid = sorted(set().union(*paid_of.values()))
    refunds_of = _grouped_by_ids(session, _REFUNDS_OF_CHARGES, all_paid, "charge")
    disputes_of = _grouped_by_ids(session, _DISPUTES_OF_CHARGES, all_paid, "charge")

    customers_of: dict[str, set[str]] = {}
    for email in emails:
        customers = {c.customer for c in charges_by_email[email] if c.customer}
        customers |= {i.customer for i in invoices_by_email[email] if i.customer}
        customers_of[email] = customers
    linked_of = {email: {link.stripe_customer_id for link in links_of.get(email, ())} for email in emails}
    all_customers = sorted(set().union(*customers_of.values(), *linked_of.values()))
    subscriptions = (
        execute(
            session,
            _SUBSCRIPTIONS_BY(session),
            {"ids": all_subscriptions or [""], "customers": all_customers or [""]},
        ).all()
        if all_subscriptions or all_customers
        else []
    )
    subscriptions_by_email: dict[str, list[Any]] = {}
    for email in emails:
        ids, customers, linked = subscriptions_of[email], customers_of[email], linked_of[email]
        subscriptions_by_email[email] = [
            s for s in subscriptions if s.id in ids or s.customer in customers or s.customer in linked
        ]

    # Subscriptions known only by their Stripe customer: their invoices, as in `load_customer_facts`.
    unseen_of: dict[str, list[str]] = {}
    for email in emails:
        seen = {i.subscription_id for i in invoices_by_email[email]}
        unseen_of[email] = sorted({s.id for s in subscriptions_by_email[email]} - seen)
    all_unseen = sorted(set().union(*unseen_of.values()))
    unseen_invoices = _grouped_by_ids(session, _INVOICES_OF_SUBSCRIPTIONS, all_unseen, "subscription_id")

    loaded = {}
    for email in emails:
        invoices = invoices_by_email[email]
        if unseen_of[email]:
            invoices = [*invoices, *(i for s in unseen_of[email] for i in unseen_invoices.get(s, ()))]
        paid = paid_of[email]
        loaded[email] = SalesFacts(
            charges_by_email[email],
            invoices,
            payments_by_email[email],
            [r for charge_id in sorted(paid) for r in refunds_of.get(charge_id, ())],
            purchases_of.get(email, []),
            [d for charge_id in sorted(paid) for d in disputes_of.get(charge_id, ())],
            subscriptions_by_email[email],
        )
    return loaded


class _JSONArray(TypeDecorator):
    """A list of keys sent to SQLite as one JSON text (read back by `json_each`)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return json.dumps(list(value))


def _in_list(column, name: str):
    """`column IN (SELECT value FROM json_each(:name))` (SQLite): the list sent as one JSON text, so the
    SQL is the same for every length. IN lists expanded per item made new SQL for each combination of
    lengths, and the statement cache (models/prepared.py) kept each one: memory grew with the run."""
    keys = func.json_each(bindparam(name, type_=_JSONArray())).table_valued("value")
    return column.in_(select(keys.c.value).scalar_subquery())


def _in_array(column, name: str):
    """`column = ANY(:name)`, the list sent as one array (PostgreSQL): the same SQL for every length,
    so the server parses and plans it once per connection (psycopg prepares it) instead of per page,
    and an index serves it however many items the list has."""
    return column == any_(cast(bindparam(name), ARRAY(column.type)))


class ByDialect:
    """A statement over lists of keys, built both ways: IN lists on SQLite, arrays on PostgreSQL."""

    def __init__(self, build) -> None:
        self.lists, self.arrays = Prepared(build(_in_list)), Prepared(build(_in_array))

    def __call__(self, session: Session) -> Prepared:
        return self.arrays if session.get_bind().dialect.name == "postgresql" else self.lists


_purchases, _invoices, _links = FunnelPurchase.__table__, Invoice.__table__, CustomerStripeId.__table__
_charges, _subscriptions = Charge.__table__, Subscription.__table__
_PURCHASES_BY_EMAILS = ByDialect(
    lambda in_: select(_purchases).where(in_(_purchases.c.customer_email, "emails"))
)
_INVOICES_BY_EMAILS = ByDialect(
    lambda in_: select(_invoices).where(in_(_invoices.c.customer_email, "emails"))
)
_LINKS_BY_EMAILS = ByDialect(
    lambda in_: select(_links.c.email, _links.c.stripe_customer_id).where(in_(_links.c.email, "emails"))
)
_INVOICES_OF_SUBSCRIPTIONS = ByDialect(
    lambda in_: select(_invoices).where(in_(_invoices.c.subscription_id, "ids"))
)
_PAYMENTS_OF_INVOICES = ByDialect(
    lambda in_: select(InvoicePayment.__table__).where(in_(InvoicePayment.__table__.c.invoice_id, "ids"))
)
_REFUNDS_OF_CHARGES = ByDialect(
    lambda in_: select(Refund.__table__).where(in_(Refund.__table__.c.charge, "ids"))
)
_DISPUTES_OF_CHARGES = ByDialect(
    lambda in_: select(Dispute.__table__).where(in_(Dispute.__table__.c.charge, "ids"))
)
_SUBSCRIPTIONS_BY = ByDialect(
    lambda in_: select(_subscriptions).where(
        in_(_subscriptions.c.id, "ids") | in_(_subscriptions.c.customer, "customers")
    )
)
_CHARGES_OF_CUSTOMERS = ByDialect(
    lambda in_: select(_charges).where(
        in_(_charges.c.customer_email, "emails")
        | in_(_charges.c.id, "ids")
        | in_(_charges.c.payment_intent, "intents")
    )
)


class TablesTogether:
    """Rows of several tables read by one statement: a UNION ALL of one SELECT per part.

    Each row is (which part, then every table's columns in turn, the other tables' null): typed
    nulls, so that every column is read as its table's type gives it (and PostgreSQL can match the
    branches). `read` splits the rows back into each part's rows, as `select(table)` gives them. One
    statement costs the worker less than one per table, even pipelined (each statement is sent,
    waited on and read on its own), and the server runs them in one round trip.
    """

    def __init__(self, parts: Sequence[Any], build) -> None:
        """`parts`: the table each part reads (one may be read by several parts); `build(in_)`: one
        SELECT of that table's columns per part, in the same order (see ByDialect)."""
        self.parts = list(parts)
        self.tables = list(dict.fromkeys(self.parts))  # each table's columns once per row
        self.row_types = [_row_type(table) for table in self.parts]
        offsets, start = {}, 1
        for table in self.tables:
            offsets[table] = slice(start, start + len(table.columns))
            start += len(table.columns)
        self.slices = [offsets[table] for table in self.parts]
        self.statement = ByDialect(lambda in_: self._union(build(in_)))

    def _union(self, selects: Sequence[Any]):
        branches = []
        for k, (table, part) in enumerate(zip(self.parts, selects, strict=True)):
            columns = [literal_column(str(k), Integer).label("which")]
            for j, other in enumerate(self.tables):
                if other is table:
                    columns += [c.label(f"t{j}_{c.name}") for c in part.selected_columns]
                else:
                    columns += [cast(null(), c.type).label(f"t{j}_{c.name}") for c in other.columns]
            branches.append(part.with_only_columns(*columns))
        return union_all(*branches)

    def read(self, session: Session, params: dict[str, Any]) -> list[list[Any]]:
        found: list[list[Any]] = [[] for _ in self.parts]
        for row in execute(session, self.statement(session), params):
            which = row[0]
            found[which].append(self.row_types[which]._make(row[self.slices[which]]))
        return found


_row_types: dict[str, Any] = {}


def _row_type(table) -> Any:
    """The row type of `select(table)` rows as models.prepared gives them (fields named as columns)."""
    if table.name not in _row_types:
        _row_types[table.name] = namedtuple("Row", [c.key for c in table.columns])
    return _row_types[table.name]


_CUSTOMER_FACTS = TablesTogether(
    (
        _purchases,
        _invoices,
        _invoices,
        InvoicePayment.__table__,
        _charges,
        Refund.__table__,
        Dispute.__table__,
        _subscriptions,
        _invoices,
    ),
    _customer_facts,
)

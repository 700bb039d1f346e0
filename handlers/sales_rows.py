"""Keeping `sales_rows` (models/sales_rows.py) equal to the sales view built from the stored facts.

Every path that changes facts (the webhook handlers, the nightly run, a sales import) ends in
`handlers.customers.refresh_customers` for the customers it touched, which builds their part of the
view anyway; `store_customer_rows` writes those rows here, replacing what the table held for them.

Three things keep the copy exact rather than merely close:

- A row belongs to the email the view gives it, which is not always the email refreshed: a charge paid
  with one email for a funnel purchase made with another appears in both customers' facts, complete
  only where the purchase is. So the facts of every customer refreshed together are joined, and any
  other email found on the rows is loaded too, before the view is built once over all of them.
- A row can change hands: a charge stored before anyone knew whose it was, a funnel sale whose payment
  arrived, a failed invoice whose failed charge arrived. The rows written replace, besides the
  customers' own, every row of the same payment (by charge id; rows without an email also by payment
  intent, funnel purchase and invoice).
- Some rows have no email at all: a charge whose payment carries none and whose Stripe customer is
  unknown or deleted, a funnel purchase without one, a failed invoice of such a customer. No customer
  refresh reaches them, so a refresh with nobody to refresh (the event concerned nobody known) rebuilds
  the rows without an email from the facts without one (`store_unowned_rows`); so do a dispute on such
  a charge (handlers/disputes.py) and a page of the nightly run that stored one (handlers/reconcile.py).
  `python -m worker sales rebuild` (`rebuild_sales_rows`) rebuilds everything.

`plan_rows` (the Plans page) is kept the same way, from the same built views.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Integer,
    bindparam,
    delete,
    exists,
    insert,
    literal,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlmodel import Session

from handlers.plans import PlanRow, build_plans
from handlers.sales_view import (
    EARLIEST,
    ByDialect,
    SaleRow,
    SalesFacts,
    TablesTogether,
    load_all_facts,
    load_customer_facts,
)
from models import (
    Charge,
    Dispute,
    FunnelPurchase,
    Invoice,
    InvoicePayment,
    PlanRowRecord,
    Refund,
    SalesRowRecord,
    Subscription,
    advisory_lock,
)
from models.db import execute
from models.prepared import Prepared

# The SaleRow fields, in the view's order: every one is a column of sales_rows.
SALE_FIELDS = tuple(SaleRow.__dataclass_fields__)
# The PlanRow fields: every one is a column of plan_rows (kept beside sales_rows, from the same views).
PLAN_FIELDS = tuple(PlanRow.__dataclass_fields__)
# How many times a refresh follows emails it finds on rows to customers it had not loaded.
MAX_ROUNDS = 4
INSERT_BATCH = 5_000

_rows = SalesRowRecord.__table__
_plans = PlanRowRecord.__table__


def position(row: SaleRow) -> str:
    """The view's time order (`handlers.sales_view._in_time_order`) as one sortable string."""
    moment = row.paid_at or EARLIEST
    stamp = moment.strftime("%Y%m%d%H%M%S%f").rjust(20, "0")
    return f"{1 if row.paid_at is None else 0}{stamp}|{row.charge_id or row.payment_intent_id or ''}"


# A PostgreSQL b-tree entry holds at most about 2.7 kB, and the product column leads a covering index:
# 300 characters (at most 1.2 kB in UTF-8) keep any name insertable, and are more than a page shows.
SHOWN_PRODUCT_CHARACTERS = 300


def shown_product(product: str | None) -> str | None:
    if product is None or len(product) <= SHOWN_PRODUCT_CHARACTERS:
        return product
    return product[: SHOWN_PRODUCT_CHARACTERS - 1] + "…"


def _accounts(facts: SalesFacts) -> tuple[dict[str, str], dict[str, str], str]:
    """Where each row's account comes from: its charge, else its invoice, else the part's one account."""
    by_charge = {c.id: c.account for c in facts.charges}
    by_invoice = {i.id: i.account for i in facts.invoices}
    accounts = (
        set(by_charge.values())
        | set(by_invoice.values())
        | {s.account for s in facts.subscriptions}
        | {d.account for d in facts.disputes}
    )
    return by_charge, by_invoice, (accounts.pop() if len(accounts) == 1 else "")


def values_of(parts: Iterable[tuple[SalesFacts, Sequence[SaleRow]]]) -> list[dict[str, Any]]:
    """The table rows of built views: each account part's facts with the rows built from them."""
    values = []
    for facts, rows in parts:
        by_charge, by_invoice, default = _accounts(facts)
        for row in rows:
            record = {name: getattr(row, name) for name in SALE_FIELDS}
            record["product"] = shown_product(row.product)
            if row.charge_id in by_charge:
                account = by_charge[row.charge_id]
            elif row.invoice_id in by_invoice:
                account = by_invoice[row.invoice_id]
            else:
                account = default
            record.update(account=account, position=position(row))
            values.append(record)
    return values


def plan_values_of(
    parts: Sequence[tuple[SalesFacts, Sequence[SaleRow]]], plans: Sequence[list[PlanRow]] | None = None
) -> list[dict[str, Any]]:
    """The plan_rows rows of built views: `build_plans` of each account part (or `plans`, what it gave
    for each part, when the caller has them already)."""
    values = []
    for n, (facts, rows) in enumerate(parts):
        _, by_invoice, default = _accounts(facts)
        account_of = {s.id: s.account for s in facts.subscriptions}
        for invoice in facts.invoices:
            if invoice.subscription_id:
                account_of.setdefault(invoice.subscription_id, invoice.account)
        for plan in plans[n] if plans is not None else build_plans(facts, rows):
            record = {name: getattr(plan, name) for name in PLAN_FIELDS}
            record.update(
                product=shown_product(plan.product), account=account_of.get(plan.subscription_id, default)
            )
            values.append(record)
    return values


def _built(facts: SalesFacts) -> list[tuple[SalesFacts, list[SaleRow]]]:
    return [(part, part.view()) for part in facts.by_account()]


def _insert(session: Session, values: list[dict[str, Any]]) -> None:
    for start in range(0, len(values), INSERT_BATCH):
        # A list of parameter sets: one executemany (models.db.execute).
        execute(session, _INSERT, values[start : start + INSERT_BATCH])


# --- one refresh -------------------------------------------------------------------------------------


def store_customer_rows(
    session: Session,
    loaded: Mapping[str, SalesFacts],
    built: Mapping[str, list[tuple[SalesFacts, list[SaleRow]]]] | None = None,
    plans: Mapping[str, list[list[PlanRow]]] | None = None,
) -> None:
    """Replace the rows of the customers refreshed together with the view of their joined facts.

    `loaded`: each refreshed email's facts (`load_customer_facts`), `built`: the views already built
    from them, by account part, and `plans`: `build_plans` of each of those parts (both reused when one
    customer alone is refreshed, the usual case).
    """
    if not loaded:
        store_unowned_rows(session)
        return
    facts_by_email = dict(loaded)
    part_plans = None
    if len(facts_by_email) == 1 and built:
        (email,) = facts_by_email
        parts = built[email]
        part_plans = plans.get(email) if plans else None
    else:
        parts = _built(_joined(facts_by_email.values()))
    for _ in range(MAX_ROUNDS):
        found = {r.customer_email for _, rows in parts for r in rows if r.customer_email}
        missing = sorted(found - set(facts_by_email))
        if not missing:
            break
        for email in missing:
            # Taken late (not in sorted order with the others): PostgreSQL breaks a rare deadlock by
            # failing one event, which is retried.
            advisory_lock(session, f"customer:{email}")
            facts_by_email[email] = load_customer_facts(session, email)
        parts = _built(_joined(facts_by_email.values()))
        part_plans = None
    _replace(session, sorted(facts_by_email), values_of(parts), plan_values_of(parts, part_plans))


def _joined(all_facts: Iterable[SalesFacts]) -> SalesFacts:
    """The facts of several customers as one set: each stored row once."""
    all_facts = list(all_facts)
    if len(all_facts) == 1:
        return all_facts[0]

    def union(name: str, key) -> list:
        rows: dict[Any, Any] = {}
        for facts in all_facts:
            for row in getattr(facts, name):
                rows.setdefault(key(row), row)
        return list(rows.values())

    by_id = lambda row: row.id  # noqa: E731
    return SalesFacts(
        charges=union("charges", by_id),
        invoices=union("invoices", by_id),
        invoice_payments=union("invoice_payments", by_id),
        refunds=union("refunds", by_id),
        purchases=union("purchases", lambda p: (p.purchase_id, p.product_key)),
        disputes=union("disputes", by_id),
        subscriptions=union("subscriptions", by_id),
    )


def _replace(
    session: Session, emails: list[str], values: list[dict[str, Any]], plans: list[dict[str, Any]]
) -> None:
    """Make the customers' rows, and every other row of the same payments, exactly `values`; their
    plans, and every other plan of the same subscriptions, exactly `plans`.

    Which rows are replaced: the customers' own, any row of the same charges, and rows without an email
    of the same payment intents, funnel purchases or (without a charge) invoices. Of those, a row equal
    in every column to one of `values` stays as it is; the others are deleted and the rest of `values`
    inserted. A refresh mostly rebuilds rows that did not change (a customer's earlier payments, each
    time a page adds one), and rewriting them cost more than reading them: deleting and inserting
    touches every index of the table. Rows that share a position are rewritten together, in the
    view's order, so `ORDER BY position, id` keeps giving the view's order. Plans likewise, without
    the order: most customers' plans do not change with an event, and most customers have none.

    Both tables' stored rows are read in one statement (`_STORED`), and nothing is written when
    nothing changed: for the usual event (a payment or refund of a customer without a plan) that is
    one read and one or two writes.
    """
    keys = {
        "emails": emails,
        "ids": sorted({v["charge_id"] for v in values if v["charge_id"]}),
        "intents": sorted({v["payment_intent_id"] for v in values if v["payment_intent_id"]}),
        "purchases": sorted({v["funnel_purchase_id"] for v in values if v["funnel_purchase_id"]}),
        "invoices": sorted({v["invoice_id"] for v in values if v["invoice_id"]}),
        "subscriptions": sorted({v["subscription_id"] for v in plans}),
    }
    if not any(keys.values()):
        return
    stored: dict[tuple, list[int]] = {}
    stored_plans: dict[tuple, list[int]] = {}
    for row in execute(session, _STORED(session), keys):
        if row[0]:
            stored_plans.setdefault(row[_PLAN_SLICE], []).append(row[1])
        else:
            stored.setdefault(row[_SALE_SLICE], []).append(row[1])
    positions: dict[str, int] = {}
    for value in values:
        positions[value["position"]] = positions.get(value["position"], 0) + 1
    new = []
    for value in values:
        kept = stored.get(tuple(value[name] for name in _COMPARED))
        if kept and positions[value["position"]] == 1:
            kept.pop()
        else:
            new.append(value)
    new_plans = []
    for value in plans:
        kept = stored_plans.get(tuple(value[name] for name in _PLAN_COMPARED))
        if kept:
            kept.pop()
        else:
            new_plans.append(value)
    gone = sorted(row_id for ids in stored.values() for row_id in ids)
    for start in range(0, len(gone), INSERT_BATCH):
        execute(session, _DELETE_BY_ID(session), {"ids": gone[start : start + INSERT_BATCH]})
    if new:
        _insert(session, new)
    gone_plans = sorted(row_id for ids in stored_plans.values() for row_id in ids)
    for start in range(0, len(gone_plans), INSERT_BATCH):
        execute(session, _DELETE_PLANS_BY_ID(session), {"ids": gone_plans[start : start + INSERT_BATCH]})
    for start in range(0, len(new_plans), INSERT_BATCH):
        execute(session, _INSERT_PLANS, new_plans[start : start + INSERT_BATCH])


# --- rows nobody's refresh reaches ---------------------------------------------------------------------


def store_unowned_rows(session: Session) -> None:
    """Rebuild the rows without an email, from the facts without one (and what they link to)."""
    advisory_lock(session, "sales_rows:unowned")  # two at once would each insert the rows
    # Read with the facts' first statements (one round trip when pipelined): with no such facts and no
    # such rows, as for most events that concern nobody known yet, there is nothing to write.
    stored_read = _UNOWNED_STORED.start(session)
    facts = load_unowned_facts(session)
    stored_rows, stored_plans = stored_read.rows().first()
    built = _built(facts)
    values = [v for v in values_of(built) if v["customer_email"] is None]
    if values or stored_rows:
        execute(session, _DELETE_UNOWNED, {})
    if values:
        _insert(session, values)
    plans = [v for v in plan_values_of(built) if v["customer_email"] is None]
    if plans or stored_plans:
        execute(session, _DELETE_UNOWNED_PLANS, {})
    if plans:
        execute(session, _INSERT_PLANS, plans)


def load_unowned_facts(session: Session) -> SalesFacts:
    """Charges, invoices and funnel purchases without an email, with every fact their rows depend on.

    Few in a funnel seller's store (the funnel and Stripe's customers carry emails), so read whole.
    Funnel purchases are read by payment and subscription too: one with an email gives the row its
    email, and that row is then another customer's, left to their refresh.
    """
    unowned = _UNOWNED.read(session, {})
    charges = {c.id: c for c in unowned[0]}
    invoices = {i.id: i for i in unowned[1]}
    purchases = {(p.purchase_id, p.product_key): p for p in unowned[2]}
    if not (charges or invoices or purchases):
        return SalesFacts([], [], [], [], [])
    subscriptions = {i.subscription_id for i in invoices.values() if i.subscription_id}
    subscriptions |= {p.subscription_id for p in purchases.values() if p.subscription_id}
    intents = {c.payment_intent for c in charges.values() if c.payment_intent}
    charge_links = sorted(set(charges) | intents)
    # Invoices the charges paid, and every invoice of the subscriptions involved.
    payments = _in(session, _PAYMENTS_OF_CHARGES, {"ids": sorted(charges), "intents": sorted(intents)})
    invoice_ids = {p.invoice_id for p in payments} | {c.invoice_id for c in charges.values() if c.invoice_id}
    for invoice in _in(
        session,
        _INVOICES_LINKED,
        {"ids": sorted(invoice_ids), "charges": sorted(charges), "intents": sorted(intents)},
    ):
        invoices.setdefault(invoice.id, invoice)
    subscriptions |= {i.subscription_id for i in invoices.values() if i.subscription_id}
    for invoice in _in(session, _INVOICES_BY_SUBSCRIPTION, {"ids": sorted(subscriptions)}):
        invoices.setdefault(invoice.id, invoice)
    invoice_payments = _in(session, _PAYMENTS_BY_INVOICE, {"ids": sorted(invoices)})
    # The charges of those invoices, and the funnel purchases of every payment and subscription.
    paying_ids = {p.charge_id for p in invoice_payments if p.charge_id}
    paying_ids |= {i.charge_id for i in invoices.values() if i.charge_id}
    paying_intents = {p.payment_intent_id for p in invoice_payments if p.payment_intent_id}
    paying_intents |= {i.payment_intent_id for i in invoices.values() if i.payment_intent_id}
    for purchase in _in(
        session, _PURCHASES_LINKED, {"payments": charge_links, "subscriptions": sorted(subscriptions)}
    ):
        purchases.setdefault((purchase.purchase_id, purchase.product_key), purchase)
    funnel_payments = {p.charge_id for p in purchases.values() if p.charge_id}
    for charge in _in(
        session,
        _CHARGES_LINKED,
        {"ids": sorted(paying_ids | funnel_payments), "intents": sorted(paying_intents | funnel_payments)},
    ):
        charges.setdefault(charge.id, charge)
    paid = sorted(set(charges) | funnel_payments)
    refunds = _in(session, _REFUNDS_BY_CHARGE, {"ids": paid})
    disputes = _in(session, _DISPUTES_BY_CHARGE, {"ids": paid})
    customers = sorted(
        {c.customer for c in charges.values() if c.customer}
        | {i.customer for i in invoices.values() if i.customer}
    )
    found_subscriptions = _in(
        session, _SUBSCRIPTIONS_OF, {"ids": sorted(subscriptions), "customers": customers}
    )
    return SalesFacts(
        list(charges.values()),
        list(invoices.values()),
        invoice_payments,
        refunds,
        list(purchases.values()),
        disputes,
        found_subscriptions,
    )


def _in(session: Session, statement: Prepared, lists: dict[str, list]) -> list:
    """Run a statement of IN lists; an empty list matches nothing (and is sent as one that cannot)."""
    if not any(lists.values()):
        return []
    return execute(session, statement, {name: ids or [""] for name, ids in lists.items()}).all()


# --- the whole table -------------------------------------------------------------------------------------


def rebuild_sales_rows(session: Session, built: list[tuple[SalesFacts, list[SaleRow]]] | None = None) -> int:
    """Rebuild the whole table from every stored fact (`load_all_facts(session).view()`); return the
    number of rows. Runs in the caller's transaction: readers see the old rows until it commits.

    `built`: every account's facts with the rows built from them, when the caller has them already
    (the benchmark times building them). Building is the slow part (seconds at 100,000 payments).
    `plan_rows` is rebuilt from the same views.
    """
    built = built if built is not None else _built(load_all_facts(session))
    values = values_of(built)
    execute(session, delete(_rows), None)
    _insert(session, values)
    plans = plan_values_of(built)
    execute(session, delete(_plans), None)
    for start in range(0, len(plans), INSERT_BATCH):
        execute(session, _INSERT_PLANS, plans[start : start + INSERT_BATCH])
    return len(values)


# --- statements, built once ------------------------------------------------------------------------------


def _ids(name: str):
    return bindparam(name, expanding=True)


_INSERT = Prepared(insert(_rows))
# Every column but the id, in the order `_STORED` returns them (after which table, and the id).
_COMPARED = (*SALE_FIELDS, "account", "position")
_PLAN_COMPARED = (*PLAN_FIELDS, "account")
_SALE_SLICE = slice(2, 2 + len(_COMPARED))
_PLAN_SLICE = slice(2 + len(_COMPARED), 2 + len(_COMPARED) + len(_PLAN_COMPARED))


def _stored(in_):
    """The stored sales rows and plans a refresh replaces (see `_replace`), in one statement: each row
    is (0 for a sales row or 1 for a plan, its id, the sales row's columns, the plan's columns), the
    other table's columns null (typed, so the plans' datetimes are read as the table's type gives)."""

    def absent(table, names):
        return [type_coerce(null(), table.c[name].type).label(f"{table.name}_{name}") for name in names]

    sales = select(
        literal(0, Integer).label("is_plan"),
        _rows.c.id,
        *(_rows.c[name].label(f"sales_rows_{name}") for name in _COMPARED),
        *absent(_plans, _PLAN_COMPARED),
    ).where(
        in_(_rows.c.customer_email, "emails")
        | in_(_rows.c.charge_id, "ids")
        | (
            _rows.c.customer_email.is_(None)
            & (
                in_(_rows.c.payment_intent_id, "intents")
                | in_(_rows.c.funnel_purchase_id, "purchases")
                | (_rows.c.charge_id.is_(None) & in_(_rows.c.invoice_id, "invoices"))
            )
        )
    )
    plans = select(
        literal(1, Integer),
        _plans.c.id,
        *(null() for _ in _COMPARED),
        *(_plans.c[name] for name in _PLAN_COMPARED),
    ).where(in_(_plans.c.customer_email, "emails") | in_(_plans.c.subscription_id, "subscriptions"))
    return union_all(sales, plans)


_STORED = ByDialect(_stored)
_DELETE_BY_ID = ByDialect(lambda in_: delete(_rows).where(in_(_rows.c.id, "ids")))
_DELETE_PLANS_BY_ID = ByDialect(lambda in_: delete(_plans).where(in_(_plans.c.id, "ids")))
_DELETE_UNOWNED = Prepared(delete(_rows).where(_rows.c.customer_email.is_(None)))

_INSERT_PLANS = Prepared(insert(_plans))
_DELETE_UNOWNED_PLANS = Prepared(delete(_plans).where(_plans.c.customer_email.is_(None)))
_UNOWNED_STORED = Prepared(
    select(
        exists().where(_rows.c.customer_email.is_(None)).label("rows"),
        exists().where(_plans.c.customer_email.is_(None)).label("plans"),
    )
)

_charges, _invoices = Charge.__table__, Invoice.__table__
_payments, _purchases = InvoicePayment.__table__, FunnelPurchase.__table__
# Charges, invoices and funnel purchases without an email, in one statement.
_UNOWNED = TablesTogether(
    (_charges, _invoices, _purchases),
    lambda in_: (
        select(_charges).where(
            _charges.c.customer_email.is_(None), _charges.c.status.in_(("succeeded", "failed"))
        ),
        select(_invoices).where(_invoices.c.customer_email.is_(None)),
        select(_purchases).where(_purchases.c.customer_email.is_(None)),
    ),
)
_PAYMENTS_OF_CHARGES = Prepared(
    select(_payments).where(
        _payments.c.charge_id.in_(_ids("ids")) | _payments.c.payment_intent_id.in_(_ids("intents"))
    )
)
_INVOICES_LINKED = Prepared(
    select(_invoices).where(
        _invoices.c.id.in_(_ids("ids"))
        | _invoices.c.charge_id.in_(_ids("charges"))
        | _invoices.c.payment_intent_id.in_(_ids("intents"))
    )
)
_INVOICES_BY_SUBSCRIPTION = Prepared(select(_invoices).where(_invoices.c.subscription_id.in_(_ids("ids"))))
_PAYMENTS_BY_INVOICE = Prepared(select(_payments).where(_payments.c.invoice_id.in_(_ids("ids"))))
_PURCHASES_LINKED = Prepared(
    select(_purchases).where(
        _purchases.c.charge_id.in_(_ids("payments")) | _purchases.c.subscription_id.in_(_ids("subscriptions"))
    )
)
_CHARGES_LINKED = Prepared(
    select(_charges).where(_charges.c.id.in_(_ids("ids")) | _charges.c.payment_intent.in_(_ids("intents")))
)
_REFUNDS_BY_CHARGE = Prepared(select(Refund.__table__).where(Refund.__table__.c.charge.in_(_ids("ids"))))
_DISPUTES_BY_CHARGE = Prepared(select(Dispute.__table__).where(Dispute.__table__.c.charge.in_(_ids("ids"))))
_SUBSCRIPTIONS_OF = Prepared(
    select(Subscription.__table__).where(
        Subscription.__table__.c.id.in_(_ids("ids"))
        | Subscription.__table__.c.customer.in_(_ids("customers"))
    )
)

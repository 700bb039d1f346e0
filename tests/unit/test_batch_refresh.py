"""Refreshing customers together (the nightly run's pages) gives exactly what one at a time gives.

`load_customers_facts` reads many customers' facts with one statement per table and picks each one's
part in Python; `refresh_customers` writes their links, notes and plan ends in batches. Both are
checked against the one-customer path on generated seller months (stripe_standin/months.py: funnel
purchases under other emails, plans, subscriptions, refunds, failed installments, disputes), where
customers share payments and subscriptions.
"""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import delete, select, union

import handlers.sales_view as sales_view
from handlers.customers import refresh_customers
from handlers.sales_view import load_customer_facts, load_customers_facts
from models import (
    Alert,
    Charge,
    Customer,
    CustomerNote,
    CustomerStripeId,
    FunnelPurchase,
    Invoice,
    PlanRowRecord,
    SalesRowRecord,
    SubscriptionEnd,
)
from tests.unit.test_months_property import run_month, standin  # noqa: F401  (standin: a fixture)
from tests.unit.test_sales_rows import assert_materialized

SEEDS = (7, 42, 213324)
FACT_TABLES = ("charges", "invoices", "invoice_payments", "refunds", "purchases", "disputes", "subscriptions")
# Bookkeeping a refresh stamps with the time it ran: not part of what it decides.
STAMPS = {"id", "created_at", "updated_at", "first_seen_at", "claimed_at"}


def every_email(session) -> list[str]:
    query = union(
        select(Charge.__table__.c.customer_email),
        select(Invoice.__table__.c.customer_email),
        select(FunnelPurchase.__table__.c.customer_email),
        select(CustomerStripeId.__table__.c.email),
    )
    return sorted({email for (email,) in session.connection().execute(query) if email})


def as_multisets(facts) -> dict[str, Counter]:
    return {name: Counter(tuple(row) for row in getattr(facts, name)) for name in FACT_TABLES}


@pytest.mark.parametrize("seed", SEEDS)
def test_customers_read_together_get_exactly_their_own_facts(db, standin, seed, monkeypatch):  # noqa: F811
    run_month(db, standin, seed)
    with db.session() as session:
        emails = every_email(session)
        assert len(emails) > 3
        one_by_one = {email: as_multisets(load_customer_facts(session, email)) for email in emails}
        together = load_customers_facts(session, [*emails, *emails[:2], "", "nobody@example.com"])
        monkeypatch.setattr(sales_view, "BATCH_EMAILS", 3)  # several batches, and a batch of one
        in_small_batches = load_customers_facts(session, emails)
        nobody = load_customers_facts(session, ["nobody@example.com", "nobody.else@example.com"])
    assert set(together) == {*emails, "nobody@example.com"}
    for email in emails:
        assert as_multisets(together[email]) == one_by_one[email], email
        assert as_multisets(in_small_batches[email]) == one_by_one[email], email
    assert all(
        not any(counts.values()) for facts in nobody.values() for counts in as_multisets(facts).values()
    )


def written(session) -> dict[str, Counter]:
    """What refreshes wrote (links, notes, alerts, plan ends), without ids and times."""
    out = {}
    for model in (Customer, CustomerStripeId, CustomerNote, Alert, SubscriptionEnd):
        table = model.__table__
        columns = [c for c in table.columns if c.name not in STAMPS]
        out[table.name] = Counter(tuple(row) for row in session.connection().execute(select(*columns)))
    return out


def forget_refreshes(session) -> None:
    for model in (
        Alert,
        CustomerNote,
        SubscriptionEnd,
        CustomerStripeId,
        Customer,
        SalesRowRecord,
        PlanRowRecord,
    ):
        session.connection().execute(delete(model.__table__))


@pytest.mark.parametrize("seed", SEEDS)
def test_refreshing_customers_together_writes_what_refreshing_them_one_by_one_writes(
    db,
    standin,  # noqa: F811
    seed,
):
    run_month(db, standin, seed)
    with db.session() as session:
        emails = every_email(session)
        forget_refreshes(session)
    sent_alone = []
    for email in emails:  # in sorted order, each in its own transaction, as events would
        with db.session() as session:
            sent_alone += refresh_customers(session, [email])
    with db.session() as session:
        alone = written(session)
        alerts_alone = {row.id: row.key for row in session.connection().execute(select(Alert.__table__))}
        forget_refreshes(session)
    with db.session() as session:
        sent_together = refresh_customers(session, reversed(emails))
    assert_materialized(db)  # sales_rows: exactly the view
    with db.session() as session:
        together = written(session)
        alerts_together = {row.id: row.key for row in session.connection().execute(select(Alert.__table__))}
    assert together == alone
    assert sorted(alerts_together[i] for i in sent_together) == sorted(alerts_alone[i] for i in sent_alone)


def test_a_refresh_of_several_customers_twice_changes_nothing_and_sends_nothing(db, standin):  # noqa: F811
    run_month(db, standin, SEEDS[1])
    with db.session() as session:
        emails = every_email(session)
        refresh_customers(session, emails)
        before = written(session)
    rows = assert_materialized(db)
    with db.session() as session:
        assert refresh_customers(session, emails) == []
        assert written(session) == before
    assert assert_materialized(db) == rows  # the same rows, ids included: nothing rewritten

"""The dashboard's materialized sales rows (handlers/sales_rows.py) equal the sales view built in Python,
after events processed by the real handlers, in any order, and for rows that change hands or have no
customer at all."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from sqlalchemy import delete, func, select

from handlers.sales_rows import SALE_FIELDS, rebuild_sales_rows
from handlers.sales_view import load_all_facts
from models import SalesRowRecord
from tests.sales_scenarios import BASIL, PRE_BASIL, T0, funnel_purchase, subscription_payment_events
from tests.stripe_fixtures import charge, event, refund
from tests.unit.test_sales_view import deliver, deliver_funnel
from worker.jobs import processing
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict


def deliver_connected(db, document) -> str:
    """A Connect account's event, stored and processed as the receiver and the actor do."""
    store_event(db, event_from_dict(document), json.dumps(document))
    return processing.process_event(db, document["id"], document["account"], max_attempts=3).status


def view_rows(session) -> Counter:
    """Every row of the Python-built view, as a tuple of all its fields (a multiset)."""
    return Counter(
        tuple(getattr(row, name) for name in SALE_FIELDS) for row in load_all_facts(session).view()
    )


def stored_rows(session) -> Counter:
    """Every row of sales_rows, as the same tuples."""
    table = SalesRowRecord.__table__
    return Counter(
        tuple(row) for row in session.connection().execute(select(*(table.c[n] for n in SALE_FIELDS)))
    )


def assert_materialized(db) -> list[dict]:
    """sales_rows holds exactly the view; returns the stored rows as dicts, oldest first."""
    with db.session() as session:
        built, stored = view_rows(session), stored_rows(session)
        table = SalesRowRecord.__table__
        ordered = session.connection().execute(select(table).order_by(table.c.position, table.c.id)).all()
    assert stored == built
    return [dict(row._mapping) for row in ordered]


def test_an_empty_store_has_no_rows(db):
    assert assert_materialized(db) == []


@pytest.mark.parametrize("shape", [PRE_BASIL, BASIL])
def test_a_payment_plan_delivered_in_any_order_twice_over_is_stored_as_its_view(db, shape):
    deliveries = [("funnel", funnel_purchase())] + [
        ("stripe", e) for e in subscription_payment_events("sub_plan", 3, shape=shape)
    ]
    shuffled = deliveries + random.Random(3).sample(deliveries, 4)
    random.Random(5).shuffle(shuffled)
    for kind, document in shuffled:
        assert (deliver_funnel(db, document) if kind == "funnel" else deliver(db, document)) == "done"
        assert_materialized(db)  # after every event, not only at the end
    rows = assert_materialized(db)
    assert [(r["charge_id"], r["installment"], r["installments_total"], r["source"]) for r in rows] == [
        ("ch_plan1", 1, 3, "funnel"),
        ("ch_plan2", 2, 3, "stripe"),
        ("ch_plan3", 3, 3, "stripe"),
    ]
    assert {r["customer_email"] for r in rows} == {"buyer@example.com"}


def test_the_funnels_row_of_a_payment_gives_way_to_the_payment_when_it_arrives(db):
    deliver_funnel(
        db,
        funnel_purchase(
            2001, name="Ebook", cents=1_500, cancel_after=None, subscription_id=None, charge_id="pi_book"
        ),
    )
    (before,) = assert_materialized(db)
    assert (before["charge_id"], before["payment_intent_id"], before["found_by"]) == (
        None,
        "pi_book",
        "funnel",
    )
    deliver(
        db,
        event(
            "charge.succeeded",
            charge(
                "ch_book",
                amount=1_500,
                payment_intent="pi_book",
                billing_details={"email": "buyer@example.com"},
            ),
        ),
    )
    (after,) = assert_materialized(db)
    assert (after["charge_id"], after["source"], after["product"]) == ("ch_book", "funnel", "Ebook")


def test_a_payment_made_with_another_email_than_the_funnel_purchase_is_stored_once(db):
    # Paid with a work address on Stripe; the funnel knows the private one. The charge comes first.
    deliver(
        db,
        event(
            "charge.succeeded",
            charge(
                "ch_gift",
                amount=9_900,
                payment_intent="pi_gift",
                customer="cus_work",
                billing_details={"email": "ann@work.example"},
            ),
            created=T0,
        ),
    )
    deliver_funnel(
        db,
        funnel_purchase(
            2002,
            name="Masterclass",
            cents=9_900,
            cancel_after=None,
            subscription_id=None,
            charge_id="pi_gift",
            email="ann@home.example",
        ),
    )
    (row,) = assert_materialized(db)
    assert (row["charge_id"], row["customer_email"], row["source"], row["product"]) == (
        "ch_gift",
        "ann@work.example",
        "funnel",
        "Masterclass",
    )
    deliver(
        db,
        event(
            "charge.refunded",
            charge(
                "ch_gift",
                amount=9_900,
                payment_intent="pi_gift",
                customer="cus_work",
                amount_refunded=9_900,
                billing_details={"email": "ann@work.example"},
            ),
            created=T0 + 60,
        ),
    )
    (row,) = assert_materialized(db)
    assert row["status"] == "refunded"


def test_a_payment_nobody_is_known_for_is_stored_and_kept_current(db):
    # No email on the charge, and no Stripe API to ask whose customer cus_anon is.
    deliver(
        db,
        event(
            "charge.succeeded", charge("ch_anon", amount=3_000, customer="cus_anon", created=T0), created=T0
        ),
    )
    (row,) = assert_materialized(db)
    assert (row["charge_id"], row["customer_email"], row["status"]) == ("ch_anon", None, "paid")
    deliver(
        db, event("refund.created", refund("re_anon", charge_id="ch_anon", amount=1_000), created=T0 + 60)
    )
    (row,) = assert_materialized(db)
    assert (row["status"], row["refunded_amount"]) == ("partially_refunded", 1_000)
    # The customer becomes known later: the same payment, now on their record, stored once.
    deliver(
        db,
        event(
            "charge.updated",
            charge(
                "ch_anon",
                amount=3_000,
                customer="cus_anon",
                created=T0,
                amount_refunded=1_000,
                billing_details={"email": "late@example.com"},
            ),
            created=T0 + 120,
        ),
    )
    (row,) = assert_materialized(db)
    assert (row["customer_email"], row["refunded_amount"]) == ("late@example.com", 1_000)


def test_a_dispute_on_a_payment_nobody_is_known_for_updates_its_row(db):
    deliver(
        db,
        event(
            "charge.succeeded", charge("ch_anon2", amount=4_000, customer="cus_anon2", created=T0), created=T0
        ),
    )
    dispute = {
        "id": "dp_anon2",
        "object": "dispute",
        "amount": 4_000,
        "currency": "usd",
        "charge": "ch_anon2",
        "payment_intent": "pi_anon2",
        "status": "needs_response",
        "reason": "fraudulent",
        "is_charge_refundable": False,
        "created": T0 + 600,
        "evidence_details": {"due_by": T0 + 7 * 86_400},
    }
    deliver(db, event("charge.dispute.created", dispute, created=T0 + 600))
    (row,) = assert_materialized(db)
    assert (row["customer_email"], row["status"], row["dispute_id"]) == (None, "disputed", "dp_anon2")


def test_a_funnel_purchase_without_an_email_is_stored(db):
    purchase = funnel_purchase(
        2003, name="Ticket", cents=2_500, cancel_after=None, subscription_id=None, charge_id=None
    )
    purchase["purchase"]["contact"] = {"first_name": "No", "last_name": "Email"}
    assert deliver_funnel(db, purchase) == "done"
    (row,) = assert_materialized(db)
    assert (row["funnel_purchase_id"], row["customer_email"], row["product"]) == ("2003", None, "Ticket")


def test_rows_keep_their_account_and_a_rebuild_gives_the_same_rows(db):
    deliver(db, event("charge.succeeded", charge("ch_platform", billing_details={"email": "a@example.com"})))
    deliver_connected(
        db,
        event(
            "charge.succeeded",
            charge("ch_connected", billing_details={"email": "b@example.com"}),
            account="acct_seller",
        ),
    )
    rows = assert_materialized(db)
    assert {r["charge_id"]: r["account"] for r in rows} == {"ch_platform": "", "ch_connected": "acct_seller"}
    with db.session() as session:
        session.connection().execute(delete(SalesRowRecord.__table__))
    with db.session() as session:
        assert rebuild_sales_rows(session) == 2
    assert [(r["charge_id"], r["account"]) for r in assert_materialized(db)] == [
        (r["charge_id"], r["account"]) for r in rows
    ]


def test_the_cli_rebuilds_the_table_and_reports_the_rows(worker_db, monkeypatch, capsys):
    from worker import runtime
    from worker.ops import cli

    monkeypatch.setenv("LOG_FORMAT", "text")
    runtime.get_settings.cache_clear()
    for document in subscription_payment_events("sub_plan", 2, shape=BASIL):
        deliver(worker_db, document)
    with worker_db.session() as session:
        session.connection().execute(delete(SalesRowRecord.__table__))
    try:
        assert cli.main(["sales", "rebuild", "--json"]) == 0
    finally:
        runtime.get_settings.cache_clear()
    assert json.loads(capsys.readouterr().out)["rows"] == 2
    assert len(assert_materialized(worker_db)) == 2
    with worker_db.session() as session:
        assert session.connection().execute(select(func.count()).select_from(SalesRowRecord)).scalar() == 2

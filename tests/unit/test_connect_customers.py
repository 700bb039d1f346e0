"""Under Connect, one email buying from two sellers is two customers, unless merging is set."""

from __future__ import annotations

import pytest
from sqlmodel import select

from handlers import sales_view
from models import Alert
from tests.sales_scenarios import T0
from tests.stripe_fixtures import charge, event, refund
from tests.unit.test_sales_view import view
from worker.jobs import processing
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict


def deliver(db, document) -> None:
    """Store and process a connected account's event as the receiver and the actor do."""
    import json

    store_event(db, event_from_dict(document), json.dumps(document))
    outcome = processing.process_event(db, document["id"], document["account"], max_attempts=3)
    assert outcome.status == "done"


def buy_twice_from_two_sellers_and_refund_one(db) -> None:
    # The same course name, bought once from each seller on the platform; one seller refunds theirs.
    for account, number in (("acct_1SellerAaaaaaaa", 1), ("acct_1SellerBbbbbbbb", 2)):
        paid = charge(
            f"ch_course{number}",
            amount=29_800,
            currency="jpy",
            payment_intent=f"pi_course{number}",
            customer=f"cus_{number}",
            billing_details={"email": "mika@example.com"},
            description="Online course: funnel basics",
            created=T0 + number * 60,
        )
        deliver(db, event("charge.succeeded", paid, created=T0 + number * 60, account=account))
    refunded = refund("re_a", charge_id="ch_course1", amount=29_800, currency="jpy", created=T0 + 3600)
    deliver(db, event("refund.created", refunded, created=T0 + 3600, account="acct_1SellerAaaaaaaa"))


def access_alerts(db):
    with db.session() as session:
        return [a.key for a in session.exec(select(Alert).where(Alert.kind == "access_revocation"))]


def test_the_same_product_bought_from_two_sellers_is_not_a_duplicate(db):
    buy_twice_from_two_sellers_and_refund_one(db)
    assert access_alerts(db) == []
    rows = {r["charge_id"]: (r["status"], r["customer_email"]) for r in view(db, "mika@example.com")}
    assert rows == {
        "ch_course1": ("refunded", "mika@example.com"),
        "ch_course2": ("paid", "mika@example.com"),
    }


def test_merging_customers_across_accounts_treats_them_as_one_buyer(db, monkeypatch):
    monkeypatch.setattr(sales_view, "MERGE_CUSTOMERS_ACROSS_ACCOUNTS", True)
    buy_twice_from_two_sellers_and_refund_one(db)
    assert access_alerts(db) == ["access_revocation:re_a"]


@pytest.mark.parametrize("value", ["true", "false"])
def test_the_setting_reaches_the_domain_rules(monkeypatch, value):
    from worker import runtime

    monkeypatch.setenv("MERGE_CUSTOMERS_ACROSS_ACCOUNTS", value)
    runtime.get_settings.cache_clear()
    monkeypatch.setattr(sales_view, "MERGE_CUSTOMERS_ACROSS_ACCOUNTS", None)
    try:
        runtime.configure_domain()
        assert sales_view.MERGE_CUSTOMERS_ACROSS_ACCOUNTS is (value == "true")
    finally:
        runtime.get_settings.cache_clear()

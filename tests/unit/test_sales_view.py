"""The complete sales view: later installments and subscription payments, in both API shapes."""

import io
import itertools
import json
import random

import httpx
import pytest
import respx
from sqlmodel import func, select

from handlers.sales_view import load_sales_view
from models import Charge, Event
from tests.sales_scenarios import BASIL, PRE_BASIL, T0, funnel_purchase, subscription_payment_events
from tests.stripe_fixtures import charge, event
from worker.jobs import processing
from worker.receiver.intake import funnel_event, store_event
from worker.receiver.stripe_events import event_from_dict
from worker.settings import Settings
from worker.stripe_api import StripeReader, make_client

API = "http://127.0.0.1:12111"


def deliver(db, document, stripe=None) -> str:
    """Store and process one event the way the receiver and the actor do; return its final status."""
    store_event(db, event_from_dict(document), json.dumps(document))
    outcome = processing.process_event(db, document["id"], max_attempts=3, force=True, stripe=lambda: stripe)
    return outcome.status


def deliver_funnel(db, payload) -> str:
    parsed, envelope = funnel_event(json.dumps(payload).encode())
    store_event(db, parsed, envelope)
    return processing.process_event(db, parsed.id, max_attempts=3, force=True).status


def view(db, email=None):
    with db.session() as session:
        return [row.as_json() for row in load_sales_view(session, email)]


def plan_view(db):
    return [
        (
            r["charge_id"],
            r["source"],
            r["kind"],
            r["installment"],
            r["installments_total"],
            r["funnel_purchase_id"],
        )
        for r in view(db)
    ]


EXPECTED_PLAN = [
    ("ch_plan1", "funnel", "installment", 1, 3, "1001"),
    ("ch_plan2", "stripe", "installment", 2, 3, "1001"),
    ("ch_plan3", "stripe", "installment", 3, 3, "1001"),
]


@pytest.mark.parametrize("shape", [PRE_BASIL, BASIL])
def test_a_three_payment_plan_shows_as_installments_1_2_3_of_3(db, shape):
    assert deliver_funnel(db, funnel_purchase()) == "done"
    for document in subscription_payment_events("sub_plan", 3, shape=shape):
        assert deliver(db, document) == "done"
    assert plan_view(db) == EXPECTED_PLAN
    first = view(db)[0]
    assert first["customer_email"] == "buyer@example.com"
    assert first["product"] == "Course (3 payments)"
    assert (first["amount"], first["currency"], first["paid_at"]) == (10_000, "usd", "2026-09-21T14:13:20Z")


def test_both_api_shapes_give_the_same_view(db):
    from tests.conftest import empty_tables

    views = []
    for shape in (PRE_BASIL, BASIL):
        empty_tables(db)
        deliver_funnel(db, funnel_purchase())
        for document in subscription_payment_events("sub_plan", 3, shape=shape):
            deliver(db, document)
        views.append(view(db))
    assert views[0] == views[1] and len(views[0]) == 3


@pytest.mark.parametrize("shape", [PRE_BASIL, BASIL])
def test_any_delivery_order_with_duplicates_converges_to_the_in_order_view(db, shape):
    in_order = [("funnel", funnel_purchase())] + [
        ("stripe", e) for e in subscription_payment_events("sub_plan", 3, shape=shape)
    ]
    shuffled = in_order + random.Random(7).sample(in_order, 4)
    random.Random(11).shuffle(shuffled)
    for kind, document in shuffled:
        if kind == "funnel":
            deliver_funnel(db, document)
        else:
            deliver(db, document)
    assert plan_view(db) == EXPECTED_PLAN
    with db.session() as session:
        assert session.exec(select(func.count()).select_from(Charge)).one() == 3


def test_an_installment_arriving_before_the_funnel_purchase_is_linked_once_the_purchase_arrives(db):
    events = subscription_payment_events("sub_plan", 2, shape=BASIL)
    for document in events[3:]:  # payment 2 only
        deliver(db, document)
    before = view(db)
    assert [(r["charge_id"], r["kind"], r["installment"], r["funnel_purchase_id"]) for r in before] == [
        ("ch_plan2", "subscription", 1, None)
    ]
    deliver_funnel(db, funnel_purchase())
    after = [
        (r["charge_id"], r["payment_intent_id"], r["source"], r["installment"], r["installments_total"])
        for r in view(db)
    ]
    # The funnel's own record stands in for payment 1 until Stripe's charge is seen.
    assert after == [(None, "pi_plan1", "funnel", 1, 3), ("ch_plan2", "pi_plan2", "stripe", 2, 3)]


def test_a_monthly_subscription_numbers_its_payments_with_no_total(db):
    deliver_funnel(
        db,
        funnel_purchase(
            2002,
            name="Membership",
            cents=2_900,
            cancel_after=50_000_000,
            subscription_id="sub_month",
            charge_id="pi_month1",
        ),
    )
    for document in subscription_payment_events(
        "sub_month", 4, shape=BASIL, amount=2_900, prefix="month", description="Membership"
    ):
        deliver(db, document)
    rows = view(db)
    assert [(r["kind"], r["installment"], r["installments_total"], r["source"]) for r in rows] == [
        ("subscription", 1, None, "funnel"),
        ("subscription", 2, None, "stripe"),
        ("subscription", 3, None, "stripe"),
        ("subscription", 4, None, "stripe"),
    ]
    assert {r["product"] for r in rows} == {"Membership"}


def test_one_email_with_two_stripe_customers_is_one_customer_in_the_view(db):
    deliver_funnel(
        db,
        funnel_purchase(
            3001,
            name="Ebook",
            cents=1_500,
            cancel_after=None,
            subscription_id=None,
            charge_id="pi_book",
            email="Same@Example.com",
        ),
    )
    deliver(
        db,
        event(
            "charge.succeeded",
            charge(
                "ch_book",
                amount=1_500,
                payment_intent="pi_book",
                customer="cus_first",
                billing_details={"email": "same@example.com"},
            ),
        ),
    )
    deliver(
        db,
        event(
            "charge.succeeded",
            charge(
                "ch_later",
                amount=4_000,
                payment_intent="pi_later",
                customer="cus_second",
                receipt_email=" SAME@example.COM ",
            ),
        ),
    )
    rows = view(db, "same@example.com")
    assert [(r["charge_id"], r["stripe_customer_id"], r["source"], r["kind"]) for r in rows] == [
        ("ch_book", "cus_first", "funnel", "one_time"),
        ("ch_later", "cus_second", "stripe", "one_time"),
    ]


def test_a_basil_charge_without_invoice_events_gets_its_link_fetched_with_expand(db):
    deliver_funnel(db, funnel_purchase())
    events = subscription_payment_events("sub_plan", 2, shape=BASIL)
    charges = [e for e in events if e["type"] == "charge.succeeded"]
    invoices = {e["data"]["object"]["id"]: e["data"]["object"] for e in events if e["type"] == "invoice.paid"}
    settings = Settings(stripe_api_key="sk_test_linkfetch", stripe_api_base=API)
    reader = StripeReader(settings, make_client(settings))

    def invoice_payments(request):
        intent = request.url.params["payment[payment_intent]"]
        number = intent.removeprefix("pi_plan")
        return httpx.Response(
            200,
            json={
                "object": "list",
                "has_more": False,
                "data": [
                    {
                        "id": f"inpay_plan{number}",
                        "object": "invoice_payment",
                        "invoice": invoices[f"in_plan{number}"],
                        "payment": {"type": "payment_intent", "payment_intent": intent},
                        "status": "paid",
                        "amount_paid": 10_000,
                        "currency": "usd",
                    }
                ],
            },
        )

    with respx.mock:
        route = respx.get(f"{API}/v1/invoice_payments").mock(side_effect=invoice_payments)
        for document in charges:
            deliver(db, document, stripe=reader)
        # A replay finds the link already stored and asks Stripe nothing more.
        deliver(db, charges[0], stripe=reader)
    assert route.call_count == 2
    assert route.calls[0].request.url.params.get_list("expand[0]") == ["data.invoice"]
    assert plan_view(db) == EXPECTED_PLAN[:2]


def test_a_failed_charge_is_a_failed_row_and_a_refund_shows_on_its_payment(db):
    deliver(db, event("charge.succeeded", charge("ch_paid", amount=5_000, created=T0), created=T0))
    deliver(
        db,
        event("charge.failed", charge("ch_declined", amount=5_000, status="failed", paid=False), created=T0),
    )
    deliver(
        db,
        event(
            "charge.refunded",
            charge("ch_paid", amount=5_000, amount_refunded=2_000, created=T0),
            created=T0 + 60,
        ),
    )
    assert sorted((r["charge_id"], r["status"], r["refunded_amount"]) for r in view(db)) == [
        ("ch_declined", "failed", 0),
        ("ch_paid", "partially_refunded", 2_000),
    ]


def test_a_malformed_funnel_purchase_event_is_dead_not_a_crash(db):
    bad = {
        "id": "cfevt_manual",
        "object": "event",
        "type": "funnel.purchase.created",
        "created": T0,
        "data": {"object": {"purchase": {"id": None}}},
    }
    store_event(db, event_from_dict({**bad, "id": "evt_cf_bad"}), json.dumps({**bad, "id": "evt_cf_bad"}))
    with pytest.raises(processing.EventGaveUp):
        processing.process_event(db, "evt_cf_bad", max_attempts=3)
    with db.session() as session:
        row = session.get(Event, ("evt_cf_bad", ""))
    assert row.status == "dead" and "UnprocessableEvent" in row.last_error


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3)))[:6])
def test_every_order_of_one_payments_three_events_gives_the_same_row(db, permutation):
    events = subscription_payment_events("sub_plan", 1, shape=BASIL)
    deliver_funnel(db, funnel_purchase())
    for index in permutation:
        deliver(db, events[index])
    assert plan_view(db) == EXPECTED_PLAN[:1]


def test_a_purchase_known_from_its_webhook_and_from_a_sales_export_is_one_sale(db):
    from handlers.purchases import store_purchases
    from handlers.sales_import import read_sales_csv

    deliver_funnel(
        db,
        funnel_purchase(
            4001,
            name="Workshop",
            cents=20_000,
            cancel_after=None,
            subscription_id=None,
            charge_id="pi_workshop",
        ),
    )
    export = io.StringIO(
        "Order ID,Email,Product,Amount,Currency,Date,Charge ID\n"
        "4001,buyer@example.com,Workshop,200.00,USD,2026-09-21,pi_workshop\n"
    )
    with db.session() as session:
        store_purchases(session, read_sales_csv(export).rows)
    assert [(r["funnel_purchase_id"], r["amount"], r["source"]) for r in view(db)] == [
        ("4001", 20_000, "funnel")
    ]
    deliver(db, event("charge.succeeded", charge("ch_workshop", amount=20_000, payment_intent="pi_workshop")))
    assert [(r["charge_id"], r["funnel_purchase_id"]) for r in view(db)] == [("ch_workshop", "4001")]

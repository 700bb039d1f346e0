"""Plans from purchase to completion, failed installments, disputes and alerts that complete themselves.

Every scenario goes through the real handlers (stored, then processed as the actor does) and checks
what staff see: `sales` rows, `plans`, `alerts` and notes.
"""

from __future__ import annotations

import itertools

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from handlers.plans import load_plans
from models import Alert, CustomerNote
from tests.sales_scenarios import BASIL, DAY, PLAN_EMAIL, PRE_BASIL, T0, funnel_purchase
from tests.sales_scenarios import subscription_payment_events as payments
from tests.stripe_fixtures import charge, event, refund
from tests.unit.test_sales_view import API, deliver, deliver_funnel, view
from worker.settings import Settings
from worker.stripe_api import StripeReader, make_client


def plans(db, **filters):
    with db.session() as session:
        return [p.as_json() for p in load_plans(session, **filters)]


def alerts(db):
    with db.session() as session:
        return list(session.exec(select(Alert).order_by(Alert.id)).all())


def notes(db):
    with db.session() as session:
        return list(session.exec(select(CustomerNote).order_by(CustomerNote.key)).all())


def subscription(status, *, shape=BASIL, canceled_at=None, period_end=T0 + 90 * DAY, sub="sub_plan"):
    document = {
        "id": sub,
        "object": "subscription",
        "customer": "cus_plan",
        "status": status,
        "cancel_at_period_end": False,
        "canceled_at": canceled_at,
        "ended_at": canceled_at,
        "created": T0,
        "cancellation_details": {"reason": "cancellation_requested" if canceled_at else None},
    }
    if shape == PRE_BASIL:
        document["current_period_end"] = period_end
    else:
        document["items"] = {"data": [{"id": "si_1", "current_period_end": period_end}]}
    return document


def only_subscription_id_purchase():
    # The funnel took the first payment at checkout: its webhook names the subscription, no payment.
    return funnel_purchase(charge_id=None, subscription_id="sub_plan")


def rows(db):
    return [
        (r["charge_id"], r["installment"], r["installments_total"], r["source"], r["status"])
        for r in view(db)
    ]


THREE_OF_THREE = [
    ("ch_plan1", 1, 3, "funnel", "paid"),
    ("ch_plan2", 2, 3, "stripe", "paid"),
    ("ch_plan3", 3, 3, "stripe", "paid"),
]


@pytest.mark.parametrize("shape", [PRE_BASIL, BASIL])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(8 + 3)))
def test_a_plan_bought_with_only_its_subscription_id_is_three_rows_then_completed(db, shape, order):
    from tests.conftest import empty_tables

    empty_tables(db)
    documents = [only_subscription_id_purchase(), *payments("sub_plan", 3, shape=shape)]
    documents.append(
        event(
            "customer.subscription.deleted",
            subscription("canceled", shape=shape, canceled_at=T0 + 60 * DAY + 100),
            created=T0 + 60 * DAY + 100,
            api_version=shape,
        )
    )
    for index in order:
        if index >= len(documents):
            continue
        document = documents[index]
        if "purchase" in document:
            assert deliver_funnel(db, document) == "done"
        else:
            assert deliver(db, document) == "done"
    assert rows(db) == THREE_OF_THREE
    [plan] = plans(db)
    assert (
        plan["status"],
        plan["installments_paid"],
        plan["installments_total"],
        plan["access_ends_at"],
    ) == (
        "completed",
        3,
        3,
        None,
    )
    assert plan["funnel_purchase_id"] == "1001" and plan["kind"] == "installment"
    assert alerts(db) == []
    [note] = [n for n in notes(db) if n.kind == "subscription_end"]
    assert "completed: 3 of 3 payments made" in note.text


def test_a_plan_the_seller_cancels_before_its_last_payment_is_cancelled_to_the_end_of_the_paid_period(db):
    deliver_funnel(db, only_subscription_id_purchase())
    for document in payments("sub_plan", 2, shape=BASIL):
        deliver(db, document)
    ended = subscription("canceled", canceled_at=T0 + 40 * DAY, period_end=T0 + 60 * DAY)
    deliver(db, event("customer.subscription.deleted", ended, created=T0 + 40 * DAY))
    [plan] = plans(db)
    assert (plan["status"], plan["installments_paid"], plan["access_ends_at"]) == (
        "cancelled",
        2,
        "2026-11-20T14:13:20Z",
    )
    [note] = [n for n in notes(db) if n.kind == "subscription_end"]
    assert "paid up: access runs to the end of the paid period (2026-11-20 14:13 UTC)" in note.text


def failed_attempt_events(shape=BASIL):
    """Installment 2 of the plan fails once (card declined), Stripe schedules a retry."""
    declined = charge(
        "ch_plan2_declined",
        amount=10_000,
        status="failed",
        paid=False,
        payment_intent="pi_plan2",
        created=T0 + 30 * DAY - 600,  # the retry that pays the invoice comes later
        customer="cus_plan",
        billing_details={"email": PLAN_EMAIL},
        failure_code="card_declined",
        failure_message="Your card was declined.",
    )
    invoice = {
        "id": "in_plan2",
        "object": "invoice",
        "customer": "cus_plan",
        "customer_email": PLAN_EMAIL,
        "currency": "usd",
        "status": "open",
        "billing_reason": "subscription_cycle",
        "amount_due": 10_000,
        "amount_paid": 0,
        "attempt_count": 1,
        "next_payment_attempt": T0 + 33 * DAY,
        "created": T0 + 30 * DAY,
    }
    if shape == PRE_BASIL:
        declined["invoice"] = "in_plan2"
        invoice.update(
            subscription="sub_plan", charge="ch_plan2_declined", payment_intent="pi_plan2", paid=False
        )
    else:
        invoice["parent"] = {"subscription_details": {"subscription": "sub_plan"}}
    past_due = event(
        "customer.subscription.updated", subscription("past_due", shape=shape), created=T0 + 30 * DAY + 20
    )
    past_due["data"]["previous_attributes"] = {"status": "active"}
    documents = [
        event("charge.failed", declined, created=T0 + 30 * DAY - 600, api_version=shape),
        event("invoice.payment_failed", invoice, created=T0 + 30 * DAY - 590, api_version=shape),
        past_due,
    ]
    return documents


@pytest.mark.parametrize("shape", [PRE_BASIL, BASIL])
def test_a_failed_installment_is_a_failed_row_an_alert_and_a_past_due_plan_until_a_retry_pays_it(db, shape):
    deliver_funnel(db, only_subscription_id_purchase())
    per_payment = 2 if shape == PRE_BASIL else 3  # charge.succeeded, invoice.paid (, invoice_payment.paid)
    both = payments("sub_plan", 2, shape=shape)
    first, second = both[:per_payment], both[per_payment:]
    failed = failed_attempt_events(shape)
    for document in first:
        deliver(db, document)
    # From basil on a failed charge names no invoice: the worker asks Stripe which one it tried to pay.
    settings = Settings(stripe_api_key="sk_test_failed", stripe_api_base=API)
    reader = StripeReader(settings, make_client(settings))
    link = {
        "id": "inpay_plan2",
        "object": "invoice_payment",
        "invoice": failed[1]["data"]["object"],
        "currency": "usd",
        "amount_paid": None,
        "payment": {"type": "payment_intent", "payment_intent": "pi_plan2"},
        "status": "open",
    }
    with respx.mock:
        route = respx.get(f"{API}/v1/invoice_payments").mock(
            return_value=httpx.Response(200, json={"object": "list", "data": [link], "has_more": False})
        )
        for document in failed:
            # Before basil the payloads carry every link: no Stripe key needed.
            deliver(db, document, stripe=reader if shape == BASIL else None)
    assert route.call_count == (0 if shape == PRE_BASIL else 1)

    assert rows(db) == [
        ("ch_plan1", 1, 3, "funnel", "paid"),
        ("ch_plan2_declined", 2, 3, "stripe", "failed"),
    ]
    [plan] = plans(db)
    assert (plan["status"], plan["installments_paid"], plan["failed_payments"]) == ("past_due", 1, 1)
    assert plan["next_payment_attempt"] == "2026-10-24T14:13:20Z"
    [alert] = alerts(db)
    assert (alert.key, alert.kind, alert.customer_email, alert.state) == (
        "payment_failed:in_plan2",
        "payment_failed",
        PLAN_EMAIL,
        "retrying",
    )
    for words in (
        "installment 2 of 3",
        "Course (3 payments)",
        "100.00 USD",
        "Your card was declined",
        "2026-10-24 14:13 UTC",
    ):
        assert words in alert.message
    first_id = alert.id

    # The retry on the same invoice and payment intent succeeds: it is installment 2, not 3.
    for document in second:
        deliver(db, document)
    deliver(
        db, event("customer.subscription.updated", subscription("active", shape=shape), created=T0 + 31 * DAY)
    )
    assert rows(db) == [
        ("ch_plan1", 1, 3, "funnel", "paid"),
        ("ch_plan2_declined", 2, 3, "stripe", "failed"),
        ("ch_plan2", 2, 3, "stripe", "paid"),
    ]
    [plan] = plans(db)
    assert (plan["status"], plan["installments_paid"], plan["failed_payments"]) == ("active", 2, 1)
    [alert] = alerts(db)
    assert (alert.id, alert.state, alert.delivery_status) == (first_id, "paid", "pending")
    assert "A retry paid it" in alert.message


def dispute(status, *, dispute_id="dp_1", charge_id="ch_sold", refundable=False, due=T0 + 10 * DAY):
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": 19_800,
        "currency": "jpy",
        "charge": charge_id,
        "payment_intent": "pi_sold",
        "status": status,
        "reason": "fraudulent",
        "is_charge_refundable": refundable,
        "evidence_details": {"due_by": due, "has_evidence": False, "past_due": False, "submission_count": 0},
        "created": T0 + DAY,
    }


def sold(**fields):
    values = {
        "amount": 19_800,
        "currency": "jpy",
        "payment_intent": "pi_sold",
        "customer": "cus_mika",
        "billing_details": {"email": "mika@example.com"},
        "description": "Video course bundle",
        "created": T0,
    }
    return charge("ch_sold", **{**values, **fields})


def test_a_dispute_before_its_charge_is_completed_in_place_when_the_charge_arrives(db):
    deliver(db, event("charge.dispute.created", dispute("needs_response"), created=T0 + DAY))
    [alert] = alerts(db)
    assert alert.customer_email is None and "A customer" in alert.message
    assert "by 2026-10-01 14:13 UTC" in alert.message and "see Stripe" not in alert.message
    raised = alert.id

    deliver(db, event("charge.succeeded", sold(), created=T0))
    [alert] = alerts(db)
    assert (alert.id, alert.customer_email, alert.product) == (
        raised,
        "mika@example.com",
        "Video course bundle",
    )
    assert alert.message.startswith("mika@example.com opened a chargeback (fraudulent)")
    assert "\u201cVideo course bundle\u201d" in alert.message
    assert "Do not refund the disputed charge" in alert.message
    [row] = view(db)
    assert (row["status"], row["dispute_status"]) == ("disputed", "needs_response")


@pytest.mark.parametrize(
    ("closing", "row_status"), [("lost", "dispute_lost"), ("won", "paid")], ids=["lost", "won"]
)
def test_a_closed_dispute_moves_the_sale_and_sends_its_alert_again(db, closing, row_status):
    deliver(db, event("charge.succeeded", sold(), created=T0))
    deliver(db, event("charge.dispute.created", dispute("needs_response"), created=T0 + DAY))
    deliver(db, event("charge.dispute.updated", dispute("under_review"), created=T0 + 2 * DAY))
    with db.session() as session:
        session.get(Alert, 1).delivery_status = "sent"
    deliver(db, event("charge.dispute.closed", dispute(closing), created=T0 + 20 * DAY))
    [row] = view(db)
    assert row["status"] == row_status
    [alert] = alerts(db)
    assert (alert.state, alert.delivery_status, alert.status) == (closing, "pending", "open")
    assert ("was lost" if closing == "lost" else "was won") in alert.message
    # A late, older event does not take the dispute back.
    deliver(db, event("charge.dispute.updated", dispute("under_review"), created=T0 + 2 * DAY + 1))
    assert view(db)[0]["status"] == row_status


def test_an_inquiry_is_not_called_a_chargeback_and_says_a_refund_is_still_possible(db):
    deliver(db, event("charge.succeeded", sold(), created=T0))
    inquiry = dispute("warning_needs_response", refundable=True)
    deliver(db, event("charge.dispute.created", inquiry, created=T0 + DAY))
    [alert] = alerts(db)
    assert "opened an inquiry" in alert.message and "chargeback" not in alert.message.split(".")[0]
    assert "Refunding the charge is still possible" in alert.message
    assert "Do not refund" not in alert.message


def test_a_dispute_whose_charge_is_unknown_fetches_it_with_its_customer(db):
    settings = Settings(stripe_api_key="sk_test_disputes", stripe_api_base=API)
    reader = StripeReader(settings, make_client(settings))
    expanded = sold(customer={"id": "cus_mika", "object": "customer", "email": "Mika@Example.com"})
    expanded.pop("billing_details")
    with respx.mock:
        route = respx.get(f"{API}/v1/charges/ch_sold").mock(return_value=httpx.Response(200, json=expanded))
        respx.get(f"{API}/v1/invoice_payments").mock(
            return_value=httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        )
        deliver(
            db, event("charge.dispute.created", dispute("needs_response"), created=T0 + DAY), stripe=reader
        )
    assert route.calls[0].request.url.params.get_list("expand[0]") == ["customer"]
    [alert] = alerts(db)
    assert (alert.customer_email, alert.product) == ("mika@example.com", "Video course bundle")


def test_an_access_alert_raised_before_the_kept_charge_arrived_gains_it_under_the_same_id(db):
    for purchase_id, intent in ((2001, "pi_first"), (2002, "pi_second")):
        deliver_funnel(
            db,
            funnel_purchase(
                purchase_id,
                name="Video course",
                cents=19_800,
                currency="jpy",
                cancel_after=None,
                subscription_id=None,
                charge_id=intent,
                email="mika@example.com",
                created_at="2026-09-21T00:00:00Z" if purchase_id == 2001 else "2026-09-21T00:05:00Z",
            ),
        )
    first = charge(
        "ch_first",
        amount=19_800,
        currency="jpy",
        payment_intent="pi_first",
        created=T0,
        billing_details={"email": "mika@example.com"},
    )
    deliver(db, event("charge.succeeded", first, created=T0))
    refunded = {**first, "amount_refunded": 19_800, "refunded": True}
    deliver(db, event("charge.refunded", refunded, created=T0 + DAY))
    deliver(
        db,
        event(
            "refund.created",
            refund("re_dup", charge_id="ch_first", amount=19_800, currency="jpy", created=T0 + DAY),
            created=T0 + DAY,
        ),
    )
    [alert] = alerts(db)
    assert (alert.key, alert.kept_charge_id) == ("access_revocation:re_dup", None)
    assert "pi_second" in alert.message
    with db.session() as session:
        session.get(Alert, alert.id).delivery_status = "sent"

    second = charge(
        "ch_second",
        amount=19_800,
        currency="jpy",
        payment_intent="pi_second",
        created=T0 + 300,
        billing_details={"email": "mika@example.com"},
    )
    deliver(db, event("charge.succeeded", second, created=T0 + 300))
    [alert] = alerts(db)
    assert (alert.key, alert.kept_charge_id, alert.delivery_status) == (
        "access_revocation:re_dup",
        "ch_second",
        "sent",
    )
    assert "charge ch_second" in alert.message and alert.updated_at > alert.created_at


def test_repeated_events_of_a_one_time_charge_ask_stripe_for_its_invoice_once(db):
    settings = Settings(stripe_api_key="sk_test_calls", stripe_api_base=API)
    reader = StripeReader(settings, make_client(settings))
    one_time = charge(
        "ch_once", payment_intent="pi_once", created=T0, billing_details={"email": "a@example.com"}
    )
    with respx.mock:
        route = respx.get(f"{API}/v1/invoice_payments").mock(
            return_value=httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        )
        calls = []
        for event_type, created in (
            ("charge.succeeded", T0),
            ("charge.updated", T0 + 5),
            ("charge.captured", T0 + 6),
        ):
            deliver(db, event(event_type, one_time, created=created), stripe=reader)
            calls.append(route.call_count)
    assert calls == [1, 1, 1]


def test_a_failed_refund_does_not_hide_a_later_successful_one(db):
    settings = Settings(stripe_api_key="sk_test_refunds", stripe_api_base=API)
    reader = StripeReader(settings, make_client(settings))
    deliver(db, event("charge.succeeded", sold(), created=T0))
    deliver(
        db,
        event(
            "refund.failed",
            refund("re_failed", charge_id="ch_sold", amount=19_800, currency="jpy", status="failed"),
            created=T0 + DAY,
        ),
    )
    refunded = sold(amount_refunded=19_800, refunded=True)
    later = refund("re_ok", charge_id="ch_sold", amount=19_800, currency="jpy", created=T0 + 2 * DAY)
    with respx.mock:
        respx.get(f"{API}/v1/invoice_payments").mock(
            return_value=httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        )
        route = respx.get(f"{API}/v1/refunds").mock(
            return_value=httpx.Response(200, json={"object": "list", "data": [later], "has_more": False})
        )
        deliver(db, event("charge.refunded", refunded, created=T0 + 2 * DAY), stripe=reader)
    assert route.call_count == 1
    assert {n.refund_id: n.status for n in notes(db)} == {"re_failed": "failed", "re_ok": "succeeded"}
    [row] = view(db)
    assert (row["refunded_amount"], row["status"]) == (19_800, "refunded")


def test_gross_counts_every_payment_once_whatever_the_order(db):
    documents = [only_subscription_id_purchase(), *payments("sub_plan", 3, shape=BASIL)]
    for permutation in itertools.islice(itertools.permutations(range(len(documents))), 0, 40, 7):
        from tests.conftest import empty_tables

        empty_tables(db)
        for index in permutation:
            document = documents[index]
            (deliver_funnel if "purchase" in document else deliver)(db, document)
        assert sum(r["amount"] for r in view(db)) == 30_000

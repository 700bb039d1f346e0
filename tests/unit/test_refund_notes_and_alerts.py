"""Refund notes on customer records, and access alerts after a duplicate purchase is refunded."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from models import Alert, CustomerNote, CustomerStripeId, SubscriptionEnd
from tests.conftest import empty_tables
from tests.sales_scenarios import T0, funnel_purchase
from tests.stripe_fixtures import charge, event, refund
from tests.unit.test_sales_view import deliver, deliver_funnel

COURSE = "Video course"


def purchase(charge_id: str, *, customer: str = "cus_a", created: int = T0, amount: int = 19_800, **fields):
    return charge(
        charge_id,
        amount=amount,
        created=created,
        customer=customer,
        payment_intent=f"pi_{charge_id}",
        description=COURSE,
        billing_details={"email": "Mika@Example.com"},
        **fields,
    )


def duplicate_refund_events(
    refund_id: str = "re_dup", currency: str = "usd", amount: int = 19_800
) -> list[dict]:
    """Two purchases of one course a minute apart, then the full refund of the second: every event."""
    first = purchase("ch_first", currency=currency, amount=amount)
    second = purchase("ch_second", created=T0 + 60, customer="cus_b", currency=currency, amount=amount)
    refunded = {**second, "amount_refunded": amount, "refunded": True}
    pending = refund(
        refund_id,
        charge_id="ch_second",
        amount=amount,
        currency=currency,
        status="pending",
        created=T0 + 600,
        reason="duplicate",
    )
    done = {**pending, "status": "succeeded"}
    return [
        event("charge.succeeded", first, event_id="evt_first", created=T0),
        event("charge.succeeded", second, event_id="evt_second", created=T0 + 60),
        event("charge.refunded", refunded, event_id="evt_refunded", created=T0 + 600),
        event("refund.created", pending, event_id="evt_refund_created", created=T0 + 600),
        event("charge.refund.updated", done, event_id="evt_refund_updated_c", created=T0 + 601),
        event("refund.updated", done, event_id="evt_refund_updated", created=T0 + 601),
    ]


def notes(db, email="mika@example.com"):
    with db.session() as session:
        return list(session.exec(select(CustomerNote).where(CustomerNote.email == email)).all())


def alerts(db):
    with db.session() as session:
        return list(session.exec(select(Alert)).all())


def test_refunding_one_of_two_duplicate_purchases_raises_one_access_alert_naming_the_kept_one(db):
    for document in duplicate_refund_events():
        deliver(db, document)
    [alert] = alerts(db)
    assert (alert.kind, alert.status, alert.refund_id, alert.charge_id, alert.kept_charge_id) == (
        "access_revocation",
        "open",
        "re_dup",
        "ch_second",
        "ch_first",
    )
    assert alert.customer_email == "mika@example.com" and alert.product == COURSE
    assert "re-grant access" in alert.message and "ch_first" in alert.message


def test_an_alert_raised_before_the_kept_charge_arrives_names_its_payment_intent_and_funnel_purchase(db):
    # The funnel recorded both purchases (naming their payment intents); Stripe's charge.succeeded for
    # the kept one has not been processed yet when the duplicate's refund is.
    for purchase_id, intent in ((5003, "pi_ch_first"), (5004, "pi_ch_second")):
        deliver_funnel(
            db,
            funnel_purchase(
                purchase_id,
                name=COURSE,
                cents=19_800,
                cancel_after=None,
                subscription_id=None,
                charge_id=intent,
                email="Mika@Example.com",
            ),
        )
    documents = [d for d in duplicate_refund_events() if d["id"] != "evt_first"]
    for document in documents:
        deliver(db, document)

    [alert] = alerts(db)
    assert (alert.charge_id, alert.kept_charge_id) == ("ch_second", None)
    assert "still hold paid payment pi_ch_first, funnel purchase 5003 (198.00 USD" in alert.message
    assert "None" not in alert.message


def test_the_refund_note_states_date_amount_product_ids_reason_and_status(db):
    for document in duplicate_refund_events():
        deliver(db, document)
    [note] = notes(db)
    assert (note.refund_id, note.charge_id, note.amount, note.currency, note.status) == (
        "re_dup",
        "ch_second",
        19_800,
        "usd",
        "succeeded",
    )
    assert note.text == (
        "2026-09-21 refund of 198.00 USD (full, of 198.00 USD) for \u201cVideo course\u201d, "
        "one-time payment - refunded. Reason: duplicate. Charge ch_second, refund re_dup."
    )


def test_a_yen_refund_is_written_without_decimals(db):
    for document in duplicate_refund_events(currency="jpy", amount=19_800):
        deliver(db, document)
    assert "refund of 19,800 JPY" in notes(db)[0].text


def test_a_refund_of_the_customers_only_purchase_is_noted_but_raises_no_alert(db):
    events = duplicate_refund_events()
    for document in events[1:]:  # the first purchase never happened
        deliver(db, document)
    assert len(notes(db)) == 1
    assert alerts(db) == []


def test_a_partial_then_full_refund_gives_two_notes_and_the_alert_keys_on_the_refund_that_completed_it(db):
    deliver(db, event("charge.succeeded", purchase("ch_first"), created=T0))
    deliver(db, event("charge.succeeded", purchase("ch_second", created=T0 + 60), created=T0 + 60))
    deliver(
        db,
        event(
            "refund.created",
            refund("re_part", charge_id="ch_second", amount=5_000, created=T0 + 100),
            created=T0 + 100,
        ),
    )
    assert alerts(db) == []
    deliver(
        db,
        event(
            "refund.created",
            refund("re_rest", charge_id="ch_second", amount=14_800, created=T0 + 200),
            created=T0 + 200,
        ),
    )
    texts = [n.text for n in sorted(notes(db), key=lambda n: n.refund_id)]
    assert "refund of 50.00 USD (partial" in texts[0] and "refund of 148.00 USD (partial" in texts[1]
    assert [a.refund_id for a in alerts(db)] == ["re_rest"]


def test_a_refund_that_later_fails_updates_its_note_instead_of_adding_one(db):
    deliver(db, event("charge.succeeded", purchase("ch_only"), created=T0))
    deliver(
        db,
        event(
            "refund.created",
            refund("re_f", charge_id="ch_only", amount=19_800, status="pending", created=T0 + 10),
            created=T0 + 10,
        ),
    )
    deliver(
        db,
        event(
            "refund.failed",
            refund("re_f", charge_id="ch_only", amount=19_800, status="failed", created=T0 + 10),
            created=T0 + 900,
        ),
    )
    [note] = notes(db)
    assert note.status == "failed" and "FAILED: the money was not returned" in note.text


def test_a_failed_refund_of_a_duplicate_raises_no_access_alert(db):
    events = duplicate_refund_events()
    for document in events[:2]:
        deliver(db, document)
    failed = refund("re_dup", charge_id="ch_second", amount=19_800, status="failed", created=T0 + 600)
    deliver(db, event("refund.failed", failed, created=T0 + 700))
    assert alerts(db) == []


def test_two_stripe_customers_with_one_email_are_one_customer_record(db):
    for document in duplicate_refund_events():
        deliver(db, document)
    with db.session() as session:
        links = session.exec(select(CustomerStripeId)).all()
    assert sorted((link.stripe_customer_id, link.email) for link in links) == [
        ("cus_a", "mika@example.com"),
        ("cus_b", "mika@example.com"),
    ]


def test_installments_of_one_plan_are_not_duplicates_of_each_other(db):
    from tests.sales_scenarios import BASIL, subscription_payment_events

    deliver_funnel(db, funnel_purchase())
    for document in subscription_payment_events("sub_plan", 2, shape=BASIL):
        deliver(db, document)
    deliver(
        db,
        event(
            "refund.created",
            refund("re_inst", charge_id="ch_plan2", amount=10_000, created=T0 + 40 * 86400),
            created=T0 + 40 * 86400,
        ),
    )
    assert alerts(db) == []
    [note] = notes(db, "buyer@example.com")
    assert "installment 2 of 3" in note.text


def test_purchases_further_apart_than_the_window_are_not_duplicates(db):
    deliver(db, event("charge.succeeded", purchase("ch_old"), created=T0))
    late = T0 + 45 * 86400
    deliver(db, event("charge.succeeded", purchase("ch_new", created=late), created=late))
    deliver(
        db,
        event(
            "refund.created",
            refund("re_new", charge_id="ch_new", amount=19_800, created=late + 10),
            created=late + 10,
        ),
    )
    assert alerts(db) == []


def test_a_dispute_raises_one_chargeback_alert(db):
    deliver(db, event("charge.succeeded", purchase("ch_disputed"), created=T0))
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "charge": "ch_disputed",
        "amount": 19_800,
        "currency": "usd",
        "reason": "fraudulent",
        "status": "needs_response",
        "evidence_details": {"due_by": T0 + 7 * 86400},
    }
    for _ in range(2):
        deliver(db, event("charge.dispute.created", dispute, event_id="evt_dp", created=T0 + 100))
    [alert] = alerts(db)
    assert (alert.kind, alert.charge_id, alert.customer_email, alert.amount) == (
        "dispute",
        "ch_disputed",
        "mika@example.com",
        19_800,
    )
    assert "2026-09-28" in alert.message and "fraudulent" in alert.message


@pytest.mark.parametrize(
    ("latest_invoice_status", "rule", "ends_at"),
    [("paid", "end_of_paid_period", T0 + 30 * 86400), ("open", "immediately_unpaid", T0 + 5 * 86400)],
)
def test_a_cancelled_subscription_ends_access_at_period_end_or_at_once_when_unpaid(
    db, latest_invoice_status, rule, ends_at
):
    deliver(db, event("charge.succeeded", purchase("ch_sub"), created=T0))
    subscription = {
        "id": "sub_gone",
        "object": "subscription",
        "customer": "cus_a",
        "status": "canceled",
        "canceled_at": T0 + 5 * 86400,
        "ended_at": T0 + 5 * 86400,
        "items": {
            "data": [{"id": "si_1", "current_period_start": T0, "current_period_end": T0 + 30 * 86400}]
        },
        # Expanded, as a subscription read with expand[]=latest_invoice shows it.
        "latest_invoice": {
            "id": "in_latest",
            "object": "invoice",
            "subscription": "sub_gone",
            "customer": "cus_a",
            "currency": "jpy",
            "status": latest_invoice_status,
            "attempt_count": 1,
            "amount_due": 19_800,
            "amount_paid": 19_800 if latest_invoice_status == "paid" else 0,
        },
    }
    deliver(db, event("customer.subscription.deleted", subscription, created=T0 + 5 * 86400))
    with db.session() as session:
        end = session.get(SubscriptionEnd, "sub_gone")
    assert (end.rule, int(end.access_ends_at.timestamp()), end.customer_email) == (
        rule,
        ends_at,
        "mika@example.com",
    )
    assert any(n.kind == "subscription_end" for n in notes(db))


EVENT_ORDERS = st.lists(st.sampled_from(range(6)), min_size=6, max_size=12).filter(
    lambda picks: set(picks) == set(range(6))
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=EVENT_ORDERS)
def test_any_order_and_duplication_of_one_refunds_events_gives_one_note_and_one_alert(db, order):
    empty_tables(db)  # one database for all examples: start each from nothing
    events = duplicate_refund_events()
    for index in order:
        deliver(db, json.loads(json.dumps(events[index])))
    with db.session() as session:
        all_notes = session.exec(select(CustomerNote)).all()
        all_alerts = session.exec(select(Alert)).all()
    assert [(n.refund_id, n.status) for n in all_notes] == [("re_dup", "succeeded")]

    assert [(a.refund_id, a.kept_charge_id) for a in all_alerts] == [("re_dup", "ch_first")]


def test_a_seller_subscribed_only_to_charge_refunded_still_gets_the_note_and_alert(db):
    import httpx
    import respx

    from worker.settings import Settings
    from worker.stripe_api import StripeReader, make_client

    api = "http://127.0.0.1:12111"
    settings = Settings(stripe_api_key="sk_test_refunds_only", stripe_api_base=api)
    reader = StripeReader(settings, make_client(settings))
    events = duplicate_refund_events()
    done = {**events[-1]["data"]["object"]}
    empty = {"object": "list", "has_more": False, "data": []}
    with respx.mock:
        respx.get(f"{api}/v1/invoice_payments").mock(return_value=httpx.Response(200, json=empty))
        refunds = respx.get(f"{api}/v1/refunds").mock(
            return_value=httpx.Response(200, json={**empty, "data": [done]})
        )
        for document in events[:3]:  # two charge.succeeded, then charge.refunded
            deliver(db, document, stripe=reader)
    assert refunds.call_count == 1 and refunds.calls[0].request.url.params["charge"] == "ch_second"
    assert [(n.refund_id, n.status) for n in notes(db)] == [("re_dup", "succeeded")]
    assert [a.kept_charge_id for a in alerts(db)] == ["ch_first"]


def test_a_charge_whose_stripe_customer_was_deleted_is_still_recorded_without_an_email(db):
    import httpx
    import respx

    from models import Charge
    from worker.settings import Settings
    from worker.stripe_api import StripeReader, make_client

    api = "http://127.0.0.1:12111"
    settings = Settings(stripe_api_key="sk_test_deleted_customer", stripe_api_base=api)
    reader = StripeReader(settings, make_client(settings))
    anonymous = charge("ch_anon", customer="cus_gone", payment_intent="pi_anon")
    with respx.mock:
        respx.get(f"{api}/v1/invoice_payments").mock(
            return_value=httpx.Response(200, json={"object": "list", "has_more": False, "data": []})
        )
        respx.get(f"{api}/v1/customers/cus_gone").mock(
            return_value=httpx.Response(
                404,
                json={
                    "error": {
                        "type": "invalid_request_error",
                        "code": "resource_missing",
                        "message": "No such customer",
                    }
                },
            )
        )
        assert deliver(db, event("charge.succeeded", anonymous), stripe=reader) == "done"
    with db.session() as session:
        stored = session.get(Charge, "ch_anon")
    assert (stored.amount, stored.customer_email) == (5000, None)

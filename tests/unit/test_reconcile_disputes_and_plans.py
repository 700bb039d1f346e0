"""The nightly run finds disputes, subscriptions and failed payments whose webhooks never arrived, and
names the payments it added: what staff then see in the report, the sales view, plans and alerts."""

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from sqlmodel import select

import handlers.reconcile
from handlers.plans import build_plans
from handlers.reconcile import reconcile
from handlers.sales_view import load_customer_facts
from models import Alert, CustomerNote
from models.types import from_unix, iso
from tests.sales_scenarios import BASIL, DAY, PLAN_EMAIL, T0, funnel_purchase, subscription_payment_events
from tests.stripe_fixtures import charge, event, refund
from tests.unit.test_reconcile import API, PagedStripe, stripe_reader
from tests.unit.test_sales_view import deliver, deliver_funnel, view
from worker.ops import cli

SINCE = datetime(2026, 9, 1, tzinfo=UTC)
UNTIL = datetime(2027, 1, 1, tzinfo=UTC)


# --- Stripe objects, shaped as the API sends them (shared/reference/stripe/latest) --------------------


def stripe_dispute(
    dispute_id: str,
    charge_id: str,
    *,
    amount: int,
    created: int,
    status: str = "needs_response",
    reason: str = "fraudulent",
    due_by: int | None = None,
) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge_id,
        "created": created,
        "currency": "usd",
        "evidence": {"customer_email_address": None, "product_description": None, "uncategorized_text": None},
        "evidence_details": {
            "due_by": due_by,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
            "enhanced_eligibility": {},
        },
        "is_charge_refundable": status in ("warning_needs_response", "needs_response"),
        "livemode": False,
        "metadata": {},
        "payment_intent": "pi_" + charge_id.removeprefix("ch_"),
        "payment_method_details": {
            "card": {
                "brand": "visa",
                "case_type": "inquiry" if status.startswith("warning_") else "chargeback",
                "network_reason_code": "10.4",
                "network": "visa",
            },
            "type": "card",
        },
        "reason": reason,
        "status": status,
        "enhanced_eligibility_types": [],
    }


def stripe_subscription(
    subscription_id: str,
    *,
    status: str,
    created: int,
    period: tuple[int, int],
    customer: str = "cus_plan",
    ended_at: int | None = None,
    latest_invoice: dict | None = None,
) -> dict[str, Any]:
    """A subscription from 2025-03-31.basil on: the billing period is on its items."""
    return {
        "id": subscription_id,
        "object": "subscription",
        "application": None,
        "billing_cycle_anchor": created,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": ended_at,
        "cancellation_details": {
            "comment": None,
            "feedback": None,
            "reason": "cancellation_requested" if ended_at else None,
        },
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer,
        "default_payment_method": None,
        "ended_at": ended_at,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{subscription_id}",
                    "object": "subscription_item",
                    "created": created,
                    "current_period_start": period[0],
                    "current_period_end": period[1],
                    "price": {
                        "id": "price_course",
                        "object": "price",
                        "currency": "usd",
                        "unit_amount": 10_000,
                    },
                    "quantity": 1,
                    "subscription": subscription_id,
                }
            ],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": latest_invoice,
        "livemode": False,
        "metadata": {},
        "status": status,
    }


def plan_payments() -> tuple[list[dict], list[dict], list[dict], dict]:
    """The 3-payment plan's events per payment, and its charges, invoice payments (invoice expanded)
    and invoices as Stripe's list endpoints return them."""
    events = subscription_payment_events("sub_plan", 3, shape=BASIL)
    charges, links, invoices = [], [], {}
    for number in (1, 2, 3):
        paid, invoiced, linked = (e["data"]["object"] for e in events[3 * (number - 1) : 3 * number])
        invoices[invoiced["id"]] = invoiced
        charges.append(paid)
        links.append({**linked, "created": paid["created"] + 5, "invoice": invoiced})
    return events, charges, links, invoices


def nightly(db, reader, stripe: PagedStripe, **options) -> tuple[dict, list[int]]:
    sent: list[int] = []
    with respx.mock:
        respx.route(host="127.0.0.1", port=12111).mock(side_effect=stripe)
        report = reconcile(db, reader, SINCE, UNTIL, on_alerts=sent.extend, **options)
    return report, sent


def plans(db, email: str = PLAN_EMAIL) -> list[dict]:
    with db.session() as session:
        facts = load_customer_facts(session, email)
        return [p.as_json() for p in build_plans(facts, facts.view())]


def alerts(db) -> list[Alert]:
    with db.session() as session:
        return session.exec(select(Alert).order_by(Alert.id)).all()


@pytest.fixture
def reader():
    return stripe_reader()


@pytest.fixture
def refreshed(monkeypatch) -> list[set[str]]:
    """The customers each page of a run refreshed (only pages that refreshed anyone)."""
    calls: list[set[str]] = []
    original = handlers.reconcile.refresh_customers

    def spy(session, emails, **options):
        emails = set(emails)
        if emails:
            calls.append(emails)
        return original(session, emails, **options)

    monkeypatch.setattr(handlers.reconcile, "refresh_customers", spy)
    return calls


# --- a plan whose last payment, dispute and end only the nightly run finds -----------------------------


def completed_plan_stripe() -> PagedStripe:
    """Payment 3, the chargeback on payment 2 (lost) and the funnel's cancellation after payment 3."""
    _, charges, links, invoices = plan_payments()
    ended = T0 + 60 * DAY + 3_600
    return PagedStripe(
        {
            "charges": charges,
            "invoice_payments": links,
            "disputes": [
                stripe_dispute("dp_plan2", "ch_plan2", amount=10_000, created=T0 + 40 * DAY, status="lost")
            ],
            "subscriptions": [
                stripe_subscription(
                    "sub_plan",
                    status="canceled",
                    created=T0 - 10,
                    period=(T0 + 60 * DAY, T0 + 90 * DAY),
                    ended_at=ended,
                    latest_invoice=invoices["in_plan3"],
                )
            ],
        }
    )


def deliver_first_two_payments(db) -> None:
    deliver_funnel(db, funnel_purchase())
    events, *_ = plan_payments()
    for document in events[:6]:
        deliver(db, document)


def test_a_plans_last_payment_lost_dispute_and_end_found_by_the_nightly_run_reach_sales_plans_and_alerts(
    db, reader
):
    deliver_first_two_payments(db)
    stripe = completed_plan_stripe()
    report, sent = nightly(db, reader, stripe)

    assert [(r["charge_id"], r["installment"], r["status"]) for r in view(db)] == [
        ("ch_plan1", 1, "paid"),
        ("ch_plan2", 2, "dispute_lost"),
        ("ch_plan3", 3, "paid"),
    ]
    [plan] = plans(db)
    assert (plan["status"], plan["installments_paid"], plan["installments_total"]) == ("completed", 3, 3)
    with db.session() as session:
        [note] = session.exec(select(CustomerNote).where(CustomerNote.kind == "subscription_end")).all()
    assert "3 of 3 payments made" in note.text
    [alert] = alerts(db)
    assert (alert.kind, alert.state, alert.customer_email, alert.charge_id) == (
        "dispute",
        "lost",
        PLAN_EMAIL,
        "ch_plan2",
    )
    assert "installment 2 of 3" in alert.message and "the money is gone" in alert.message
    assert sent == [alert.id]

    assert report["counts"]["by_resource"]["disputes"] == {"seen": 1, "added": 1}
    assert report["counts"]["by_resource"]["subscriptions"] == {"seen": 1, "added": 1}
    assert report["counts"]["missed_webhooks"] == 3  # payment 3, the dispute, the subscription
    # Stripe leaves ended subscriptions out unless asked for them all.
    [listed] = [r for r in stripe.requests if r.url.path == "/v1/subscriptions"]
    assert listed.url.params["status"] == "all"


def test_a_subscription_cancelled_unpaid_ends_access_at_once_from_its_listed_latest_invoice(db, reader):
    deliver_funnel(
        db,
        funnel_purchase(
            2001,
            name="Membership",
            cancel_after=50_000_000,
            subscription_id="sub_member",
            charge_id="pi_member1",
        ),
    )
    paid = subscription_payment_events(
        "sub_member", 1, shape=BASIL, prefix="member", description="Membership", amount=2_900
    )
    for document in paid:
        deliver(db, document)
    cancelled_at = T0 + 40 * DAY
    unpaid = {
        "id": "in_member2",
        "object": "invoice",
        "customer": "cus_plan",
        "customer_email": PLAN_EMAIL,
        "currency": "usd",
        "amount_due": 2_900,
        "amount_paid": 0,
        "attempt_count": 3,
        "next_payment_attempt": None,
        "billing_reason": "subscription_cycle",
        "status": "open",
        "created": T0 + 30 * DAY,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_member"}},
        "lines": {"object": "list", "data": [{"id": "il_in_member2", "description": "Membership"}]},
    }
    ended = stripe_subscription(
        "sub_member",
        status="canceled",
        created=T0 - 10,
        period=(T0 + 30 * DAY, T0 + 60 * DAY),
        ended_at=cancelled_at,
        latest_invoice=unpaid,
    )

    nightly(db, reader, PagedStripe({"subscriptions": [ended]}))

    [plan] = plans(db)
    assert (plan["kind"], plan["status"], plan["installments_paid"]) == ("subscription", "cancelled", 1)
    assert plan["access_ends_at"] == iso(from_unix(cancelled_at))  # unpaid: at once, not at period end
    with db.session() as session:
        [note] = session.exec(select(CustomerNote).where(CustomerNote.kind == "subscription_end")).all()
    assert "1 unpaid invoice(s): access ends at once" in note.text


def test_a_second_run_of_the_same_window_changes_nothing_and_refreshes_nobody(db, reader, refreshed):
    deliver_first_two_payments(db)
    stripe = completed_plan_stripe()
    nightly(db, reader, stripe)
    assert refreshed  # the first run put what it found on the customer's record
    before = (view(db), plans(db), [(a.id, a.state, a.message, a.updated_at) for a in alerts(db)])
    refreshed.clear()

    report, sent = nightly(db, reader, stripe)

    assert (view(db), plans(db), [(a.id, a.state, a.message, a.updated_at) for a in alerts(db)]) == before
    assert refreshed == [] and sent == []
    assert report["counts"]["added"] == report["counts"]["missed_webhooks"] == 0
    assert report["found"] == [] and report["found_count"] == 0


def test_a_refund_note_learns_its_installment_when_the_nightly_run_finds_the_payments_invoice(db, reader):
    deliver_funnel(db, funnel_purchase())
    events, charges, links, _ = plan_payments()
    for document in events[:3]:
        deliver(db, document)
    # Payment 2's charge and its refund arrived; its invoice's webhooks did not.
    refunded = {**charges[1], "amount_refunded": 10_000, "refunded": True}
    deliver(db, event("charge.refunded", refunded, created=T0 + 31 * DAY))
    given_back = refund("re_plan2", charge_id="ch_plan2", amount=10_000, created=T0 + 31 * DAY)
    deliver(db, event("refund.created", given_back, created=T0 + 31 * DAY))
    assert "one-time payment" in note_of(db, "re_plan2")

    stripe = PagedStripe({"charges": [refunded], "invoice_payments": links[1:2], "refunds": [given_back]})
    nightly(db, reader, stripe)

    assert "installment 2 of 3" in note_of(db, "re_plan2")


def note_of(db, refund_id: str) -> str:
    with db.session() as session:
        return session.get(CustomerNote, f"refund:{refund_id}").text


def test_a_listed_charge_without_the_email_its_webhook_fetched_keeps_it_and_refreshes_nobody(
    db, reader, refreshed
):
    sale = charge("ch_guest", amount=4_900, created=T0, customer="cus_guest", description="Ebook")
    with respx.mock:
        # The webhook's charge carries no email: its handler asked Stripe for the customer's.
        respx.get(f"{API}/v1/invoice_payments").mock(
            return_value=httpx.Response(200, json={"object": "list", "has_more": False, "data": []})
        )
        respx.get(f"{API}/v1/customers/cus_guest").mock(
            return_value=httpx.Response(
                200, json={"id": "cus_guest", "object": "customer", "email": "guest@example.com"}
            )
        )
        deliver(db, event("charge.succeeded", sale, created=T0), stripe=reader)
    refreshed.clear()

    report, _ = nightly(db, reader, PagedStripe({"charges": [sale]}))

    assert [(r["charge_id"], r["customer_email"]) for r in view(db)] == [("ch_guest", "guest@example.com")]
    assert report["counts"]["already_present"] == 1 and refreshed == []


# --- disputes ------------------------------------------------------------------------------------------


def one_time_sale(charge_id: str = "ch_course", email: str = "mika@example.com") -> dict:
    return charge(
        charge_id,
        amount=19_800,
        created=T0,
        customer="cus_mika",
        description="Video course",
        billing_details={"email": email},
    )


def test_a_dispute_only_the_nightly_run_finds_raises_one_alert_and_a_second_run_raises_nothing(db, reader):
    sale = one_time_sale()
    deliver(db, event("charge.succeeded", sale, created=T0))
    dispute = stripe_dispute("dp_course", "ch_course", amount=19_800, created=T0 + DAY, due_by=T0 + 8 * DAY)
    stripe = PagedStripe({"charges": [sale], "disputes": [dispute]})

    first, sent_first = nightly(db, reader, stripe)
    second, sent_second = nightly(db, reader, stripe)

    [alert] = alerts(db)
    assert (alert.kind, alert.customer_email, alert.state) == (
        "dispute",
        "mika@example.com",
        "needs_response",
    )
    assert "Video course" in alert.message and "2026-09-29" in alert.message  # the evidence deadline
    assert sent_first == [alert.id] and sent_second == []
    assert first["counts"]["by_resource"]["disputes"]["added"] == 1
    assert second["counts"]["by_resource"]["disputes"] == {"seen": 1, "added": 0}
    assert [(r["charge_id"], r["status"]) for r in view(db)] == [("ch_course", "disputed")]


def test_a_dispute_the_nightly_run_sees_lost_updates_its_alert_and_sends_it_again(db, reader):
    sale = one_time_sale()
    deliver(db, event("charge.succeeded", sale, created=T0))
    dispute = stripe_dispute("dp_course", "ch_course", amount=19_800, created=T0 + DAY)
    deliver(db, event("charge.dispute.created", dispute, created=T0 + DAY))
    [raised] = alerts(db)

    _, sent = nightly(
        db, reader, PagedStripe({"charges": [sale], "disputes": [{**dispute, "status": "lost"}]})
    )

    [alert] = alerts(db)
    assert (alert.id, alert.state, sent) == (raised.id, "lost", [raised.id])
    assert [(r["charge_id"], r["status"]) for r in view(db)] == [("ch_course", "dispute_lost")]


def test_a_simulation_dated_ahead_of_this_clock_lists_as_of_its_own_now(db, reader):
    # Generated months: the window's events carry times after this machine's "now".
    ahead = int(datetime(2099, 3, 1, tzinfo=UTC).timestamp())
    sale = {**one_time_sale(), "created": ahead}
    dispute = stripe_dispute("dp_ahead", "ch_course", amount=19_800, created=ahead + DAY)
    deliver(db, event("charge.succeeded", sale, created=ahead))
    deliver(db, event("charge.dispute.created", dispute, created=ahead + DAY))
    closed_at = ahead + 20 * DAY  # its charge.dispute.closed never arrived
    window = (from_unix(ahead - DAY), from_unix(closed_at + DAY))

    with respx.mock:
        respx.route(host="127.0.0.1", port=12111).mock(
            side_effect=PagedStripe({"charges": [sale], "disputes": [{**dispute, "status": "lost"}]})
        )
        reconcile(db, reader, *window, as_of=window[1])

    assert [(r["charge_id"], r["status"]) for r in view(db)] == [("ch_course", "dispute_lost")]


def test_a_charge_only_the_nightly_run_finds_completes_the_alert_of_its_dispute(db, reader):
    sale = one_time_sale("ch_late", "late@example.com")
    dispute = stripe_dispute("dp_late", "ch_late", amount=19_800, created=T0 + DAY)
    deliver(db, event("charge.dispute.created", dispute, created=T0 + DAY))  # its charge never came
    [unknown] = alerts(db)
    assert unknown.customer_email is None and "not yet known" in unknown.message

    report, sent = nightly(db, reader, PagedStripe({"charges": [sale], "disputes": [dispute]}))

    [alert] = alerts(db)
    assert (alert.id, alert.customer_email, alert.product) == (unknown.id, "late@example.com", "Video course")
    assert "not yet known" not in alert.message
    assert sent == []  # the same dispute in the same state: completed in place, not news
    assert [f["id"] for f in report["found"]] == ["ch_late"]


def test_a_dispute_on_a_charge_we_never_stored_still_raises_its_alert_for_the_unknown_customer(db, reader):
    # The charge was made before the window and its webhooks never came: only the dispute is listed.
    dispute = stripe_dispute("dp_old", "ch_before_window", amount=4_900, created=T0 + DAY)
    first, sent = nightly(db, reader, PagedStripe({"disputes": [dispute]}))
    _, sent_again = nightly(db, reader, PagedStripe({"disputes": [dispute]}))

    [alert] = alerts(db)
    assert (alert.kind, alert.charge_id, alert.customer_email) == ("dispute", "ch_before_window", None)
    assert "not yet known" in alert.message and "49.00 USD" in alert.message
    assert (sent, sent_again) == ([alert.id], [])


def test_a_duplicate_whose_kept_purchase_only_the_nightly_run_finds_raises_the_access_alert(db, reader):
    kept = one_time_sale("ch_first")
    second = {**one_time_sale("ch_second"), "created": T0 + 60, "customer": "cus_mika2"}
    refunded = {**second, "amount_refunded": 19_800, "refunded": True}
    given_back = refund("re_dup", charge_id="ch_second", amount=19_800, created=T0 + 600)
    # The first purchase's webhook never came: refunding what looked like the only purchase raised nothing.
    deliver(db, event("charge.succeeded", second, created=T0 + 60))
    deliver(db, event("charge.refunded", refunded, created=T0 + 600))
    deliver(db, event("refund.created", given_back, created=T0 + 600))
    assert alerts(db) == []

    _, sent = nightly(db, reader, PagedStripe({"charges": [kept, refunded], "refunds": [given_back]}))

    [alert] = alerts(db)
    assert (alert.kind, alert.refund_id, alert.kept_charge_id) == ("access_revocation", "re_dup", "ch_first")
    assert sent == [alert.id]


# --- failed payments -------------------------------------------------------------------------------------


def test_a_failed_installment_only_the_nightly_run_finds_raises_a_payment_failed_alert(db, reader):
    deliver_funnel(db, funnel_purchase())
    events, *_ = plan_payments()
    for document in events[:3]:
        deliver(db, document)
    failed_at, retry_at = T0 + 30 * DAY, T0 + 33 * DAY
    declined = charge(
        "ch_plan2_declined",
        amount=10_000,
        status="failed",
        paid=False,
        captured=False,
        failure_code="card_declined",
        failure_message="Your card was declined.",
        payment_intent="pi_plan2",
        created=failed_at,
        customer="cus_plan",
        billing_details={"email": PLAN_EMAIL},
        description="Subscription update",
    )
    unpaid = {
        "id": "in_plan2",
        "object": "invoice",
        "customer": "cus_plan",
        "customer_email": PLAN_EMAIL,
        "currency": "usd",
        "amount_due": 10_000,
        "amount_paid": 0,
        "attempt_count": 1,
        "next_payment_attempt": retry_at,
        "billing_reason": "subscription_cycle",
        "status": "open",
        "created": failed_at,
        "status_transitions": {"paid_at": None},
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_plan"}},
        "lines": {"object": "list", "data": [{"id": "il_in_plan2", "description": "Course (3 payments)"}]},
    }
    attempt = {
        "id": "inpay_plan2",
        "object": "invoice_payment",
        "amount_paid": None,
        "amount_requested": 10_000,
        "currency": "usd",
        "created": failed_at,
        "is_default": True,
        "invoice": unpaid,
        "payment": {"type": "payment_intent", "payment_intent": "pi_plan2"},
        "status": "open",
        "status_transitions": {"canceled_at": None, "paid_at": None},
    }
    past_due = stripe_subscription(
        "sub_plan", status="past_due", created=T0 - 10, period=(failed_at, failed_at + 30 * DAY)
    )
    stripe = PagedStripe(
        {
            "charges": [declined],
            "invoice_payments": [attempt],
            "subscriptions": [{**past_due, "latest_invoice": unpaid}],
        }
    )

    report, sent = nightly(db, reader, stripe)

    assert [(r["charge_id"], r["installment"], r["status"]) for r in view(db)] == [
        ("ch_plan1", 1, "paid"),
        ("ch_plan2_declined", 2, "failed"),
    ]
    [alert] = alerts(db)
    assert (alert.kind, alert.state, alert.charge_id) == ("payment_failed", "retrying", "ch_plan2_declined")
    assert "installment 2 of 3" in alert.message and "Your card was declined" in alert.message
    assert sent == [alert.id]
    [plan] = plans(db)
    assert (plan["status"], plan["installments_paid"], plan["failed_payments"]) == ("past_due", 1, 1)
    assert plan["next_payment_attempt"] == iso(from_unix(retry_at))
    [found] = report["found"]
    assert (found["id"], found["status"], found["installment"]) == ("ch_plan2_declined", "failed", 2)


def test_an_invoice_stripe_stopped_retrying_moves_its_payment_failed_alert_to_unpaid(db, reader):
    deliver_funnel(db, funnel_purchase())
    events, *_ = plan_payments()
    for document in events[:3]:
        deliver(db, document)
    failed_at = T0 + 30 * DAY
    declined = charge(
        "ch_plan2_declined",
        amount=10_000,
        status="failed",
        paid=False,
        failure_code="card_declined",
        failure_message="Your card was declined.",
        payment_intent="pi_plan2",
        created=failed_at,
        customer="cus_plan",
        billing_details={"email": PLAN_EMAIL},
    )
    retrying = {
        "id": "in_plan2",
        "object": "invoice",
        "customer": "cus_plan",
        "customer_email": PLAN_EMAIL,
        "currency": "usd",
        "amount_due": 10_000,
        "amount_paid": 0,
        "attempt_count": 1,
        "next_payment_attempt": failed_at + 3 * DAY,
        "billing_reason": "subscription_cycle",
        "status": "open",
        "created": failed_at,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_plan"}},
        "lines": {"object": "list", "data": [{"id": "il_in_plan2", "description": "Course (3 payments)"}]},
    }
    attempt = {
        "id": "inpay_plan2",
        "object": "invoice_payment",
        "amount_paid": None,
        "amount_requested": 10_000,
        "currency": "usd",
        "created": failed_at,
        "payment": {"type": "payment_intent", "payment_intent": "pi_plan2"},
        "status": "open",
    }
    with respx.mock:
        # charge.failed names no invoice (basil): its handler asks Stripe which invoice it tried to pay.
        respx.get(f"{API}/v1/invoice_payments").mock(
            return_value=httpx.Response(
                200, json={"object": "list", "has_more": False, "data": [{**attempt, "invoice": retrying}]}
            )
        )
        deliver(db, event("charge.failed", declined, created=failed_at), stripe=reader)
    deliver(db, event("invoice.payment_failed", retrying, created=failed_at + 1))
    [raised] = alerts(db)
    assert raised.state == "retrying"

    # The seller gave up on it (no more retries); that invoice's webhook never arrived.
    given_up = {**retrying, "status": "uncollectible", "next_payment_attempt": None}
    _, sent = nightly(
        db,
        reader,
        PagedStripe({"charges": [declined], "invoice_payments": [{**attempt, "invoice": given_up}]}),
    )

    [alert] = alerts(db)
    assert (alert.id, alert.state, sent) == (raised.id, "unpaid", [raised.id])
    assert "No retry is scheduled" in alert.message


# --- found payments are named ---------------------------------------------------------------------------


def test_the_report_names_each_payment_it_found_as_installment_k_of_n(db, reader, capsys):
    deliver_first_two_payments(db)
    report, _ = nightly(db, reader, completed_plan_stripe())

    assert report["found_count"] == 1
    assert report["found"] == [
        {
            "id": "ch_plan3",
            "kind": "installment",
            "installment": 3,
            "installments_total": 3,
            "account": "platform",
            "customer_email": PLAN_EMAIL,
            "amount": 10_000,
            "currency": "usd",
            "status": "paid",
            "product": "Course (3 payments)",
            "paid_at": iso(from_unix(T0 + 60 * DAY)),
            "subscription_id": "sub_plan",
        }
    ]
    cli._print_reconcile_report(report)
    out = capsys.readouterr().out
    assert "Payments this run added: 1" in out
    assert (
        "charge ch_plan3 (installment 3 of 3, buyer@example.com, 100.00 USD): its webhook never arrived"
        in out
    )


def test_the_found_list_is_bounded_and_counts_every_payment(db, reader, capsys, monkeypatch):
    monkeypatch.setattr(handlers.reconcile, "FOUND_LISTED", 3)
    sales = [
        charge(f"ch_one{i}", amount=1_000, created=T0 + i, billing_details={"email": f"c{i}@example.com"})
        for i in range(5)
    ]
    report, _ = nightly(db, reader, PagedStripe({"charges": sales}))

    assert report["found_count"] == 5 and len(report["found"]) == 3
    assert {f["kind"] for f in report["found"]} == {"one_time"}
    cli._print_reconcile_report(report)
    out = capsys.readouterr().out
    assert "charge ch_one4 (one-time payment, c4@example.com, 10.00 USD)" in out
    assert "... and 2 more" in out


def test_each_list_costs_one_call_per_100_objects_and_one_for_an_empty_list(db, reader):
    sales = [charge(f"ch_b{i:03d}", amount=500, created=T0 + i) for i in range(250)]
    disputes = [
        stripe_dispute(f"dp_b{i:03d}", f"ch_b{i:03d}", amount=500, created=T0 + i) for i in range(150)
    ]
    subscriptions = [
        stripe_subscription(
            f"sub_b{i:03d}",
            status="canceled" if i % 2 else "active",
            created=T0 + i,
            period=(T0, T0 + 30 * DAY),
            customer=f"cus_b{i:03d}",
            ended_at=T0 + DAY if i % 2 else None,
        )
        for i in range(101)
    ]
    stripe = PagedStripe({"charges": sales, "disputes": disputes, "subscriptions": subscriptions})

    report, _ = nightly(db, reader, stripe)

    # ceil(N/100) a list, and one for each empty one (invoice payments, refunds)
    assert report["api_calls"] == stripe.calls == 3 + 2 + 2 + 1 + 1
    assert report["counts"]["by_resource"]["subscriptions"] == {"seen": 101, "added": 101}
    assert report["counts"]["by_resource"]["disputes"] == {"seen": 150, "added": 150}

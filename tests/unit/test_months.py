"""The seller-month generator: deterministic per seed, its truth agrees with its Stripe objects and its
deliveries, both API shapes arrive, and seeds 0..49 between them hold every scenario."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from stripe_standin import StandinServer
from stripe_standin.months import (
    SCENARIOS,
    Month,
    TruthSale,
    main,
    make_month,
    month_summary,
)
from stripe_standin.render import LATEST, is_pre_basil, render
from stripe_standin.store import Store

# stripe-python 16.1.0's HTTPXClient posts form bodies as `data=bytes`, which httpx 0.28 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

SEEDS = range(50)
COUNTED = {"succeeded", "pending", "requires_action"}
OPEN_DISPUTES = {"needs_response", "under_review", "warning_needs_response", "warning_under_review"}
EVENT_TYPES = {
    "charge.succeeded", "charge.failed", "charge.refunded", "charge.refund.updated", "refund.created",
    "refund.updated", "refund.failed", "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed",
    "invoice.voided", "invoice_payment.paid", "customer.subscription.created",
    "customer.subscription.updated", "customer.subscription.deleted", "charge.dispute.created",
    "charge.dispute.updated", "charge.dispute.closed", "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
}  # fmt: skip
DAY = 86_400


@pytest.fixture(scope="module")
def months() -> list[Month]:
    return [make_month(seed) for seed in SEEDS]


def every(store: Store, collection: str) -> list[dict[str, Any]]:
    return store.list(collection, limit=10**9)[0]


def by_id(store: Store, collection: str) -> dict[str, dict[str, Any]]:
    return {obj["id"]: obj for obj in every(store, collection)}


def invoice_of_intent(store: Store, intent: str | None) -> dict[str, Any] | None:
    payments, _ = (
        store.list("invoice_payments", where={"payment_intent": intent}, limit=1) if intent else ([], 0)
    )
    return store.get("invoices", payments[0]["invoice"]) if payments else None


def subscription_of(invoice: dict[str, Any]) -> str:
    return invoice["parent"]["subscription_details"]["subscription"]


def stripe_events(month: Month) -> list[dict[str, Any]]:
    return [delivery.body for delivery in month.deliveries if delivery.kind == "stripe"]


def funnel_purchases(month: Month) -> list[dict[str, Any]]:
    return [d.body.get("purchase", d.body) for d in month.deliveries if d.kind == "funnel"]


def csv_rows(month: Month) -> list[dict[str, str]]:
    rows = []
    for delivery in month.deliveries:
        if delivery.kind == "csv":
            rows += list(csv.DictReader(io.StringIO(delivery.body)))
    return rows


# -- determinism and speed ------------------------------------------------------------------------------


def as_json(month: Month) -> str:
    return json.dumps(
        {
            "deliveries": [(d.kind, d.body) for d in month.deliveries],
            "truth": repr(month.truth),
            "objects": {name: every(month.store, name) for name in month.store.counts()},
        },
        sort_keys=True,
        default=str,
    )


def test_the_same_seed_makes_the_same_month_to_the_byte(months):
    assert as_json(make_month(7)) == as_json(months[7])


def test_the_same_seed_makes_the_same_month_in_another_process_whatever_its_hash_seed(months):
    digest = (
        "import hashlib, sys; from tests.unit.test_months import as_json; "
        "from stripe_standin.months import make_month; "
        "sys.stdout.write(hashlib.sha256(as_json(make_month(7)).encode()).hexdigest())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", digest],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            cwd=Path(__file__).resolve().parents[2],
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert runs == {hashlib.sha256(as_json(months[7]).encode()).hexdigest()}


def test_different_seeds_make_different_months(months):
    assert len({as_json(month) for month in months[:5]}) == 5


def test_a_40_purchase_month_takes_well_under_half_a_second():
    began = time.perf_counter()
    for seed in range(100, 105):
        make_month(seed)
    assert (time.perf_counter() - began) / 5 < 0.25


def test_purchases_sets_how_many_funnel_orders_the_month_has():
    truth = make_month(3, purchases=12).truth
    first_payments = [s for s in truth.sales if s.installment in (None, 1) and s.status != "failed"]
    assert len(first_payments) == 12


# -- the truth agrees with the objects ------------------------------------------------------------------


def test_every_object_was_created_within_the_month(months):
    for month in months:
        for collection in month.store.counts():
            for obj in every(month.store, collection):
                assert month.start <= obj["created"] < month.end, (month.seed, obj["id"])


def test_every_payment_attempt_is_one_sale_with_its_charge_amount_currency_and_outcome(months):
    for month in months:
        charges = by_id(month.store, "charges")
        customers = by_id(month.store, "customers")
        assert {sale.charge_id for sale in month.truth.sales} == charges.keys()
        for sale in month.truth.sales:
            charge = charges[sale.charge_id]
            assert (sale.amount, sale.currency, sale.payment_intent_id) == (
                charge["amount"], charge["currency"], charge["payment_intent"]
            )  # fmt: skip
            assert (sale.status == "failed") == (charge["status"] == "failed")
            assert sale.customer_email == customers[charge["customer"]]["email"].strip().lower()
            assert sale.customer_email == sale.customer_email.strip().lower()


def test_refunded_amounts_notes_and_totals_are_those_of_the_refund_objects(months):
    for month in months:
        truth, charges, refunds = month.truth, by_id(month.store, "charges"), every(month.store, "refunds")
        counted = Counter()
        for refund in refunds:
            if refund["status"] in COUNTED:
                counted[refund["charge"]] += refund["amount"]
        for sale in truth.sales:
            assert (
                sale.refunded_amount
                == counted[sale.charge_id]
                == charges[sale.charge_id].get("amount_refunded", 0)
            )
        assert truth.notes == {f"refund:{refund['id']}": refund["status"] for refund in refunds}
        gross, refunded = Counter(), Counter()
        for charge in charges.values():
            if charge["status"] == "succeeded":
                gross[charge["currency"]] += charge["amount"]
                refunded[charge["currency"]] += counted[charge["id"]]
        assert truth.gross == dict(gross)
        assert truth.refunded == {currency: amount for currency, amount in refunded.items() if amount}


def expected_status(sale: TruthSale, store: Store) -> str:
    if sale.status == "failed":
        return "failed"
    disputes = {d["status"] for d in store.list("disputes", where={"charge": sale.charge_id}, limit=100)[0]}
    if "lost" in disputes:
        return "dispute_lost"
    if disputes & OPEN_DISPUTES:
        return "disputed"
    if sale.refunded_amount >= sale.amount:
        return "refunded"
    return "partially_refunded" if sale.refunded_amount else "paid"


def test_a_sale_status_is_its_dispute_then_its_refunds(months):
    for month in months:
        for sale in month.truth.sales:
            assert sale.status == expected_status(sale, month.store), (month.seed, sale.charge_id)


def test_installment_numbers_count_the_subscription_invoices_a_payment_tried_to_pay(months):
    for month in months:
        invoices_of = defaultdict(list)
        for invoice in every(month.store, "invoices"):
            invoices_of[subscription_of(invoice)].append(invoice)
        for sale in month.truth.sales:
            invoice = invoice_of_intent(month.store, sale.payment_intent_id)
            if sale.kind == "one_time":
                assert invoice is None and sale.installment is None and sale.subscription_id is None
                continue
            assert sale.subscription_id == subscription_of(invoice)
            ordered = sorted(invoices_of[sale.subscription_id], key=lambda i: i["created"])
            assert sale.installment == ordered.index(invoice) + 1
            assert (sale.kind == "installment") == (sale.installments_total is not None)


def test_plans_match_their_subscriptions_invoices_and_failed_attempts(months):
    for month in months:
        store = month.store
        subscriptions = by_id(store, "subscriptions")
        assert {plan.subscription_id for plan in month.truth.plans} == subscriptions.keys()
        for plan in month.truth.plans:
            subscription = subscriptions[plan.subscription_id]
            invoices = store.list("invoices", where={"subscription": plan.subscription_id}, limit=100)[0]
            payments = [
                p for i in invoices for p in store.list("invoice_payments", where={"invoice": i["id"]})[0]
            ]
            intents = {payment["payment"]["payment_intent"] for payment in payments}
            failed = [
                c
                for c in every(store, "charges")
                if c["payment_intent"] in intents and c["status"] == "failed"
            ]
            assert plan.installments_paid == sum(1 for i in invoices if i["status"] == "paid")
            assert plan.failed_payments == len(failed)
            if subscription["status"] != "canceled":
                assert plan.status == subscription["status"] and plan.access_ends_at is None
            elif plan.status == "completed":
                assert plan.installments_paid == plan.installments_total and plan.access_ends_at is None
            else:
                assert plan.status == "cancelled"
                period_end = subscription["items"]["data"][0]["current_period_end"]
                assert plan.access_ends_at in (subscription["canceled_at"], period_end)


def test_alerts_name_every_dispute_and_every_invoice_with_a_failed_attempt(months):
    for month in months:
        alerts = {alert.key: alert for alert in month.truth.alerts}
        for dispute in every(month.store, "disputes"):
            alert = alerts[f"dispute:{dispute['id']}"]
            assert (alert.charge_id, alert.dispute_status) == (dispute["charge"], dispute["status"])
        failed_invoices = {
            invoice_of_intent(month.store, sale.payment_intent_id)["id"]
            for sale in month.truth.sales
            if sale.status == "failed"
        }
        assert {key for key in alerts if key.startswith("payment_failed:")} == {
            f"payment_failed:{invoice}" for invoice in failed_invoices
        }


def first_payments_by_buyer_and_product(month: Month) -> dict[tuple[str, str], list[TruthSale]]:
    groups = defaultdict(list)
    for sale in month.truth.sales:
        if sale.source == "funnel":
            groups[(sale.customer_email, sale.product)].append(sale)
    return groups


def test_access_alerts_follow_the_rule_for_two_purchases_of_one_product(months):
    for month in months:
        charges = by_id(month.store, "charges")
        refunds = by_id(month.store, "refunds")
        expected = set()
        for sales in first_payments_by_buyer_and_product(month).values():
            for refunded in sales:
                for kept in sales:
                    days_apart = (
                        abs(charges[refunded.charge_id]["created"] - charges[kept.charge_id]["created"]) / DAY
                    )
                    fully_refunded = refunded.refunded_amount >= refunded.amount
                    still_paid = kept.status != "failed" and kept.refunded_amount < kept.amount
                    if kept is not refunded and days_apart <= 30 and fully_refunded and still_paid:
                        expected.add((refunded.charge_id, kept.charge_id))
        alerts = [a for a in month.truth.alerts if a.kind == "access_revocation"]
        assert {(a.charge_id, a.kept_charge_id) for a in alerts} == expected
        for alert in alerts:
            refund = refunds[alert.key.removeprefix("access_revocation:")]
            assert refund["charge"] == alert.charge_id and refund["status"] in COUNTED
            assert alert.customer_email == next(
                s.customer_email for s in month.truth.sales if s.charge_id == alert.charge_id
            )


# -- events and deliveries ------------------------------------------------------------------------------


def test_every_month_delivers_events_in_both_api_shapes(months):
    for month in months:
        versions = {event["api_version"] for event in stripe_events(month)}
        assert LATEST in versions and any(is_pre_basil(version) for version in versions)


def test_events_show_their_object_in_their_own_api_version(months):
    for month in months:
        for event in every(month.store, "events"):
            obj, old = event["data"]["object"], is_pre_basil(event["api_version"])
            assert event["type"] in EVENT_TYPES
            if obj["object"] == "invoice":
                assert ("subscription" in obj and "charge" in obj) == old
                assert ("parent" in obj) != old
            if obj["object"] == "charge":
                assert ("invoice" in obj) == old
            if obj["object"] == "subscription":
                assert ("current_period_end" in obj) == old
            if event["type"].startswith("refund."):
                assert event["api_version"][:10] >= "2024-10-28"  # refund.* for charges only from acacia
            if event["type"] == "invoice_payment.paid":
                assert event["api_version"] == LATEST


def test_an_event_shows_its_object_as_it_was_then(months):
    for month in months:
        for event in every(month.store, "events"):
            obj, kind = event["data"]["object"], event["type"]
            if kind == "charge.succeeded":
                assert obj["amount_refunded"] == 0 and obj["refunded"] is False and obj["disputed"] is False
            if kind == "invoice.payment_failed":
                assert obj["status"] == "open" and obj["attempt_count"] >= 1
            if kind == "invoice.payment_failed" and is_pre_basil(event["api_version"]):
                assert month.store.get("charges", obj["charge"])["status"] == "failed"
            if kind in ("invoice.paid", "invoice.payment_succeeded"):
                assert obj["status"] == "paid"
            if kind == "charge.failed":
                assert obj["status"] == "failed" and obj["failure_code"] and obj["failure_message"]
            if kind == "customer.subscription.updated" and "status" in event["data"]["previous_attributes"]:
                assert obj["status"] != event["data"]["previous_attributes"]["status"]


def test_a_recovered_retry_is_a_new_charge_on_the_same_intent_paying_the_same_installment(months):
    month, invoice = next(
        (m, i)
        for m in months
        for i in every(m.store, "invoices")
        if i["status"] == "paid" and i["attempt_count"] > 1
    )
    intent = month.store.list("invoice_payments", where={"invoice": invoice["id"]})[0][0]["payment"][
        "payment_intent"
    ]
    sales = sorted((s for s in month.truth.sales if s.payment_intent_id == intent), key=lambda s: s.status)
    assert [s.status for s in sales][-1] != "failed" and len(sales) == invoice["attempt_count"]
    assert {s.installment for s in sales} == {sales[0].installment} and len(
        {s.charge_id for s in sales}
    ) == len(sales)
    statuses = [
        (e["data"]["previous_attributes"]["status"], e["data"]["object"]["status"])
        for e in every(month.store, "events")[::-1]
        if e["type"] == "customer.subscription.updated"
        and e["data"]["object"]["id"] == subscription_of(invoice)
        and "status" in e["data"]["previous_attributes"]
        and invoice["created"] <= e["created"] <= invoice["status_transitions"]["paid_at"]
    ]
    assert statuses == [("active", "past_due"), ("past_due", "active")]


def test_a_failed_refund_takes_back_nothing_and_lowers_the_charge_again(months):
    failed_refunds = 0
    for month in months:
        for refund in every(month.store, "refunds"):
            if refund["status"] != "failed":
                continue
            failed_refunds += 1
            events = [e for e in every(month.store, "events") if e["data"]["object"]["id"] == refund["id"]]
            assert "charge.refund.updated" in {e["type"] for e in events}
            refunded_before_failing = [
                e["data"]["object"]["amount_refunded"]
                for e in every(month.store, "events")
                if e["type"] == "charge.refunded" and e["data"]["object"]["id"] == refund["charge"]
            ]
            charge = month.store.get("charges", refund["charge"])
            assert max(refunded_before_failing) >= refund["amount"]
            assert charge["amount_refunded"] == sum(
                r["amount"] for r in month.store.list("refunds", where={"charge": charge["id"]})[0]
                if r["status"] in COUNTED
            )  # fmt: skip
    assert failed_refunds


def test_deliveries_drop_repeat_and_reorder_events_that_the_store_still_holds(months):
    for month in months:
        stored = by_id(month.store, "events")
        delivered = stripe_events(month)
        for event in delivered:
            assert event == json.loads(json.dumps(render(stored[event["id"]], LATEST, month.store)))
        times = Counter(event["id"] for event in delivered)
        assert len(times) < len(stored)
        assert any(count > 1 for count in times.values())
        assert any(a["created"] > b["created"] for a, b in zip(delivered, delivered[1:], strict=False))


def test_each_delivery_has_its_own_copy_of_its_body():
    month = make_month(0)
    bodies = stripe_events(month)
    repeated = next(e for e in bodies if sum(1 for other in bodies if other["id"] == e["id"]) > 1)
    first, second = [e for e in bodies if e["id"] == repeated["id"]][:2]
    first["data"]["object"]["id"] = "changed by a consumer"
    assert second["data"]["object"]["id"] != "changed by a consumer"
    assert month.store.get("events", first["id"])["data"]["object"]["id"] != "changed by a consumer"


def test_funnel_records_name_the_first_payment_of_their_purchase(months):
    for month in months:
        sales = {sale.charge_id: sale for sale in month.truth.sales}
        firsts = {s.funnel_purchase_id: s for s in month.truth.sales if s.source == "funnel"}
        for purchase in funnel_purchases(month):
            first = firsts[str(purchase["id"])]
            product = purchase["products"][0]
            assert product["name"] == first.product
            assert purchase["contact"]["email"].strip().lower() == first.customer_email
            assert purchase.get("subscription_id") == first.subscription_id
            assert purchase.get("charge_id") in (first.charge_id, first.payment_intent_id, None)
            if first.kind == "installment":
                assert product["stripe_cancel_after_payments"] == first.installments_total
        for row in csv_rows(month):
            first = firsts[row["Order ID"]]
            assert row["Product"] == first.product
            assert row["Stripe Charge ID"] in (first.charge_id, first.payment_intent_id or "", "")
            assert row["Subscription ID"] == (first.subscription_id or "")
        for sale in sales.values():
            if sale.funnel_purchase_id is not None:
                assert firsts[sale.funnel_purchase_id].customer_email == sale.customer_email


def test_every_payment_of_a_recorded_subscription_carries_its_funnel_id(months):
    for month in months:
        first_of = {s.subscription_id: s for s in month.truth.sales if s.installment == 1}
        for sale in month.truth.sales:
            if sale.subscription_id:
                first = first_of[sale.subscription_id]
                assert sale.funnel_purchase_id == first.funnel_purchase_id
                assert sale.source == ("funnel" if sale is first and first.funnel_purchase_id else "stripe")


# -- coverage -------------------------------------------------------------------------------------------


def test_seeds_0_to_49_together_hold_every_scenario(months):
    totals = Counter()
    for month in months:
        summary = month_summary(month)
        totals.update({key: summary[key] for key in SCENARIOS})
    missing = [key for key in SCENARIOS if not totals[key]]
    assert not missing, totals


def test_seeds_0_to_49_send_every_event_type(months):
    sent = set()
    for month in months:
        sent |= {event["type"] for event in every(month.store, "events")}
    assert sent == EVENT_TYPES


# -- serving a month ------------------------------------------------------------------------------------


def test_the_stand_in_serves_a_month_disputes_and_all_its_subscriptions(months):
    month = next(m for m in months if m.store.count("disputes"))
    dispute = every(month.store, "disputes")[0]
    with StandinServer(month.store) as server:
        client = server.client(max_network_retries=0)
        listed = client.v1.disputes.list(params={"charge": dispute["charge"]})
        subscriptions = client.v1.subscriptions.list(params={"status": "all", "limit": 100})
        retrieved = client.v1.disputes.retrieve(dispute["id"])
    assert [d.id for d in listed.data] == [dispute["id"]]
    assert retrieved.evidence_details.due_by == dispute["evidence_details"]["due_by"]
    assert len(subscriptions.data) == len(month.truth.plans)


def test_the_command_prints_the_month_summary_as_json(capsys):
    assert main(["--seed", "3", "--purchases", "10"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 3 and set(SCENARIOS) <= summary.keys()

"""Scenario counts of a generated month, read from what it delivers, stores and claims as truth.

They are read back from the Month rather than from how it was made, so a count is also a check that the
scenario reached the deliveries and objects a tool sees.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from stripe_standin.months_facts import COUNTED_REFUND_STATUSES
from stripe_standin.render import is_pre_basil
from stripe_standin.store import Store

if TYPE_CHECKING:
    from stripe_standin.months import Month, Truth

NEVER = 50_000_000  # ClickFunnels' "cancel after" for a subscription that never ends

# Scenario counts that seeds 0..49 must all have above zero between them (tests/unit/test_months.py).
SCENARIOS = (
    "one_time_sales", "installment_sales", "subscription_sales", "plans_3_payments", "plans_6_payments",
    "open_ended_cancel_after_huge", "open_ended_cancel_after_null", "funnel_charge_id_ch",
    "funnel_charge_id_pi", "funnel_charge_id_absent", "funnel_flat_bodies", "funnel_webhook_duplicates",
    "csv_only_purchases", "webhook_and_csv_purchases", "unrecorded_purchases",
    "emails_with_several_customers", "mixed_case_emails", "currency_jpy", "currency_usd", "currency_eur",
    "charges_without_payment_intent", "duplicate_refunds", "access_alerts",
    "same_product_pairs_without_alert", "refunds_full", "refunds_partial", "refunds_in_two_parts",
    "refunds_failed", "refunds_pending", "refunds_settled_later", "failed_payments", "retries_recovered",
    "plans_unpaid", "plans_completed", "plans_active", "plans_cancelled_unpaid", "plans_cancelled_paid_up",
    "cancelled_at_period_end", "invoices_voided", "disputes_won", "disputes_lost", "disputes_open",
    "inquiries_closed", "inquiries_refunded", "disputes_escalated", "disputes_charge_event_dropped",
    "disputes_charge_event_late", "events_pre_basil", "events_latest", "events_dropped",
    "events_duplicated", "events_out_of_order",
)  # fmt: skip


def month_summary(month: Month) -> dict[str, Any]:
    """Scenario counts read from the month's deliveries, objects and truth (not from how it was made)."""
    summary: dict[str, Any] = {"seed": month.seed}
    summary.update(_funnel_counts(month))
    summary.update(_truth_counts(month.truth))
    summary.update(_object_counts(month.store, month.truth))
    summary.update(_delivery_counts(month))
    return summary


def _purchase_of(body: dict[str, Any]) -> dict[str, Any]:
    return body.get("purchase", body)


def _csv_order_ids(month: Month) -> set[str]:
    ids = set()
    for delivery in month.deliveries:
        if delivery.kind == "csv":
            ids |= {row["Order ID"] for row in csv.DictReader(io.StringIO(delivery.body))}
    return ids


def _funnel_counts(month: Month) -> dict[str, int]:
    bodies = [delivery.body for delivery in month.deliveries if delivery.kind == "funnel"]
    orders = {str(_purchase_of(body)["id"]): _purchase_of(body) for body in bodies}
    products = [order["products"][0] for order in orders.values()]
    # A plan's N is small; "never" is null or a huge number.
    open_ended = [
        p for p in products if p["stripe_plan"] and (p["stripe_cancel_after_payments"] or NEVER) >= NEVER
    ]
    references = Counter((order.get("charge_id") or "none")[:3] for order in orders.values())
    csv_ids = _csv_order_ids(month)
    return {
        "funnel_webhooks": len(orders),
        "funnel_webhook_duplicates": len(bodies) - len(orders),
        "funnel_flat_bodies": sum(1 for body in bodies if "purchase" not in body),
        "funnel_charge_id_ch": references["ch_"],
        "funnel_charge_id_pi": references["pi_"],
        "funnel_charge_id_absent": references["non"],
        "open_ended_cancel_after_huge": sum(1 for p in open_ended if p["stripe_cancel_after_payments"]),
        "open_ended_cancel_after_null": sum(
            1 for p in open_ended if p["stripe_cancel_after_payments"] is None
        ),
        "mixed_case_emails": sum(
            1 for o in orders.values() if o["contact"]["email"] != o["contact"]["email"].lower()
        ),
        "csv_exports": sum(1 for delivery in month.deliveries if delivery.kind == "csv"),
        "csv_only_purchases": len(csv_ids - orders.keys()),
        "webhook_and_csv_purchases": len(csv_ids & orders.keys()),
    }


def _truth_counts(truth: Truth) -> dict[str, int]:
    sales, plans = truth.sales, truth.plans
    kinds = Counter(sale.kind for sale in sales)
    statuses = Counter(sale.status for sale in sales)
    plan_statuses = Counter(plan.status for plan in plans)
    alerts = Counter(alert.kind for alert in truth.alerts)
    disputes = Counter(alert.dispute_status for alert in truth.alerts if alert.kind == "dispute")
    notes = Counter(truth.notes.values())
    alerted = {alert.charge_id for alert in truth.alerts if alert.kind == "access_revocation"}
    alerted |= {alert.kept_charge_id for alert in truth.alerts if alert.kind == "access_revocation"}
    pairs: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for sale in sales:
        if sale.source == "funnel":
            pairs[(sale.customer_email, sale.product)].append(sale.charge_id)
    return {
        "sales": len(sales),
        "one_time_sales": kinds["one_time"],
        "installment_sales": kinds["installment"],
        "subscription_sales": kinds["subscription"],
        "plans_3_payments": sum(1 for plan in plans if plan.installments_total == 3),
        "plans_6_payments": sum(1 for plan in plans if plan.installments_total == 6),
        "unrecorded_purchases": sum(
            1 for s in sales if s.funnel_purchase_id is None and s.installment in (None, 1)
        ),
        "currency_jpy": sum(1 for s in sales if s.currency == "jpy" and s.status != "failed"),
        "currency_usd": sum(1 for s in sales if s.currency == "usd" and s.status != "failed"),
        "currency_eur": sum(1 for s in sales if s.currency == "eur" and s.status != "failed"),
        "charges_without_payment_intent": sum(1 for sale in sales if sale.payment_intent_id is None),
        **{f"sales_{status}": count for status, count in sorted(statuses.items())},
        "refunds_full": statuses["refunded"],
        "refunds_partial": statuses["partially_refunded"],
        "refunds_failed": notes["failed"],
        "refunds_pending": notes["pending"],
        "failed_payments": statuses["failed"],
        "plans_active": plan_statuses["active"],
        "plans_past_due": plan_statuses["past_due"],
        "plans_unpaid": plan_statuses["unpaid"],
        "plans_completed": plan_statuses["completed"],
        "access_alerts": alerts["access_revocation"],
        "dispute_alerts": alerts["dispute"],
        "payment_failed_alerts": alerts["payment_failed"],
        "same_product_pairs_without_alert": sum(
            1 for charges in pairs.values() if len(charges) > 1 and not alerted & set(charges)
        ),
        "disputes_won": disputes["won"],
        "disputes_lost": disputes["lost"],
        "disputes_open": disputes["needs_response"] + disputes["under_review"],
        "inquiries_open": disputes["warning_needs_response"] + disputes["warning_under_review"],
        "inquiries_closed": disputes["warning_closed"],
    }


def _object_counts(store: Store, truth: Truth) -> dict[str, int]:
    refunds = store.list("refunds", limit=10**9)[0]
    charges = {charge["id"]: charge for charge in store.list("charges", limit=10**9)[0]}
    invoices = store.list("invoices", limit=10**9)[0]
    subscriptions = store.list("subscriptions", limit=10**9)[0]
    customers = store.list("customers", limit=10**9)[0]
    events = store.list("events", limit=10**9)[0]
    counted_refunds = Counter(
        r["charge"] for r in refunds if r.get("status", "succeeded") in COUNTED_REFUND_STATUSES
    )
    people = Counter((customer.get("email") or "").strip().lower() for customer in customers)
    settled = {e["data"]["object"]["id"] for e in events if e["type"] == "charge.refund.updated"}
    disputes = store.list("disputes", limit=10**9)[0]
    escalated = [
        e for e in events
        if e["type"] == "charge.dispute.updated"
        and (e["data"].get("previous_attributes") or {}).get("status", "").startswith("warning")
        and e["data"]["object"]["status"] == "needs_response"
    ]  # fmt: skip
    canceled_at = {s["id"]: s.get("canceled_at") for s in subscriptions}
    cancelled = [plan for plan in truth.plans if plan.status == "cancelled"]
    # Cancelled with money outstanding, access ends at the cancellation; paid up, with the period.
    unpaid_cancels = sum(1 for plan in cancelled if plan.access_ends_at == canceled_at[plan.subscription_id])
    return {
        "customers": len(customers),
        "plans_cancelled_unpaid": unpaid_cancels,
        "plans_cancelled_paid_up": len(cancelled) - unpaid_cancels,
        "emails_with_several_customers": sum(1 for count in people.values() if count > 1),
        "duplicate_refunds": sum(1 for refund in refunds if refund.get("reason") == "duplicate"),
        "refunds_in_two_parts": sum(
            1
            for charge_id, count in counted_refunds.items()
            if count > 1 and charges[charge_id].get("refunded")
        ),
        "refunds_settled_later": sum(
            1 for r in refunds if r["id"] in settled and r.get("status") == "succeeded"
        ),
        "retries_recovered": sum(
            1 for i in invoices if i.get("status") == "paid" and i.get("attempt_count", 0) > 1
        ),
        "invoices_voided": sum(1 for invoice in invoices if invoice.get("status") == "void"),
        "cancelled_at_period_end": sum(
            1 for s in subscriptions if s.get("status") == "canceled" and s.get("cancel_at_period_end")
        ),
        "inquiries_refunded": sum(
            1 for d in disputes if d["status"].startswith("warning") and charges[d["charge"]].get("refunded")
        ),
        "disputes_escalated": len(escalated),
        "events": len(events),
        "events_pre_basil": sum(1 for event in events if is_pre_basil(event["api_version"])),
        "events_latest": sum(1 for event in events if not is_pre_basil(event["api_version"])),
    }


def _delivery_counts(month: Month) -> dict[str, Any]:
    stored = month.store.list("events", limit=10**9)[0]
    delivered = [delivery.body for delivery in month.deliveries if delivery.kind == "stripe"]
    times = Counter(event["id"] for event in delivered)
    position: dict[tuple[str, str], int] = {}
    for index, event in enumerate(delivered):
        position.setdefault((event["type"], event["data"]["object"]["id"]), index)
    dropped = late = 0
    for dispute in month.store.list("disputes", limit=10**9)[0]:
        charge_at = position.get(("charge.succeeded", dispute["charge"]))
        opened_at = position.get(("charge.dispute.created", dispute["id"]))
        dropped += charge_at is None
        late += charge_at is not None and opened_at is not None and charge_at > opened_at
    newest, out_of_order = 0, 0
    for event in delivered:
        out_of_order += event["created"] < newest
        newest = max(newest, event["created"])
    return {
        "old_api_version": next((e["api_version"] for e in stored if is_pre_basil(e["api_version"])), None),
        "stripe_deliveries": len(delivered),
        "events_dropped": len(stored) - len(times),
        "events_duplicated": sum(1 for count in times.values() if count > 1),
        "events_out_of_order": out_of_order,
        "disputes_charge_event_dropped": dropped,
        "disputes_charge_event_late": late,
        "event_types": dict(sorted(Counter(event["type"] for event in stored).items())),
    }

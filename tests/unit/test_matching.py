"""The rules that tie funnel purchases to Stripe payments (handlers/matching.py), table by table.

Each case is a customer's funnel records and Stripe payments as they could really arrive, and the
sales they must make: which charge is each sale's own payment, and which sales still show as a
funnel row because their payment has not arrived.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from handlers.matching import FunnelRecord, Payment, match

T = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def pay(charge_id, intent=None, *, at=0, subscription=None, reason=None, ok=True) -> Payment:
    return Payment(
        charge_id=charge_id,
        payment_intent_id=intent,
        succeeded=ok,
        created=T + timedelta(days=at),
        subscription_id=subscription,
        billing_reason=reason,
    )


def funnel(purchase, name="Course", *, payment=None, subscription=None, origin="webhook", key=None):
    return FunnelRecord(
        purchase_id=purchase,
        product_key=key or (name if origin == "import" else "77"),
        product_name=name,
        payment_id=payment,
        subscription_id=subscription,
        purchased_at=T,
        origin=origin,
    )


CASES = {
    "a ch_ id matches the charge itself": (
        [funnel("1", payment="ch_1")],
        [pay("ch_1", "pi_1")],
        {"1": "ch_1"},
        [],
    ),
    "a pi_ id matches the charge of that payment intent": (
        [funnel("1", payment="pi_1")],
        [pay("ch_1", "pi_1")],
        {"1": "ch_1"},
        [],
    ),
    "of a failed attempt and its retry on one intent, the retry is the sale's": (
        [funnel("1", payment="pi_1")],
        [pay("ch_failed", "pi_1", ok=False), pay("ch_ok", "pi_1", at=1)],
        {"1": "ch_ok"},
        [],
    ),
    "a subscription id alone is the subscription_create invoice's charge": (
        [funnel("1", subscription="sub_1")],
        [
            pay("ch_2", "pi_2", at=30, subscription="sub_1", reason="subscription_cycle"),
            pay("ch_1", "pi_1", at=0, subscription="sub_1", reason="subscription_create"),
        ],
        {"1": "ch_1"},
        [],
    ),
    "without billing reasons, the earliest paid charge of the subscription": (
        [funnel("1", subscription="sub_1")],
        [pay("ch_2", at=30, subscription="sub_1"), pay("ch_1", at=0, subscription="sub_1")],
        {"1": "ch_1"},
        [],
    ),
    "a renewal is never taken for the first payment while the first has not arrived": (
        [funnel("1", subscription="sub_1")],
        [pay("ch_2", at=30, subscription="sub_1", reason="subscription_cycle")],
        {"1": None},
        ["1"],
    ),
    "a payment that has not arrived leaves one funnel row": (
        [funnel("1", payment="pi_late")],
        [pay("ch_other", "pi_other")],
        {"1": None},
        ["1"],
    ),
    "the webhook and the export of one purchase are one sale": (
        [funnel("1", payment="pi_1"), funnel("1", origin="import")],
        [],
        {"1": None},
        ["1"],
    ),
    "the export row alone still matches by its payment id": (
        [funnel("1", origin="import", payment="ch_1"), funnel("1")],
        [pay("ch_1", "pi_1")],
        {"1": "ch_1"},
        [],
    ),
    "two purchases of one product are two sales": (
        [funnel("1", payment="pi_1"), funnel("2", payment="pi_2")],
        [pay("ch_1", "pi_1"), pay("ch_2", "pi_2", at=0.01)],
        {"1": "ch_1", "2": "ch_2"},
        [],
    ),
    "a failed charge alone is not a sale's payment": (
        [funnel("1", payment="ch_declined")],
        [pay("ch_declined", "pi_1", ok=False)],
        {"1": None},
        ["1"],
    ),
    "a purchase with no ids is not hidden by a charge without a payment intent": (
        [funnel("1", payment="ch_legacy"), funnel("2", "Other")],
        [pay("ch_legacy", None)],
        {"1": "ch_legacy", "2": None},
        ["2"],
    ),
    "an order bump on the same checkout payment adds no second row": (
        [funnel("1", "Course", payment="pi_1", key="77"), funnel("1", "Bump", payment="pi_1", key="78")],
        [pay("ch_1", "pi_1")],
        {"1": "ch_1"},
        [],
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_matching_rules(case):
    records, payments, own_payments, funnel_rows = CASES[case]
    matches = match(records, payments)
    own = {}
    for sale in matches.sales:
        own.setdefault(sale.purchase_id, sale.payment)
    assert own == own_payments
    assert sorted(s.purchase_id for s in matches.unpaid_sales()) == funnel_rows


def test_every_later_payment_of_a_subscription_belongs_to_the_sale_that_bought_it():
    matches = match(
        [funnel("1", subscription="sub_1")],
        [
            pay("ch_1", at=0, subscription="sub_1", reason="subscription_create"),
            pay("ch_2", at=30, subscription="sub_1", reason="subscription_cycle"),
            pay("ch_3f", "pi_3", at=60, subscription="sub_1", reason="subscription_cycle", ok=False),
            pay("ch_x", at=1, subscription="sub_other"),
        ],
    )
    owned = {charge: (sale.purchase_id, own) for charge, (sale, own) in matches.sale_of_charge.items()}
    assert owned == {"ch_1": ("1", True), "ch_2": ("1", False), "ch_3f": ("1", False)}


def test_a_payment_is_never_the_own_payment_of_two_sales():
    # Two funnel records of different purchases naming the same payment (a data-entry slip): the
    # first purchase keeps it and the second shows as its own funnel row, never a doubled payment.
    matches = match(
        [funnel("1", "A", payment="pi_1"), funnel("2", "B", subscription="sub_1")],
        [pay("ch_1", "pi_1", subscription="sub_1", reason="subscription_create")],
    )
    owners = [sale.purchase_id for sale in matches.sales if sale.payment == "ch_1"]
    assert owners == ["1"]

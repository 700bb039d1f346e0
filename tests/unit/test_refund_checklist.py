"""The customer page's "before you refund" panel: the seed article's checks, answered from the rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from handlers.sales_view import SaleRow
from worker.dashboard.customer_record import refund_checks

WINDOW = timedelta(days=30)
DAY = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def sale(
    charge_id: str, *, product="Video course", at=DAY, refunded=0, kind="one_time", k=None, n=None, **more
):
    status = "refunded" if refunded >= 19_800 else "paid"
    return SaleRow(
        charge_id=charge_id,
        payment_intent_id="pi_" + charge_id[3:],
        customer_email="mika@example.com",
        product=product,
        amount=19_800,
        currency="usd",
        paid_at=at,
        source="funnel",
        kind=kind,
        installment=k,
        installments_total=n,
        subscription_id="sub_1" if kind == "installment" else None,
        invoice_id=None,
        refunded_amount=refunded,
        funnel_purchase_id=None,
        status=more.pop("status", status),
        **more,
    )


@dataclass
class Dispute:
    status: str
    is_charge_refundable: bool


def answers(row, rows, disputes=None) -> dict[str, tuple[str, str]]:
    return {c.topic: (c.level, c.key) for c in refund_checks(row, rows, disputes or {}, WINDOW)}


def test_a_duplicate_still_paid_twice_warns_that_access_is_at_risk():
    first, second = sale("ch_video1"), sale("ch_video2", at=DAY + timedelta(minutes=1))
    got = answers(second, [first, second])
    assert got["check_duplicate"] == ("warn", "dup_yes")
    assert got["check_access"] == ("warn", "access_risk")


def test_after_one_copy_is_refunded_the_other_is_the_one_they_hold():
    first = sale("ch_video1")
    second = sale("ch_video2", at=DAY + timedelta(minutes=1), refunded=19_800)
    kept = answers(first, [first, second])
    assert kept["check_duplicate"] == ("warn", "dup_others_refunded")
    assert kept["check_access"] == ("warn", "access_last_copy")
    refunded = answers(second, [first, second])
    assert refunded["check_refund"] == ("ok", "already_refunded")
    assert refunded["check_access"] == ("warn", "access_risk")  # re-grant: the other is still paid


def test_purchases_further_apart_than_the_window_or_of_other_products_are_not_duplicates():
    first = sale("ch_a")
    later = sale("ch_b", at=DAY + timedelta(days=45))
    other = sale("ch_c", product="Another course")
    assert answers(later, [first, later, other])["check_duplicate"] == ("ok", "dup_no")
    assert answers(other, [first, later, other])["check_access"] == ("ok", "access_ok")


def test_an_installment_is_named_and_later_ones_are_not_duplicates_of_it():
    one = sale("ch_p1", kind="installment", k=1, n=3)
    two = sale("ch_p2", kind="installment", k=2, n=3, at=DAY + timedelta(days=30))
    got = answers(two, [one, two])
    assert got["check_installment"] == ("warn", "installment_note")
    assert got["check_duplicate"] == ("ok", "dup_no")


def test_an_open_chargeback_says_stop_and_an_inquiry_says_a_refund_closes_it():
    row = sale("ch_d", status="disputed")
    assert answers(row, [row], {"ch_d": Dispute("needs_response", False)})["check_dispute"] == (
        "stop",
        "dispute_open",
    )
    inquiry = answers(row, [row], {"ch_d": Dispute("warning_needs_response", True)})
    assert inquiry["check_dispute"] == ("warn", "dispute_open_refundable")
    assert answers(row, [row], {"ch_d": Dispute("won", False)})["check_dispute"] == ("ok", "dispute_closed")

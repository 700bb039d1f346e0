"""The Sales page's queries (worker/dashboard/sales_query.py) over a small shop's week.

The shop's payments are delivered as Stripe and the funnel send them, through the real handlers; what
each query should give is written out by hand below, as a person reading the week would count it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from handlers.sales_view import load_sales_view
from tests.sales_scenarios import funnel_purchase
from tests.stripe_fixtures import charge, event
from tests.unit.test_sales_view import deliver, deliver_funnel
from worker.dashboard.sales_query import (
    CurrencyTotal,
    PeriodTotal,
    ProductTotal,
    SalesFilter,
    failed_installments,
    iter_sales_for_export,
    period_totals,
    query_sales,
)

TOKYO = ZoneInfo("Asia/Tokyo")
UTC_ZONE = ZoneInfo("UTC")


def unix(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def paid(charge_id, email, product, amount, at, *, currency="usd", customer=None, **fields):
    created = unix(at)
    document = charge(
        charge_id,
        amount=amount,
        currency=currency,
        created=created,
        description=product,
        customer=customer or f"cus_{charge_id}",
        billing_details={"email": email},
        **fields,
    )
    return event(
        "charge.failed" if fields.get("status") == "failed" else "charge.succeeded", document, created=created
    )


@pytest.fixture
def shop(db):
    """A week of a small shop (times in UTC; the seller works in Tokyo, UTC+9)."""
    deliveries = [
        paid("ch_1", "ann@example.com", "Workshop ticket", 4_900, "2026-11-01T10:00:00Z"),
        paid("ch_2", "bob@example.com", "Workshop ticket", 4_900, "2026-11-02T09:00:00Z"),
        # 01:00 on 3 November in Tokyo
        paid("ch_3", "carol@example.com", "Ebook", 1_500, "2026-11-02T16:00:00Z"),
        paid(
            "ch_4",
            "dan@example.com",
            "Ebook",
            1_500,
            "2026-11-03T12:00:00Z",
            status="failed",
            paid=False,
            failure_message="Your card was declined.",
        ),
        paid(
            "ch_5",
            "ann@example.com",
            "Coaching",
            120_000,
            "2026-11-04T00:30:00Z",
            currency="jpy",
            customer="cus_ann_jp",
        ),
        paid("ch_6", "erin@example.com", "Workshop ticket", 4_900, "2026-11-05T08:00:00Z"),
        # bob's ticket refunded in full, carol's ebook in part
        event(
            "charge.refunded",
            charge(
                "ch_2",
                amount=4_900,
                amount_refunded=4_900,
                created=unix("2026-11-02T09:00:00Z"),
                description="Workshop ticket",
                customer="cus_ch_2",
                billing_details={"email": "bob@example.com"},
            ),
            created=unix("2026-11-06T00:00:00Z"),
        ),
        event(
            "charge.refunded",
            charge(
                "ch_3",
                amount=1_500,
                amount_refunded=500,
                created=unix("2026-11-02T16:00:00Z"),
                description="Ebook",
                customer="cus_ch_3",
                billing_details={"email": "carol@example.com"},
            ),
            created=unix("2026-11-06T00:00:00Z"),
        ),
        # erin disputed her ticket and the seller lost
        event(
            "charge.dispute.closed",
            {
                "id": "dp_6",
                "object": "dispute",
                "charge": "ch_6",
                "amount": 4_900,
                "currency": "usd",
                "status": "lost",
                "reason": "fraudulent",
                "created": unix("2026-11-05T20:00:00Z"),
            },
            created=unix("2026-11-20T00:00:00Z"),
        ),
    ]
    for document in deliveries:
        assert deliver(db, document) == "done"
    # gina bought a masterclass in the funnel; Stripe's payment has not arrived yet.
    assert (
        deliver_funnel(
            db,
            funnel_purchase(
                9001,
                name="Masterclass",
                cents=9_900,
                cancel_after=None,
                subscription_id=None,
                charge_id="pi_gina",
                email="gina@example.com",
                created_at="2026-11-06T03:00:00Z",
            ),
        )
        == "done"
    )
    return db


def ids(rows):
    return [r.charge_id or r.payment_intent_id for r in rows]


def query(db, tz=UTC_ZONE, page=1, per_page=50, **fields):
    with db.session() as session:
        return query_sales(session, SalesFilter(**fields), page=page, per_page=per_page, tz=tz)


def test_without_a_filter_every_sale_newest_first_with_the_totals_a_seller_counts(shop):
    result = query(shop)
    assert ids(result.rows) == ["pi_gina", "ch_6", "ch_5", "ch_4", "ch_3", "ch_2", "ch_1"]
    assert (result.total_rows, result.page, result.pages) == (7, 1, 1)
    # USD took money on ch_1, ch_2, ch_3, ch_6 and gina's purchase; ch_4 was declined.
    # Refunded: bob 49.00 and carol 5.00. Net: ann 49.00 + carol 10.00 + gina 99.00 (erin's is lost).
    assert result.totals_by_currency == [
        CurrencyTotal("jpy", 120_000, 0, 120_000, 1),
        CurrencyTotal("usd", 26_100, 5_400, 15_800, 6),
    ]
    assert result.totals_by_product == [
        ProductTotal("Coaching", "jpy", 120_000, 0, 120_000, 1),
        ProductTotal("Ebook", "usd", 1_500, 500, 1_000, 2),
        ProductTotal("Masterclass", "usd", 9_900, 0, 9_900, 1),
        ProductTotal("Workshop ticket", "usd", 14_700, 4_900, 4_900, 3),
    ]
    statuses = {r.charge_id: r.status for r in result.rows if r.charge_id}
    assert statuses == {
        "ch_1": "paid",
        "ch_2": "refunded",
        "ch_3": "partially_refunded",
        "ch_4": "failed",
        "ch_5": "paid",
        "ch_6": "dispute_lost",
    }


def test_the_page_rows_carry_what_the_view_shows(shop):
    with shop.session() as session:
        view = {r.charge_id or r.payment_intent_id: r.as_json() for r in load_sales_view(session)}
    for row in query(shop).rows:
        shown = view[row.charge_id or row.payment_intent_id]
        assert {name: getattr(row, name) for name in shown if name != "paid_at"} == {
            k: v for k, v in shown.items() if k != "paid_at"
        }
        assert row.paid_at.isoformat().replace("+00:00", "Z") == shown["paid_at"]


def test_customer_by_part_of_the_email_in_any_case_or_by_stripe_customer_id(shop):
    assert ids(query(shop, customer="ANN@").rows) == ["ch_5", "ch_1"]
    assert ids(query(shop, customer="cus_ann_jp").rows) == ["ch_5"]
    assert ids(query(shop, customer="example.com").rows) == ids(query(shop).rows)
    assert query(shop, customer="nobody").total_rows == 0
    # A LIKE wildcard typed by a user is just a character.
    assert query(shop, customer="%").total_rows == 0


def test_product_and_status_together(shop):
    assert ids(query(shop, product="ticket").rows) == ["ch_6", "ch_2", "ch_1"]
    assert ids(query(shop, product="ebook", status="failed").rows) == ["ch_4"]
    result = query(shop, product="ebook", status="failed")
    assert result.totals_by_currency == [CurrencyTotal("usd", 0, 0, 0, 1)]


def test_days_are_the_sellers_days(shop):
    # 3 November in Tokyo runs from 2 November 15:00 to 3 November 15:00 UTC.
    assert ids(query(shop, tz=TOKYO, date_from=date(2026, 11, 3), date_to=date(2026, 11, 3)).rows) == [
        "ch_4",
        "ch_3",
    ]
    assert ids(query(shop, date_from=date(2026, 11, 3), date_to=date(2026, 11, 3)).rows) == ["ch_4"]
    assert ids(query(shop, date_from=date(2026, 11, 5)).rows) == ["pi_gina", "ch_6"]
    assert ids(query(shop, date_to=date(2026, 11, 1)).rows) == ["ch_1"]


def test_source_and_how_the_payment_was_found(shop):
    assert ids(query(shop, source="funnel").rows) == ["pi_gina"]
    assert query(shop, source="stripe").total_rows == 6
    assert query(shop, source="webhook").total_rows == 6
    assert query(shop, source="reconcile").total_rows == 0
    assert query(shop, kind="one_time").total_rows == 7
    with pytest.raises(ValueError):
        query(shop, source="paypal")


def test_pages(shop):
    first, second, past = (query(shop, page=n, per_page=3) for n in (1, 3, 4))
    assert (first.total_rows, first.pages) == (7, 3)
    assert ids(first.rows) == ["pi_gina", "ch_6", "ch_5"]
    assert ids(second.rows) == ["ch_1"]
    assert past.rows == [] and past.pages == 3
    # Totals are of every matching row, whatever the page.
    assert second.totals_by_currency == first.totals_by_currency


def test_the_export_streams_every_matching_sale_oldest_first_as_the_sales_command_shows_it(shop):
    with shop.session() as session:
        exported = list(iter_sales_for_export(session, SalesFilter(product="ticket"), ZoneInfo("UTC")))
        view = [r.as_json() for r in load_sales_view(session) if r.product == "Workshop ticket"]
    assert exported == view
    assert [r["charge_id"] for r in exported] == ["ch_1", "ch_2", "ch_6"]


def test_period_totals_for_the_overview(shop):
    with shop.session() as session:
        start = datetime(2026, 11, 1, tzinfo=UTC)
        assert period_totals(session, start, datetime(2026, 11, 3, tzinfo=UTC)) == [
            PeriodTotal("usd", 11_300, 5_400, 5_900)
        ]
        assert period_totals(
            session, datetime(2026, 11, 4, tzinfo=TOKYO), datetime(2026, 11, 5, tzinfo=TOKYO)
        ) == [PeriodTotal("jpy", 120_000, 0, 120_000)]
        assert (
            period_totals(session, datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)) == []
        )


def test_failed_payments_newest_first(shop):
    with shop.session() as session:
        failed = failed_installments(session)
    assert [(r.charge_id, r.customer_email, r.failure_message) for r in failed] == [
        ("ch_4", "dan@example.com", "Your card was declined.")
    ]

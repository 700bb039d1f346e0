"""The overview's takings per day and month follow DISPLAY_TIMEZONE; webhook silence is flagged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.stripe_fixtures import charge, event, refund
from tests.unit.dashboard_support import Clock, add_staff, make_client, sign_in
from tests.unit.test_dashboard_pages import text_of
from worker.jobs import processing
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


def _at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def _deliver(db, document) -> None:
    store_event(db, event_from_dict(document), json.dumps(document))
    assert processing.process_event(db, document["id"], max_attempts=3).status == "done"


def _sale(db, charge_id: str, amount: int, currency: str, paid: str, email: str) -> None:
    created = _at(paid)
    body = charge(
        charge_id,
        amount=amount,
        currency=currency,
        created=created,
        customer=f"cus_{charge_id}",
        billing_details={"email": email, "name": None},
    )
    _deliver(db, event("charge.succeeded", body, created=created))


@pytest.fixture
def takings(db):
    _sale(db, "ch_tokyo_morning", 10_000, "jpy", "2026-11-19T16:30:00+00:00", "a@example.jp")  # Nov 20 JST
    _sale(db, "ch_usd_today", 5_000, "usd", "2026-11-20T01:00:00+00:00", "b@example.com")
    _sale(db, "ch_first_of_month", 5_000, "jpy", "2026-10-31T16:00:00+00:00", "c@example.jp")  # Nov 1 JST
    _sale(db, "ch_october", 3_000, "jpy", "2026-10-15T05:00:00+00:00", "d@example.jp")
    refunded = charge(
        "ch_october",
        amount=3_000,
        currency="jpy",
        created=_at("2026-10-15T05:00:00+00:00"),
        customer="cus_ch_october",
        billing_details={"email": "d@example.jp", "name": None},
        amount_refunded=1_000,
    )
    _deliver(db, event("charge.refunded", refunded, created=_at("2026-10-20T00:00:00+00:00")))
    _deliver(
        db,
        event(
            "refund.created",
            refund(
                "re_october",
                charge_id="ch_october",
                amount=1_000,
                currency="jpy",
                created=_at("2026-10-20T00:00:00+00:00"),
            ),
            created=_at("2026-10-20T00:00:00+00:00"),
        ),
    )
    add_staff(db, "viewer@example.com", "viewer")
    return db


def _overview(db, timezone: str) -> dict:
    client = make_client(db, Clock(NOW), timezone=timezone)
    assert sign_in(client, "viewer@example.com").status_code == 303
    return client.get("/app/api/overview").json(), text_of(client.get("/app/").text)


def _totals(rows) -> dict:
    return {r["currency"]: (r["gross"], r["refunded"], r["net"]) for r in rows}


def test_days_and_months_are_tokyos_when_display_timezone_is_tokyo(takings):
    summary, page = _overview(takings, "Asia/Tokyo")
    assert _totals(summary["today"]) == {"jpy": (10_000, 0, 10_000), "usd": (5_000, 0, 5_000)}
    assert _totals(summary["this_month"]) == {"jpy": (15_000, 0, 15_000), "usd": (5_000, 0, 5_000)}
    assert _totals(summary["last_month"]) == {"jpy": (3_000, 1_000, 2_000)}
    assert (
        "This month (2026-11) Currency Gross Refunded Net JPY ¥15,000 ¥0 ¥15,000 USD $50.00 $0.00 $50.00"
        in page
    )


def test_the_same_sales_fall_on_other_days_in_utc(takings):
    summary, _ = _overview(takings, "UTC")
    assert _totals(summary["today"]) == {"usd": (5_000, 0, 5_000)}
    assert _totals(summary["this_month"]) == {"jpy": (10_000, 0, 10_000), "usd": (5_000, 0, 5_000)}
    assert _totals(summary["last_month"]) == {"jpy": (8_000, 1_000, 7_000)}


def test_webhook_silence_is_flagged_after_the_configured_hours(takings):
    client = make_client(takings, Clock(NOW), silence_hours=6)
    sign_in(client, "viewer@example.com")
    # The events were stored just now (received_at is the real time), far from this test's clock.
    quiet = make_client(takings, Clock(datetime.now(UTC)), silence_hours=6)
    sign_in(quiet, "viewer@example.com")
    assert quiet.get("/app/api/overview").json()["webhooks_silent"] is False
    assert 'id="webhook-silence"' not in quiet.get("/app/").text
    later = make_client(takings, Clock(datetime.now(UTC).replace(year=2027)), silence_hours=6)
    sign_in(later, "viewer@example.com")
    assert later.get("/app/api/overview").json()["webhooks_silent"] is True
    shown = text_of(later.get("/app/").text)
    assert "Nothing has arrived for over 6 hours" in shown, shown[shown.find("Webhook") :][:300]

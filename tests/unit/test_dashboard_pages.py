"""The dashboard's pages on a generated seller's month (made without reading our code), processed by
the real handlers: what staff see must match the month's own ground truth."""

from __future__ import annotations

import csv
import html
import io
import re
from collections import defaultdict

import pytest
from sqlalchemy import select

from handlers.sales_rows import rebuild_sales_rows
from models import Alert, Event, EventStatus
from stripe_standin.server import StandinServer
from tests.unit.dashboard_support import add_staff, make_client, sign_in, token
from tests.unit.test_months_property import run_month
from worker.dashboard.formatting import money

SEED = 3


@pytest.fixture(scope="module")
def standin():
    server = StandinServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def month_db(db, standin):
    month = run_month(db, standin, SEED)
    with db.session() as session:
        rebuild_sales_rows(session)  # the nightly run's additions, as `sales rebuild` would
    for email, role in (
        ("viewer@example.com", "viewer"),
        ("staff@example.com", "staff"),
        ("admin@example.com", "admin"),
    ):
        add_staff(db, email, role)
    return db, month


def signed_in(db, role: str, **config):
    client = make_client(db, **config)
    assert sign_in(client, f"{role}@example.com").status_code == 303
    return client


def text_of(page: str) -> str:
    """The page as a person reads it: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_customer_pages_number_every_installment_as_the_month_says(month_db):
    db, month = month_db
    client = signed_in(db, "viewer")
    installments = [s for s in month.truth.sales if s.kind == "installment" and s.installments_total]
    assert installments, "the seed should hold payment plans"
    by_customer = defaultdict(list)
    for sale in installments:
        by_customer[sale.customer_email].append(sale)
    for email, sales in by_customer.items():
        page = client.get(f"/app/customers/{email}")
        assert page.status_code == 200
        shown = text_of(page.text)
        for sale in sales:
            assert sale.charge_id in shown
            assert f"installment {sale.installment} of {sale.installments_total}" in shown, (
                email,
                sale.charge_id,
            )


def test_refund_notes_and_alerts_appear_on_the_customers_page(month_db):
    db, month = month_db
    client = signed_in(db, "viewer")
    for alert in month.truth.alerts[:10]:
        shown = text_of(client.get(f"/app/customers/{alert.customer_email}").text)
        assert "Alert" in shown and alert.kind in shown, alert.key


def test_sales_page_totals_equal_the_months_takings(month_db):
    db, month = month_db
    client = signed_in(db, "viewer")
    shown = text_of(client.get("/app/sales").text)
    for currency, gross in month.truth.gross.items():
        refunded = month.truth.refunded.get(currency, 0)
        # Net is what the seller kept: less refunds, and less what lost disputes took back.
        lost = sum(
            s.amount - s.refunded_amount
            for s in month.truth.sales
            if s.currency == currency and s.status == "dispute_lost"
        )
        net = gross - refunded - lost
        row = (
            f"{currency.upper()} {money(gross, currency)} {money(refunded, currency)} {money(net, currency)}"
        )
        assert row in shown, row
    assert f"{len(month.truth.sales)} rows" in shown


def test_sales_filters_and_csv_export(month_db):
    db, month = month_db
    client = signed_in(db, "viewer")
    failed = [s for s in month.truth.sales if s.status == "failed"]
    page = client.get("/app/sales", params={"status": "failed"})
    assert f"{len(failed)} rows" in text_of(page.text)
    export = client.get("/app/sales.csv", params={"status": "failed"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert sorted(r["charge_id"] for r in rows) == sorted(s.charge_id for s in failed)
    everyone = list(csv.DictReader(io.StringIO(client.get("/app/sales.csv").text)))
    assert len(everyone) == len(month.truth.sales)


def test_plans_page_lists_every_plan_with_its_status(month_db):
    db, month = month_db
    shown = text_of(signed_in(db, "viewer").get("/app/plans").text)
    for plan in month.truth.plans:
        assert plan.subscription_id in shown
    shown_order = re.findall(
        r'class="plan-row" data-status="(\w+)"', signed_in(db, "viewer").get("/app/plans").text
    )
    urgency = ["past_due", "unpaid", "active", "cancelled", "completed"]
    assert shown_order == sorted(shown_order, key=urgency.index), "past_due first, ended plans last"
    assert sorted(shown_order) == sorted(p.status for p in month.truth.plans)
    past_due = [p for p in month.truth.plans if p.status == "past_due"]
    page = signed_in(db, "viewer").get("/app/plans", params={"status": "past_due"}).text
    assert page.count('class="plan-row"') == len(past_due)
    assert '<option value="past_due" selected>' in page


def test_staff_acknowledge_then_resolve_an_alert_with_a_note(month_db):
    db, month = month_db
    client = signed_in(db, "staff")
    with db.session() as session:
        alert_id = session.execute(select(Alert.id).where(Alert.status == "open").limit(1)).scalar_one()
    moved = client.post(
        f"/app/alerts/{alert_id}", data={"action": "acknowledge", "csrf_token": token(client)}
    )
    assert moved.status_code == 303
    listed = client.get("/app/alerts", params={"status": "acknowledged"}).text
    assert f'data-alert-id="{alert_id}" data-status="acknowledged"' in listed
    client.post(
        f"/app/alerts/{alert_id}",
        data={"action": "resolve", "note": "re-granted access by hand", "csrf_token": token(client)},
    )
    with db.session() as session:
        alert = session.get(Alert, alert_id)
    assert (alert.status, alert.resolved_by, alert.resolution_note) == (
        "resolved",
        "staff@example.com",
        "re-granted access by hand",
    )


def test_a_viewer_sees_no_alert_actions(month_db):
    db, _ = month_db
    page = signed_in(db, "viewer").get("/app/alerts").text
    assert 'class="alert-row"' in page and 'class="alert-action"' not in page


def test_customer_search_by_each_kind_of_id(month_db):
    db, month = month_db
    client = signed_in(db, "viewer")
    sale = next(s for s in month.truth.sales if s.funnel_purchase_id and s.payment_intent_id)
    for query in (
        sale.customer_email.upper(),
        sale.charge_id,
        sale.payment_intent_id,
        sale.funnel_purchase_id,
    ):
        found = client.get("/app/customers", params={"q": query})
        assert found.status_code == 303, query
        assert found.headers["location"] == f"/app/customers/{sale.customer_email}", query


def test_overview_shows_open_alerts_and_the_nightly_runs_finds(month_db):
    db, month = month_db
    client = signed_in(db, "viewer")
    shown = text_of(client.get("/app/").text)
    with db.session() as session:
        open_alerts = session.execute(select(Alert).where(Alert.status == "open")).scalars().all()
    assert f"Open alerts {len(open_alerts)}" in shown
    assert "Found" in shown and "payments whose webhooks never arrived" in shown
    summary = client.get("/app/api/overview").json()
    assert sum(summary["open_alerts"].values()) == len(open_alerts)


def test_admin_replays_a_dead_event_and_sees_the_status_after(month_db):
    db, _ = month_db
    with db.session() as session:
        event = session.execute(select(Event).limit(1)).scalar_one()
        event.status = EventStatus.DEAD
        event_id = event.id
    calls = []

    def replay(database, events, *, max_attempts):
        from worker.jobs.replay import ReplayResult

        calls.append([e.id for e in events])
        return [ReplayResult(e.id, None, e.type, e.status, "done") for e in events]

    client = signed_in(db, "admin", replay=replay)
    assert f'data-event-id="{event_id}" data-status="dead"' in client.get("/app/events?status=dead").text
    detail = client.get(f"/app/events/{event_id}")
    assert 'id="event-status">dead<' in detail.text
    confirm = client.get(f"/app/events/{event_id}/replay")
    assert 'id="confirm-replay"' in confirm.text and calls == []
    result = client.post(f"/app/events/{event_id}/replay", data={"csrf_token": token(client)})
    assert 'id="status-before">dead<' in result.text and 'id="status-after">done<' in result.text
    assert calls == [[event_id]]


def test_amounts_in_yen_have_no_decimals_and_times_follow_display_timezone(month_db):
    db, month = month_db
    client = signed_in(db, "viewer", timezone="Asia/Tokyo")
    page = client.get("/app/sales").text
    assert "JST" in page
    if "jpy" in month.truth.gross:
        assert re.search(r"¥[\d,]+(?!\.\d)", page)
        assert not re.search(r"¥[\d,]+\.\d", page)


def test_sales_filtered_by_a_whole_email_show_that_customers_payments_only(month_db):
    db, month = month_db
    client = signed_in(db, "viewer")
    email = max(
        {s.customer_email for s in month.truth.sales},
        key=lambda e: sum(s.customer_email == e for s in month.truth.sales),
    )
    theirs = [s for s in month.truth.sales if s.customer_email == email]
    export = client.get("/app/sales.csv", params={"customer": f"  {email.upper()} "}).text
    rows = list(csv.DictReader(io.StringIO(export)))
    assert sorted(r["charge_id"] for r in rows) == sorted(s.charge_id for s in theirs)
    # Part of an address still finds by substring.
    local = email.split("@")[0]
    assert len(
        list(csv.DictReader(io.StringIO(client.get("/app/sales.csv", params={"customer": local}).text)))
    ) >= len(theirs)

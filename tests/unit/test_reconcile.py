"""The nightly run against a paginating Stripe stand-in (respx): finds missed payments, idempotent."""

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx
from sqlmodel import func, select

from handlers.reconcile import default_window, reconcile
from models import Charge, ReconcileRun
from tests.sales_scenarios import funnel_purchase
from tests.stripe_fixtures import charge, event, refund
from tests.unit.test_sales_view import deliver, deliver_funnel, view
from worker.settings import Settings
from worker.stripe_api import StripeReader, make_client

API = "http://127.0.0.1:12111"
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 2, tzinfo=UTC)
T = int(START.timestamp())


class PagedStripe:
    """Serves Stripe list endpoints newest first with cursors, the way the API does.

    `objects` are the platform account's; `accounts` maps a Connect account id to its own objects,
    served to requests with that `Stripe-Account` header. Every request is recorded in `requests`.
    """

    def __init__(self, objects: dict[str, list[dict]], *, accounts: dict[str, dict[str, list[dict]]] = None):
        self.objects = {"": self._newest_first(objects)}
        for account, owned in (accounts or {}).items():
            self.objects[account] = self._newest_first(owned)
        self.fail_after: int | None = None
        self.calls = 0
        self.requests: list[httpx.Request] = []

    @staticmethod
    def _newest_first(objects: dict[str, list[dict]]) -> dict[str, list[dict]]:
        return {
            name: sorted(items, key=lambda o: (-o["created"], o["id"])) for name, items in objects.items()
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.requests.append(request)
        if self.fail_after is not None and self.calls > self.fail_after:
            return httpx.Response(
                500,
                json={"error": {"type": "api_error", "message": "down"}},
                headers={"Stripe-Should-Retry": "false"},
            )
        name = request.url.path.removeprefix("/v1/")
        params = request.url.params
        gte, lt = int(params["created[gte]"]), int(params["created[lt]"])
        owned = self.objects.get(request.headers.get("Stripe-Account", ""), {})
        items = [o for o in owned.get(name, []) if gte <= o["created"] < lt]
        if name == "subscriptions" and params.get("status") != "all":
            items = [o for o in items if o["status"] not in ("canceled", "incomplete_expired")]
        if "starting_after" in params:
            ids = [o["id"] for o in items]
            items = items[ids.index(params["starting_after"]) + 1 :]
        limit = int(params.get("limit", 10))
        return httpx.Response(
            200,
            json={
                "object": "list",
                "url": f"/v1/{name}",
                "has_more": len(items) > limit,
                "data": items[:limit],
            },
        )


def stripe_reader() -> StripeReader:
    """A real reader (counting its calls) on the stand-in's address; one try per request."""
    settings = Settings(stripe_api_key="sk_test_nightly", stripe_api_base=API, stripe_max_attempts=1)
    return StripeReader(settings, make_client(settings))


@pytest.fixture
def reader():
    return stripe_reader()


def charges(n: int, *, offset: int = 0) -> list[dict]:
    return [
        charge(
            f"ch_n{i:04d}",
            amount=1_000 + i,
            created=T + 10 * i,
            payment_intent=f"pi_n{i:04d}",
            billing_details={"email": f"c{i}@example.com"},
        )
        for i in range(offset, offset + n)
    ]


def stored_charges(db) -> int:
    with db.session() as session:
        return session.exec(select(func.count()).select_from(Charge)).one()


def run(db, reader, stripe, **options):
    with respx.mock:
        respx.route(host="127.0.0.1", port=12111).mock(side_effect=stripe)
        return reconcile(db, reader, START, END, **options)


def test_the_nightly_run_pages_through_250_charges_with_3_list_calls_and_adds_what_webhooks_missed(
    db, reader
):
    everything = charges(250)
    for document in everything[:240]:  # ten webhooks never arrived
        deliver(db, event("charge.succeeded", document, created=document["created"]))
    report = run(db, reader, PagedStripe({"charges": everything, "refunds": [], "invoice_payments": []}))

    assert report["counts"]["seen"] == 250
    assert report["counts"]["added"] == report["counts"]["missed_webhooks"] == 10
    assert report["counts"]["already_present"] == 240
    # ceil(250/100) charge pages, one empty page each for invoice payments, refunds, disputes, subscriptions
    assert report["api_calls"] == 3 + 1 + 1 + 1 + 1
    assert report["accounts"]["platform"]["api_calls"] == report["api_calls"]
    assert stored_charges(db) == 250
    added = sum(1_000 + i for i in range(240, 250))
    assert report["totals"]["usd"]["added"] == added
    assert report["totals"]["usd"]["stripe_gross"] == sum(1_000 + i for i in range(250))
    with db.session() as session:
        found = session.exec(select(Charge).where(Charge.found_by == "reconcile")).all()
    assert sorted(c.id for c in found) == [f"ch_n{i:04d}" for i in range(240, 250)]


def test_running_the_same_window_twice_changes_nothing(db, reader):
    stripe = PagedStripe(
        {
            "charges": charges(120),
            "refunds": [refund("re_1", charge_id="ch_n0001", amount=300, created=T + 50)],
            "invoice_payments": [],
        }
    )
    first = run(db, reader, stripe)
    before = view(db)
    second = run(db, reader, stripe)
    assert (first["counts"]["added"], second["counts"]["added"]) == (121, 0)
    assert second["counts"]["already_present"] == 121 and second["counts"]["missed_webhooks"] == 0
    assert view(db) == before
    assert first["totals"] == {
        **second["totals"],
        "usd": {**second["totals"]["usd"], "added": first["totals"]["usd"]["added"]},
    }
    assert first["totals"]["usd"]["refunded"] == 300


def test_a_run_that_dies_resumes_where_it_stopped_without_doubling(db, reader):
    stripe = PagedStripe({"charges": charges(350), "refunds": [], "invoice_payments": []})
    stripe.fail_after = 3  # the (empty) invoice payments and two charge pages in, Stripe goes away
    with pytest.raises(Exception, match="down"):
        run(db, reader, stripe)
    with db.session() as session:
        failed = session.exec(select(ReconcileRun)).one()
        assert failed.status == "failed" and json.loads(failed.cursors)["charges"] == "ch_n0150"
    assert stored_charges(db) == 200

    stripe.fail_after = None
    report = run(db, reader, stripe)
    assert report["run_id"] == failed.id
    assert report["counts"]["seen"] == 350 and report["counts"]["added"] == 350
    assert stored_charges(db) == 350


def test_the_report_lists_funnel_sales_with_no_stripe_payment_and_payments_with_no_funnel_sale(db, reader):
    deliver_funnel(
        db,
        funnel_purchase(
            9001,
            cancel_after=None,
            subscription_id=None,
            charge_id="pi_n0000",
            created_at="2026-11-01T00:00:00Z",
            cents=999,
        ),
    )
    deliver_funnel(
        db,
        funnel_purchase(
            9002,
            cancel_after=None,
            subscription_id=None,
            charge_id="pi_nowhere",
            created_at="2026-11-01T01:00:00Z",
        ),
    )
    report = run(db, reader, PagedStripe({"charges": charges(3), "refunds": [], "invoice_payments": []}))
    gaps = report["discrepancies"]
    assert gaps["funnel_sales_without_stripe_payment"] == {"count": 1, "sample": ["9002"]}
    assert gaps["amount_mismatches"] == [
        {
            "funnel_purchase_id": "9001",
            "funnel_amount": 999,
            "funnel_currency": "usd",
            "charge_id": "ch_n0000",
            "stripe_amount": 1_000,
            "stripe_currency": "usd",
        }
    ]
    assert gaps["stripe_payments_without_funnel_purchase"] == {"count": 2, "sample": ["ch_n0001", "ch_n0002"]}
    assert report["totals"]["usd"]["funnel_view"] == 999 + 10_000


def test_installments_found_only_by_the_nightly_run_are_numbered_from_invoice_payments(db, reader):
    deliver_funnel(db, funnel_purchase(created_at="2026-11-01T00:00:00Z"))
    payments = [
        charge(f"ch_plan{k}", amount=10_000, payment_intent=f"pi_plan{k}", created=T + k * 100)
        for k in (1, 2)
    ]
    links = [
        {
            "id": f"inpay_{k}",
            "object": "invoice_payment",
            "created": T + k * 100 + 5,
            "amount_paid": 10_000,
            "currency": "usd",
            "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": f"pi_plan{k}"},
            "invoice": {
                "id": f"in_plan{k}",
                "object": "invoice",
                "currency": "usd",
                "status": "paid",
                "amount_paid": 10_000,
                "created": T + k * 100,
                "parent": {"subscription_details": {"subscription": "sub_plan"}},
            },
        }
        for k in (1, 2)
    ]
    report = run(db, reader, PagedStripe({"charges": payments, "refunds": [], "invoice_payments": links}))
    assert report["counts"]["missed_webhooks"] == 2
    assert [(r["charge_id"], r["source"], r["installment"], r["installments_total"]) for r in view(db)] == [
        ("ch_plan1", "funnel", 1, 3),
        ("ch_plan2", "stripe", 2, 3),
    ]


def test_the_default_window_starts_48_hours_before_the_last_successful_run_ended(db, reader):
    now = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    assert default_window(db, now, initial_days=30) == (now - timedelta(days=30), now)
    run(db, reader, PagedStripe({"charges": [], "refunds": [], "invoice_payments": []}))
    assert default_window(db, now, initial_days=30) == (END - timedelta(hours=48), now)


def test_a_refund_only_the_nightly_run_finds_gets_its_note_once_however_often_the_window_is_run(db, reader):
    from models import CustomerNote

    paid = charge("ch_late", amount=8_000, created=T + 100, billing_details={"email": "late@example.com"})
    deliver(db, event("charge.succeeded", paid, created=T + 100))
    stripe = PagedStripe(
        {
            "charges": [{**paid, "amount_refunded": 8_000, "refunded": True}],
            "refunds": [refund("re_late", charge_id="ch_late", amount=8_000, created=T + 200)],
            "invoice_payments": [],
        }
    )
    for _ in range(2):
        run(db, reader, stripe)
    with db.session() as session:
        notes = session.exec(select(CustomerNote)).all()
    assert [(n.email, n.refund_id, n.status) for n in notes] == [("late@example.com", "re_late", "succeeded")]


def test_a_customer_several_lists_touch_is_refreshed_once_at_the_end_of_the_run(db, reader, monkeypatch):
    import handlers.reconcile as nightly

    refreshed: list[str] = []
    real_refresh = nightly.refresh_customers

    def counting_refresh(session, emails, **options):
        refreshed.extend(emails)
        return real_refresh(session, emails, **options)

    monkeypatch.setattr(nightly, "refresh_customers", counting_refresh)
    paid = charges(150)  # two charge pages
    refunds = [
        refund(f"re_n{i:04d}", charge_id=f"ch_n{i:04d}", amount=500, created=T + 5_000 + i) for i in (3, 140)
    ]
    report = run(db, reader, PagedStripe({"charges": paid, "refunds": refunds, "invoice_payments": []}))

    assert report["counts"]["added"] == 152
    assert sorted(refreshed) == sorted(f"c{i}@example.com" for i in range(150))  # each one once
    with db.session() as session:
        from models import CustomerNote, SalesRowRecord

        notes = session.exec(select(CustomerNote.refund_id)).all()
        shown = session.exec(select(func.count()).select_from(SalesRowRecord)).one()
    assert sorted(notes) == ["re_n0003", "re_n0140"]
    assert shown == 150  # the dashboard's sales view has every payment the run found


def test_a_run_that_dies_while_refreshing_customers_refreshes_the_rest_when_resumed(db, reader, monkeypatch):
    import handlers.reconcile as nightly
    from models import ReconcilePending, SalesRowRecord

    monkeypatch.setattr(nightly, "REFRESH_BATCH", 40)
    real_refresh, calls = nightly.refresh_customers, []

    def dying_refresh(session, emails, **options):
        calls.append(list(emails))
        if len(calls) == 2:
            raise OSError("worker killed")
        return real_refresh(session, emails, **options)

    monkeypatch.setattr(nightly, "refresh_customers", dying_refresh)
    stripe = PagedStripe({"charges": charges(100), "refunds": [], "invoice_payments": []})
    with pytest.raises(OSError, match="worker killed"):
        run(db, reader, stripe)
    with db.session() as session:
        failed = session.exec(select(ReconcileRun)).one()
        pending = session.exec(select(func.count()).select_from(ReconcilePending)).one()
        shown = session.exec(select(func.count()).select_from(SalesRowRecord)).one()
    # every page was stored; the first 40 customers were refreshed, the batch that died was not
    assert failed.status == "failed" and stored_charges(db) == 100
    assert (shown, pending) == (40, 60)

    calls_before = stripe.calls
    report = run(db, reader, stripe)
    assert report["run_id"] == failed.id and report["counts"]["added"] == 100
    assert stripe.calls == calls_before  # every list was complete: the resumed run only refreshed
    with db.session() as session:
        emails = session.exec(select(SalesRowRecord.customer_email)).all()
        pending = session.exec(select(func.count()).select_from(ReconcilePending)).one()
    assert sorted(emails) == sorted(f"c{i}@example.com" for i in range(100)) and pending == 0
    assert [len(batch) for batch in calls] == [40, 40, 40, 20]  # the dead batch again, then the rest


def test_customers_a_dead_run_left_unrefreshed_are_refreshed_by_the_next_run_of_another_window(
    db, reader, monkeypatch
):
    import handlers.reconcile as nightly
    from models import SalesRowRecord

    monkeypatch.setattr(
        nightly, "refresh_customers", lambda *a, **k: (_ for _ in ()).throw(OSError("killed"))
    )
    stripe = PagedStripe({"charges": charges(30), "refunds": [], "invoice_payments": []})
    with pytest.raises(OSError):
        run(db, reader, stripe)
    monkeypatch.undo()

    with respx.mock:  # the next night: a later window, in which Stripe has nothing new
        respx.route(host="127.0.0.1", port=12111).mock(side_effect=stripe)
        reconcile(db, reader, END, END + timedelta(days=1))
    with db.session() as session:
        shown = session.exec(select(func.count()).select_from(SalesRowRecord)).one()
    assert shown == 30


def test_a_late_event_older_than_the_run_does_not_undo_what_the_run_found_unchanged(db, reader):
    """Stripe's answer is the current state even where it matches what a webhook stored: an event
    created before the run (here a description changed and changed back) arrives late and is ignored."""
    described = charge(
        "ch_desc", created=T + 100, description="Course A", billing_details={"email": "d@example.com"}
    )
    deliver(db, event("charge.succeeded", described, created=T + 100))
    report = run(db, reader, PagedStripe({"charges": [described], "refunds": [], "invoice_payments": []}))
    assert report["counts"]["already_present"] == 1 and report["counts"]["added"] == 0

    deliver(db, event("charge.updated", {**described, "description": "Course B"}, created=T + 150))
    with db.session() as session:
        assert session.get(Charge, "ch_desc").description == "Course A"


def test_a_run_whose_database_fails_mid_transaction_lists_those_pages_again_and_doubles_nothing(
    db, reader, monkeypatch
):
    import handlers.reconcile as nightly

    monkeypatch.setattr(nightly, "PAGES_PER_TRANSACTION", 2)
    real_store, stored_pages = nightly._store_page, []

    def failing_store(session, resource, page, **options):
        if resource == "charges":
            stored_pages.append(page[0]["id"])
            if len(stored_pages) == 4:  # the second page of the second transaction
                raise OSError("disk full")
        return real_store(session, resource, page, **options)

    monkeypatch.setattr(nightly, "_store_page", failing_store)
    stripe = PagedStripe({"charges": charges(500), "refunds": [], "invoice_payments": []})
    with pytest.raises(OSError, match="disk full"):
        run(db, reader, stripe)
    assert stored_charges(db) == 200  # the first transaction's two pages; the failed one left nothing

    monkeypatch.setattr(nightly, "_store_page", real_store)
    report = run(db, reader, stripe)
    assert report["counts"]["seen"] == 500 and report["counts"]["added"] == 500
    assert stored_charges(db) == 500

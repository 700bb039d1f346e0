"""MIRROR_NOTES_TO_STRIPE: a short refund history in the Stripe customer's metadata.

Refund notes are made the way production makes them (signed-shape Stripe events through the
processing pipeline); Stripe's API is mocked with respx at the configured base, answering the way
`POST /v1/customers/{id}` does: it merges the sent metadata keys into the customer's, "" deleting one.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from sqlalchemy import update

from handlers import stripe_notes_mirror as mirror
from models import CustomerNote, StripeNoteMirror
from tests.stripe_fixtures import charge, event, refund
from worker.jobs import clock, processing
from worker.receiver.intake import store_event
from worker.receiver.stripe_events import event_from_dict
from worker.settings import Settings
from worker.stripe_api import make_client

BASE = "http://127.0.0.1:12111"
KEY = "sk_test_51QmirrorUnitKey4242"
T0 = 1_790_000_000  # 2026-09-21 UTC
EMAIL = "mika.tanaka@example.jp"
CONNECT = "acct_1Nv0FGQ9RKHgCVdK"


@pytest.fixture
def settings():
    return Settings(
        stripe_api_key=KEY,
        stripe_api_base=BASE,
        stripe_max_attempts=3,
        stripe_max_backoff_seconds=0.01,
        mirror_notes_to_stripe=True,
    )


class FakeStripe:
    """Stripe's customer update, as far as metadata goes: the seller's keys stay, ours merge in."""

    def __init__(self, customers: dict[str, dict[str, str]], *, account: str | None = None):
        self.metadata = {cus: dict(keys) for cus, keys in customers.items()}
        self.account = account
        self.failures: list[httpx.Response] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request, cus: str) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            return self.failures.pop(0)
        if cus not in self.metadata or request.headers.get("stripe-account") != self.account:
            return _error(
                404,
                "invalid_request_error",
                f"No such customer: '{cus}'",
                code="resource_missing",
                param="id",
            )
        stored = self.metadata[cus]
        for name, value in sent_metadata(request).items():
            if value == "":
                stored.pop(name, None)
            else:
                stored[name] = value
        return httpx.Response(
            200,
            headers={"Request-Id": f"req_{len(self.requests):014d}"},
            json={
                "id": cus,
                "object": "customer",
                "address": None,
                "balance": 0,
                "created": T0 - 86_400,
                "currency": "jpy",
                "default_source": None,
                "delinquent": False,
                "description": None,
                "email": EMAIL,
                "invoice_prefix": "7C1E8D2A",
                "invoice_settings": {
                    "custom_fields": None,
                    "default_payment_method": None,
                    "footer": None,
                    "rendering_options": None,
                },
                "livemode": False,
                "metadata": stored,
                "name": "Mika Tanaka",
                "phone": None,
                "preferred_locales": ["ja"],
                "shipping": None,
                "tax_exempt": "none",
                "test_clock": None,
            },
        )


def _error(status, kind, message, **fields):
    body = {"error": {"message": message, "type": kind, **fields}}
    if "code" in fields:
        body["error"]["doc_url"] = f"https://stripe.com/docs/error-codes/{fields['code'].replace('_', '-')}"
    return httpx.Response(status, headers={"Request-Id": "req_5xXq0Jp2Bc9Lmn"}, json=body)


def sent_form(request: httpx.Request) -> list[tuple[str, str]]:
    return parse_qsl(request.content.decode(), keep_blank_values=True)


def sent_metadata(request: httpx.Request) -> dict[str, str]:
    return {k[len("metadata[") : -1]: v for k, v in sent_form(request) if k.startswith("metadata[")}


def mock_stripe(fake: FakeStripe) -> respx.Route:
    return respx.post(url__regex=rf"^{BASE}/v1/customers/(?P<cus>cus_[A-Za-z0-9]+)$").mock(side_effect=fake)


def run(settings, db):
    return clock.mirror_notes_once(settings, db, client=make_client(settings))


# --- facts as Stripe sends them -----------------------------------------------------------------------


def deliver(db, document) -> str:
    """Store and process one event as the receiver and the actor do (a Connect event as its account)."""
    store_event(db, event_from_dict(document), json.dumps(document))
    account = document.get("account") or ""
    return processing.process_event(db, document["id"], account, max_attempts=3, force=True).status


def sale(
    db, n: int, *, customer: str, currency: str = "jpy", amount: int = 19_800, account=None, email=EMAIL
):
    """A one-time purchase and its full refund, as charge.succeeded and refund.created deliver them."""
    created = T0 + n * 3600
    paid = charge(
        f"ch_3Q{n:04d}Mv2LkQ9RKHgCVdK1a",
        amount=amount,
        currency=currency,
        created=created,
        customer=customer,
        payment_intent=f"pi_3Q{n:04d}Mv2LkQ9RKHgCVdK1a",
        description="Video course",
        billing_details={"email": email, "name": "Mika Tanaka"},
    )
    assert deliver(db, event("charge.succeeded", paid, created=created, account=account)) == "done"
    back = refund(
        f"re_3Q{n:04d}Mv2LkQ9RKHgCVdK0b",
        charge_id=paid["id"],
        amount=amount,
        currency=currency,
        created=created + 600,
        payment_intent=paid["payment_intent"],
        reason="requested_by_customer",
        status="succeeded",
    )
    assert deliver(db, event("refund.created", back, created=created + 600, account=account)) == "done"
    return back["id"]


def note_of(db, refund_id):
    with db.session() as session:
        return session.get(CustomerNote, f"refund:{refund_id}")


def mirror_row(db, cus):
    with db.session() as session:
        return session.get(StripeNoteMirror, cus)


# --- the value: Stripe's limits, newest first, amounts per currency ------------------------------------


def fake_note(n: int, *, refund_id: str | None = None, amount=19_800, currency="jpy", status="succeeded"):
    return SimpleNamespace(
        refund_id=refund_id or f"re_3Q{n:04d}Mv2LkQ9RKHgCVdK0b",
        amount=amount,
        currency=currency,
        status=status,
        created_at=datetime.fromtimestamp(T0 + n * 86_400, UTC),
    )


def test_sixty_refunds_fit_stripe_limits_newest_first_in_whole_entries():
    notes = [fake_note(n) for n in range(60)]
    metadata = mirror.refund_history_metadata(notes)
    assert list(metadata) == ["refund_history"]  # one key of ours: far from Stripe's 50
    assert all(len(name) <= 40 and "[" not in name for name in metadata)
    value = metadata["refund_history"]
    assert len(value) <= 500 and len(value.encode()) <= 500
    entries = value.split("; ")
    *shown, more = entries
    assert shown[0] == "2026-11-19 re_3Q0059Mv2LkQ9RKHgCVdK0b 19,800 JPY succeeded"  # the newest
    assert shown[1].startswith("2026-11-18 re_3Q0058")
    assert more == f"… +{60 - len(shown)} more"
    assert all(entry.count(" ") == 4 for entry in shown)  # whole entries, never one cut in half
    # 58-byte entries: 8 of them and "; … +52 more" are 492 bytes; a ninth would not fit.
    assert len(shown) == 8 and len(value.encode()) == 492


def test_very_long_ids_are_cut_to_fit_and_still_counted():
    long_id = "re_" + "Q9RKHgCVdK" * 30  # 303 characters: Stripe ids may be up to 255, ours can be longer
    notes = [fake_note(1, refund_id=long_id), fake_note(2, refund_id=long_id + "x")]
    value = mirror.refund_history_text(notes)
    assert len(value.encode()) <= 500
    assert value.startswith("2026-09-23 re_Q9RKHgCVdK") and value.endswith(" +1 more")
    one = mirror.refund_history_text([fake_note(1, refund_id="re_" + "a" * 600)])
    assert len(one.encode()) == 500 and one.endswith("a…")


def test_amounts_are_formatted_per_currency_and_dates_in_the_display_time_zone():
    from zoneinfo import ZoneInfo

    notes = [
        fake_note(0, amount=1_000, currency="jpy"),
        fake_note(1, amount=1_980, currency="usd", status="pending"),
        fake_note(2, amount=5_120, currency="kwd", status="failed"),
    ]
    value = mirror.refund_history_text(notes)
    assert value == (
        "2026-09-23 re_3Q0002Mv2LkQ9RKHgCVdK0b 5.120 KWD failed; "
        "2026-09-22 re_3Q0001Mv2LkQ9RKHgCVdK0b 19.80 USD pending; "
        "2026-09-21 re_3Q0000Mv2LkQ9RKHgCVdK0b 1,000 JPY succeeded"
    )
    late = SimpleNamespace(**{**vars(fake_note(0)), "created_at": datetime(2026, 11, 2, 20, 0, tzinfo=UTC)})
    assert mirror.refund_history_text([late], timezone=ZoneInfo("Asia/Tokyo")).startswith("2026-11-03 ")


# --- writing to Stripe ----------------------------------------------------------------------------------


@respx.mock
def test_only_our_key_is_sent_and_the_sellers_keys_stay(db, settings):
    refund_id = sale(db, 1, customer="cus_QmV7dK2Lk9RKHg")
    fake = FakeStripe({"cus_QmV7dK2Lk9RKHg": {"crm_id": "8812", "membership": "gold"}})
    route = mock_stripe(fake)

    assert run(settings, db) == {"written": 1, "unchanged": 0, "refused": 0, "failed": 0}

    request = route.calls.last.request
    assert [name for name, _ in sent_form(request)] == ["metadata[refund_history]"]
    assert sent_metadata(request) == {"refund_history": f"2026-09-21 {refund_id} 19,800 JPY succeeded"}
    assert request.headers["idempotency-key"].startswith("refund-history:cus_QmV7dK2Lk9RKHg:0:")
    assert "stripe-account" not in request.headers  # the platform's own customer
    assert fake.metadata["cus_QmV7dK2Lk9RKHg"] == {
        "crm_id": "8812",
        "membership": "gold",
        "refund_history": f"2026-09-21 {refund_id} 19,800 JPY succeeded",
    }
    stored = mirror_row(db, "cus_QmV7dK2Lk9RKHg")
    assert stored.content_hash and stored.mirrored_at and stored.attempts == 1 and stored.last_error is None

    assert run(settings, db) == {"written": 0, "unchanged": 1, "refused": 0, "failed": 0}
    assert route.call_count == 1  # nothing changed: nothing sent


@respx.mock
def test_a_customer_with_sixty_refunds_gets_one_value_within_stripes_limits(db, settings):
    for n in range(60):
        sale(db, n, customer="cus_QmV7dK2Lk9RKHg")
    fake = FakeStripe({"cus_QmV7dK2Lk9RKHg": {"crm_id": "8812"}})
    route = mock_stripe(fake)

    run(settings, db)

    [(name, value)] = sent_form(route.calls.last.request)
    assert name == "metadata[refund_history]" and len(name) - len("metadata[]") <= 40
    assert len(value) <= 500 and len(value.encode()) <= 500
    assert value.startswith("2026-09-24 re_3Q0059Mv2LkQ9RKHgCVdK0b 19,800 JPY succeeded; ")
    assert value.endswith(" more") and len(fake.metadata["cus_QmV7dK2Lk9RKHg"]) == 2


@respx.mock
def test_every_stripe_customer_id_of_the_email_gets_the_history(db, settings):
    # ClickFunnels 1.0 made a new Stripe customer for each order of the same person.
    ids = ["cus_QmV7dK2Lk9RKHg", "cus_QmW1xZ8Pq3TbNs", "cus_QnA4cR6Jm2VyEe"]
    for n, cus in enumerate(ids):
        sale(db, n, customer=cus)
    fake = FakeStripe({cus: {} for cus in ids})
    route = mock_stripe(fake)

    assert mirror.mirror_customer(db, _reader(settings), EMAIL) == {cus: "written" for cus in ids}

    assert route.call_count == 3
    histories = {cus: keys["refund_history"] for cus, keys in fake.metadata.items()}
    assert len(set(histories.values())) == 1  # the person's whole history on each
    assert histories[ids[0]].count("; ") == 2
    keys = {call.request.headers["idempotency-key"] for call in route.calls}
    assert len(keys) == 3


def _reader(settings):
    from worker.stripe_api import StripeReader

    return StripeReader(settings, make_client(settings))


@respx.mock
def test_the_idempotency_key_is_stable_across_retries_and_new_for_a_new_history(db, settings):
    sale(db, 1, customer="cus_QmV7dK2Lk9RKHg")
    fake = FakeStripe({"cus_QmV7dK2Lk9RKHg": {}})
    fake.failures = [_error(500, "api_error", "An unknown error occurred")]
    route = mock_stripe(fake)

    assert run(settings, db)["written"] == 1  # the 500, then the retry that succeeded

    first, retry = (call.request for call in route.calls)
    assert first.headers["idempotency-key"] == retry.headers["idempotency-key"]
    assert sent_form(first) == sent_form(retry)

    sale(db, 2, customer="cus_QmV7dK2Lk9RKHg")  # a second refund: a new history
    run(settings, db)
    assert route.call_count == 3
    assert route.calls.last.request.headers["idempotency-key"] != first.headers["idempotency-key"]
    assert fake.metadata["cus_QmV7dK2Lk9RKHg"]["refund_history"].startswith("2026-09-21 re_3Q0002")


def test_a_history_that_comes_back_within_a_day_gets_a_new_key():
    # A, then B, then A again: Stripe would replay A's saved answer for A's old key and write nothing.
    digest_a, digest_b = (
        mirror.content_hash({"refund_history": "a"}),
        mirror.content_hash({"refund_history": "b"}),
    )
    keys = [
        mirror.idempotency_key("cus_QmV7dK2Lk9RKHg", 0, digest_a),
        mirror.idempotency_key("cus_QmV7dK2Lk9RKHg", 1, digest_b),
        mirror.idempotency_key("cus_QmV7dK2Lk9RKHg", 2, digest_a),
    ]
    assert len(set(keys)) == 3 and all(len(key) <= 255 for key in keys)
    assert mirror.idempotency_key("cus_QmV7dK2Lk9RKHg", 0, digest_a) == keys[0]


@respx.mock
def test_stripe_down_is_logged_in_one_line_and_written_once_on_the_next_run(db, settings, caplog):
    sale(db, 1, customer="cus_QmV7dK2Lk9RKHg")
    fake = FakeStripe({"cus_QmV7dK2Lk9RKHg": {"crm_id": "8812"}})
    fake.failures = [_error(500, "api_error", "An unknown error occurred")] * 3  # every try of the run
    route = mock_stripe(fake)

    with caplog.at_level(logging.WARNING, logger="handlers.stripe_notes_mirror"):
        assert run(settings, db) == {"written": 0, "unchanged": 0, "refused": 0, "failed": 1}
    [line] = [r.getMessage() for r in caplog.records if r.name == "handlers.stripe_notes_mirror"]
    assert "cus_QmV7dK2Lk9RKHg" in line and "HTTP 500" in line and "\n" not in line
    assert "refund_history" not in fake.metadata["cus_QmV7dK2Lk9RKHg"]
    failed_key = route.calls.last.request.headers["idempotency-key"]

    assert run(settings, db)["written"] == 1  # the next turn: a new key (Stripe replays a saved 500)
    assert route.calls.last.request.headers["idempotency-key"] != failed_key
    assert run(settings, db)["written"] == 0
    assert route.call_count == 4  # 3 tries, then one write, then nothing
    assert fake.metadata["cus_QmV7dK2Lk9RKHg"]["crm_id"] == "8812"


@respx.mock
def test_a_customer_stripe_refuses_is_not_retried_until_its_history_changes(db, settings, caplog):
    sale(db, 1, customer="cus_QmGone0000000A")  # deleted in the Stripe dashboard since
    sale(db, 2, customer="cus_QmV7dK2Lk9RKHg")
    fake = FakeStripe({"cus_QmV7dK2Lk9RKHg": {}})
    route = mock_stripe(fake)

    with caplog.at_level(logging.WARNING, logger="handlers.stripe_notes_mirror"):
        assert run(settings, db) == {"written": 1, "unchanged": 0, "refused": 1, "failed": 0}
    assert "No such customer" in caplog.text and "resource_missing" in caplog.text
    assert mirror_row(db, "cus_QmGone0000000A").last_error.startswith("InvalidRequestError; HTTP 404")
    run(settings, db)
    assert route.call_count == 2  # neither is asked again while nothing changed


@respx.mock
def test_a_connect_customer_is_written_as_its_account_with_that_sellers_refunds_only(db, settings):
    platform_refund = sale(db, 1, customer="cus_QmPlatform00001")
    seller_refund = sale(db, 2, customer="cus_QmSeller000001", account=CONNECT)
    fake = FakeStripe({"cus_QmSeller000001": {"crm_id": "7"}}, account=CONNECT)
    route = respx.post(f"{BASE}/v1/customers/cus_QmSeller000001").mock(
        side_effect=lambda request: fake(request, "cus_QmSeller000001")
    )
    platform = respx.post(f"{BASE}/v1/customers/cus_QmPlatform00001").mock(
        return_value=httpx.Response(
            200, json={"id": "cus_QmPlatform00001", "object": "customer", "metadata": {}}
        )
    )

    run(settings, db)

    request = route.calls.last.request
    assert request.headers["stripe-account"] == CONNECT
    history = sent_metadata(request)["refund_history"]
    assert seller_refund in history and platform_refund not in history
    platform_history = sent_metadata(platform.calls.last.request)["refund_history"]
    assert platform_refund in platform_history and seller_refund not in platform_history
    assert "stripe-account" not in platform.calls.last.request.headers


@respx.mock
def test_a_history_that_becomes_empty_deletes_our_key_only(db, settings):
    refund_id = sale(db, 1, customer="cus_QmV7dK2Lk9RKHg")
    fake = FakeStripe({"cus_QmV7dK2Lk9RKHg": {"crm_id": "8812"}})
    route = mock_stripe(fake)
    run(settings, db)
    with db.session() as session:  # the note moved to the customer's corrected email
        session.connection().execute(
            update(CustomerNote.__table__)
            .where(CustomerNote.__table__.c.key == f"refund:{refund_id}")
            .values(email="mika@example.jp", updated_at=datetime.now(UTC))
        )

    mirror.mirror_customer(db, _reader(settings), EMAIL)

    assert sent_form(route.calls.last.request) == [("metadata[refund_history]", "")]
    assert fake.metadata["cus_QmV7dK2Lk9RKHg"] == {"crm_id": "8812"}


@respx.mock
def test_off_by_default_the_clock_sends_nothing(db):
    sale(db, 1, customer="cus_QmV7dK2Lk9RKHg")
    route = respx.post(url__startswith=BASE).mock(return_value=httpx.Response(500))
    default = Settings(stripe_api_key=KEY, stripe_api_base=BASE)
    assert default.mirror_notes_to_stripe is False and clock.optional_jobs(default) == []

    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    clock.run_forever([], stop, tick_seconds=0.05, database=db, settings=default)
    assert route.call_count == 0 and mirror_row(db, "cus_QmV7dK2Lk9RKHg") is None


def test_on_the_clock_runs_the_mirror_every_minute(settings):
    [job] = clock.optional_jobs(settings)
    assert (job.name, job.interval_seconds) == ("mirror notes to stripe", 60)


def test_without_a_stripe_key_the_job_says_so_and_records_nothing(db, settings):
    sale(db, 1, customer="cus_QmV7dK2Lk9RKHg")
    keyless = settings.model_copy(update={"stripe_api_key": None})
    from worker import runtime

    original = runtime.stripe_client
    runtime.stripe_client = lambda: make_client(keyless)
    try:
        assert clock.mirror_notes_once(keyless, db) == "skipped: STRIPE_API_KEY is not set"
    finally:
        runtime.stripe_client = original
    assert mirror_row(db, "cus_QmV7dK2Lk9RKHg") is None


@respx.mock
def test_with_the_setting_on_the_clock_itself_writes_the_history(db, settings):
    sale(db, 1, customer="cus_QmV7dK2Lk9RKHg")
    fake = FakeStripe({"cus_QmV7dK2Lk9RKHg": {}})
    route = mock_stripe(fake)
    stop = threading.Event()
    timer = threading.Timer(0.8, stop.set)
    timer.start()
    with_client = settings.model_copy()
    from worker import runtime

    original = runtime.stripe_client
    runtime.stripe_client = lambda: make_client(with_client)
    try:
        clock.run_forever([], stop, tick_seconds=0.05, database=db, settings=with_client)
    finally:
        runtime.stripe_client = original
    assert route.call_count == 1 and "refund_history" in fake.metadata["cus_QmV7dK2Lk9RKHg"]


@respx.mock
def test_a_note_committed_late_by_a_slow_transaction_is_still_mirrored(db, settings):
    refund_id = sale(db, 1, customer="cus_QmV7dK2Lk9RKHg")
    fake = FakeStripe({"cus_QmV7dK2Lk9RKHg": {}})
    mock_stripe(fake)
    run(settings, db)
    mirrored_at = mirror_row(db, "cus_QmV7dK2Lk9RKHg").mirrored_at
    with db.session() as session:  # stamped before that run looked, committed only after it
        session.connection().execute(
            update(CustomerNote.__table__)
            .where(CustomerNote.__table__.c.key == f"refund:{refund_id}")
            .values(status="failed", updated_at=mirrored_at - timedelta(minutes=3))
        )

    assert run(settings, db)["written"] == 1
    assert fake.metadata["cus_QmV7dK2Lk9RKHg"]["refund_history"].endswith("19,800 JPY failed")


@respx.mock
def test_each_run_is_bounded_and_the_rest_wait_for_the_next(db, settings):
    ids = ["cus_QmA0000000000A", "cus_QmB0000000000B", "cus_QmC0000000000C"]
    for n, cus in enumerate(ids):
        sale(db, n, customer=cus, email=f"buyer{n}@example.com")
    fake = FakeStripe({cus: {} for cus in ids})
    route = mock_stripe(fake)
    reader = _reader(settings)

    assert mirror.mirror_changed_customers(db, reader, limit=2)["written"] == 2
    assert mirror.mirror_changed_customers(db, reader, limit=2)["written"] == 1
    assert route.call_count == 3 and all("refund_history" in keys for keys in fake.metadata.values())

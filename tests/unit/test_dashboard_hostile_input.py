"""Script payloads in every text that comes from Stripe or the funnel come out escaped on every page."""

from __future__ import annotations

import json

import pytest

from handlers.sales_rows import rebuild_sales_rows
from tests.sales_scenarios import funnel_purchase
from tests.stripe_fixtures import charge, event, refund
from tests.unit.dashboard_support import add_staff, make_client, sign_in
from worker.jobs import processing
from worker.receiver.intake import funnel_event, store_event
from worker.receiver.stripe_events import event_from_dict

SCRIPT = '<script>alert("x")</script>'
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
PAYLOAD = f"{SCRIPT}{ATTRIBUTE}"
RAW_MARKERS = ("<script>alert", "<img src=x")
EMAIL = "mallory@example.com"
T = 1_790_000_000


def _stripe(db, document) -> None:
    store_event(db, event_from_dict(document), json.dumps(document))
    outcome = processing.process_event(db, document["id"], max_attempts=3)
    assert outcome.status == "done", outcome


def _funnel(db, body) -> None:
    parsed, envelope = funnel_event(json.dumps(body).encode())
    store_event(db, parsed, envelope)
    assert processing.process_event(db, parsed.id, max_attempts=3).status == "done"


def _paid(charge_id: str, created: int, **fields):
    return charge(
        charge_id,
        amount=29_800,
        currency="jpy",
        created=created,
        customer="cus_mallory",
        description=PAYLOAD,
        billing_details={"email": EMAIL, "name": PAYLOAD},
        metadata={"note": PAYLOAD},
        **fields,
    )


@pytest.fixture
def hostile_db(db):
    for number, intent in ((1, "pi_x1"), (2, "pi_x2")):
        body = funnel_purchase(
            5000 + number,
            name=PAYLOAD,
            cents=29_800,
            currency="jpy",
            cancel_after=None,
            subscription_id=None,
            charge_id=intent,
            email=EMAIL,
            created_at=f"2026-09-2{number}T00:00:00Z",
        )
        body["purchase"]["contact"]["first_name"] = PAYLOAD
        _funnel(db, body)
    _stripe(db, event("charge.succeeded", _paid("ch_x1", T, payment_intent="pi_x1"), created=T))
    _stripe(
        db, event("charge.succeeded", _paid("ch_x2", T + 86_400, payment_intent="pi_x2"), created=T + 86_400)
    )
    refunded = _paid("ch_x2", T + 86_400, payment_intent="pi_x2", amount_refunded=29_800, refunded=True)
    _stripe(db, event("charge.refunded", refunded, created=T + 90_000))
    _stripe(
        db,
        event(
            "refund.created",
            refund(
                "re_x2",
                charge_id="ch_x2",
                amount=29_800,
                currency="jpy",
                payment_intent="pi_x2",
                reason="requested_by_customer",
                created=T + 90_000,
                metadata={"why": PAYLOAD},
            ),
            created=T + 90_000,
        ),
    )
    failed = _paid(
        "ch_x3",
        T + 100_000,
        payment_intent="pi_x3",
        status="failed",
        paid=False,
        failure_message=PAYLOAD,
        failure_code="card_declined",
    )
    _stripe(db, event("charge.failed", failed, created=T + 100_000))
    dispute = {
        "id": "dp_x1",
        "object": "dispute",
        "amount": 29_800,
        "currency": "jpy",
        "charge": "ch_x1",
        "payment_intent": "pi_x1",
        "status": "needs_response",
        "reason": "fraudulent",
        "is_charge_refundable": False,
        "created": T + 200_000,
        "evidence_details": {"due_by": T + 900_000},
        "metadata": {"x": PAYLOAD},
    }
    _stripe(db, event("charge.dispute.created", dispute, created=T + 200_000))
    with db.session() as session:
        rebuild_sales_rows(session)
    add_staff(db, "admin@example.com", "admin")
    return db


def test_script_payloads_are_escaped_on_every_page(hostile_db):
    client = make_client(hostile_db)
    assert sign_in(client, "admin@example.com").status_code == 303
    events = [e for e in client.get("/app/events").text.split('data-event-id="')[1:]]
    event_ids = [chunk.split('"', 1)[0] for chunk in events]
    pages = [
        "/app/",
        "/app/sales",
        f"/app/sales?product={PAYLOAD}",
        f"/app/customers?q={EMAIL}",
        f"/app/customers?q={PAYLOAD}",
        f"/app/customers/{EMAIL}",
        "/app/plans",
        "/app/alerts?status=all",
        "/app/events",
        "/app/runs",
        "/app/audit",
        *(f"/app/events/{event_id}" for event_id in event_ids),
        *(f"/app/events/{event_id}/replay" for event_id in event_ids[:2]),
    ]
    record = client.get(f"/app/customers/{EMAIL}").text
    for kind in ("payment", "failed_payment", "refund", "dispute", "alert"):
        assert f'data-kind="{kind}"' in record, kind  # every kind of text-carrying row is on the page
    showing_payload = 0
    for path in pages:
        response = client.get(path, follow_redirects=True)
        assert response.status_code == 200, path
        for marker in RAW_MARKERS:
            assert marker not in response.text, f"{path} shows {marker!r} unescaped"
        showing_payload += "&lt;script&gt;alert(" in response.text
    # The payloads did reach the pages (escaped): the customer page, the sales page, alerts, events...
    assert showing_payload >= 8


def test_the_csv_export_neutralises_formulas_from_the_funnel(db):
    body = funnel_purchase(
        6001,
        name='=HYPERLINK("http://evil.example")',
        cents=500,
        currency="usd",
        cancel_after=None,
        subscription_id=None,
        charge_id="pi_f1",
        email="f@example.com",
    )
    _funnel(db, body)
    with db.session() as session:
        rebuild_sales_rows(session)
    add_staff(db, "viewer@example.com", "viewer")
    client = make_client(db)
    sign_in(client, "viewer@example.com")
    export = client.get("/app/sales.csv").text
    assert "\"'=HYPERLINK(" in export and ',"=HYPERLINK' not in export

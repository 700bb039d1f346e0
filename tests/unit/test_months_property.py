"""Generated seller months through the real handlers and the nightly run, checked against ground truth.

Each month (stripe_standin/months.py) is a funnel seller's orders, plans, subscriptions, refunds,
failed installments and disputes, with webhooks dropped, duplicated and shuffled, and its ground truth
written from the month's facts, not from this project's code. Every delivery is stored and processed as
the receiver and the actor do (Stripe links fetched from the stand-in, a real HTTP server on
127.0.0.1); then the nightly run lists the month from the stand-in. The sales view, `plans`, alerts and
notes must then equal the truth exactly.

    pytest tests/unit/test_months_property.py                      # 50 months (fixed set with CI=true)
    MONTHS=500 pytest tests/unit/test_months_property.py           # more
    pytest tests/unit/test_months_property.py --hypothesis-seed=3  # the same months again
    MONTH_SEED=1234 pytest tests/unit/test_months_property.py      # one month, by its seed
"""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from handlers.customers import refresh_customers
from handlers.plans import load_plans
from handlers.purchases import store_purchases
from handlers.reconcile import reconcile
from handlers.sales_import import read_sales_csv
from handlers.sales_view import load_sales_view
from models import Alert, CustomerNote
from stripe_standin.months import Month, make_month
from stripe_standin.server import StandinServer
from tests.conftest import empty_tables
from worker.jobs import processing
from worker.receiver.intake import funnel_event, store_event
from worker.receiver.stripe_events import event_from_dict
from worker.settings import Settings
from worker.stripe_api import StripeReader, make_client

MONTHS = int(os.environ.get("MONTHS", "50"))
ONE_MONTH = os.environ.get("MONTH_SEED")


@pytest.fixture(scope="module")
def standin():
    server = StandinServer().start()
    try:
        yield server
    finally:
        server.stop()


def deliver(db, month: Month, reader) -> None:
    for delivery in month.deliveries:
        if delivery.kind == "stripe":
            document = delivery.body
            store_event(db, event_from_dict(document), json.dumps(document))
            event_id = document["id"]
        elif delivery.kind == "funnel":
            parsed, envelope = funnel_event(json.dumps(delivery.body).encode())
            store_event(db, parsed, envelope)
            event_id = parsed.id
        else:
            _import_csv(db, delivery.body)
            continue
        # Processed as the actor does; a duplicate delivery is a stored event already done.
        outcome = processing.process_event(db, event_id, max_attempts=3, stripe=lambda: reader)
        assert outcome.status in ("done", "ignored"), (month.seed, event_id, outcome)


def _import_csv(db, text: str) -> None:
    result = read_sales_csv(io.StringIO(text))
    assert not result.errors, [(e.line, e.message) for e in result.errors]
    with db.session() as session:
        store_purchases(session, result.rows)
        refresh_customers(session, {row["customer_email"] for row in result.rows})


def run_month(db, standin, seed: int) -> Month:
    month = make_month(seed)
    standin.reset(month.store)
    settings_ = Settings(stripe_api_key="sk_test_months", stripe_api_base=standin.url, stripe_max_attempts=2)
    reader = StripeReader(settings_, make_client(settings_))
    deliver(db, month, reader)
    # The month's objects are its end state: newer than any of its events (the month may lie ahead of
    # this machine's clock, which the run would otherwise take as "now").
    reconcile(db, reader, _moment(month.start), _moment(month.end), as_of=_moment(month.end))
    return month


def _moment(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def _unix(text: str | None) -> int | None:
    return None if text is None else int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


SALE_FIELDS = (
    "payment_intent_id",
    "customer_email",
    "amount",
    "currency",
    "kind",
    "installment",
    "installments_total",
    "subscription_id",
    "status",
    "refunded_amount",
    "funnel_purchase_id",
    "source",
)


def check_sales(db, month: Month) -> None:
    with db.session() as session:
        rows = [r.as_json() for r in load_sales_view(session)]
    assert [r for r in rows if r["charge_id"] is None] == [], "a row without its Stripe payment"
    charges = [r["charge_id"] for r in rows]
    assert len(charges) == len(set(charges)), "a payment shown twice"
    seen = {r["charge_id"]: r for r in rows}
    truth = {s.charge_id: s for s in month.truth.sales}
    assert sorted(seen) == sorted(truth), (
        f"extra: {sorted(set(seen) - set(truth))}, missing: {sorted(set(truth) - set(seen))}"
    )
    for charge_id, expected in truth.items():
        row = seen[charge_id]
        got = {name: row[name] for name in SALE_FIELDS}
        want = {name: getattr(expected, name) for name in SALE_FIELDS}
        assert got == want, f"{charge_id}: {_diff(got, want)}"
        if expected.funnel_purchase_id:
            assert row["product"] == expected.product, charge_id
    _check_invariants(rows, month)


def _diff(got: dict, want: dict) -> str:
    return ", ".join(
        f"{name}: got {got[name]!r}, want {want[name]!r}" for name in want if got[name] != want[name]
    )


def _check_invariants(rows: list[dict], month: Month) -> None:
    numbers: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        if row["subscription_id"]:
            numbers[row["subscription_id"]].add(row["installment"])
            if row["installments_total"]:
                assert row["installment"] <= row["installments_total"], row
    for subscription_id, used in numbers.items():
        assert used == set(range(1, len(used) + 1)), (subscription_id, sorted(used))
    gross: dict[str, int] = defaultdict(int)
    refunded: dict[str, int] = defaultdict(int)
    for row in rows:
        if row["status"] != "failed":
            gross[row["currency"]] += row["amount"]
            refunded[row["currency"]] += row["refunded_amount"]
    assert dict(gross) == month.truth.gross
    assert {c: v for c, v in refunded.items() if v} == {c: v for c, v in month.truth.refunded.items() if v}


PLAN_FIELDS = (
    "customer_email",
    "kind",
    "installments_paid",
    "installments_total",
    "failed_payments",
    "status",
    "funnel_purchase_id",
)


def check_plans(db, month: Month) -> None:
    with db.session() as session:
        plans = {p.subscription_id: p.as_json() for p in load_plans(session)}
    truth = {p.subscription_id: p for p in month.truth.plans}
    assert sorted(plans) == sorted(truth), (
        f"extra: {sorted(set(plans) - set(truth))}, missing: {sorted(set(truth) - set(plans))}"
    )
    for subscription_id, expected in truth.items():
        plan = plans[subscription_id]
        got = {name: plan[name] for name in PLAN_FIELDS} | {"access_ends_at": _unix(plan["access_ends_at"])}
        want = {name: getattr(expected, name) for name in PLAN_FIELDS} | {
            "access_ends_at": expected.access_ends_at
        }
        assert got == want, f"{subscription_id}: {_diff(got, want)}"


def check_alerts_and_notes(db, month: Month) -> None:
    with db.session() as session:
        stored = session.exec(select(Alert)).all()
    # An access alert whose refund later failed is withdrawn (resolved by the worker), not deleted.
    withdrawn = [a for a in stored if a.state == "withdrawn"]
    assert all(a.status == "resolved" and a.kind == "access_revocation" for a in withdrawn)
    alerts = {a.key: a for a in stored if a.state != "withdrawn"}
    with db.session() as session:
        notes = {n.key: n for n in session.exec(select(CustomerNote)).all() if n.kind == "refund"}
    truth = {a.key: a for a in month.truth.alerts}
    assert sorted(alerts) == sorted(truth), (
        f"extra: {sorted(set(alerts) - set(truth))}, missing: {sorted(set(truth) - set(alerts))}"
    )
    for key, expected in truth.items():
        alert = alerts[key]
        got = {"kind": alert.kind, "customer_email": alert.customer_email, "kept": alert.kept_charge_id}
        want = {
            "kind": expected.kind,
            "customer_email": expected.customer_email,
            "kept": expected.kept_charge_id,
        }
        if expected.kind != "payment_failed":
            got["charge_id"], want["charge_id"] = alert.charge_id, expected.charge_id
        if expected.kind == "dispute":
            got["state"], want["state"] = alert.state, expected.dispute_status
        assert got == want, f"{key}: {_diff(got, want)}"
        if expected.kind == "dispute":
            assert "see Stripe" not in alert.message and "A customer" not in alert.message, key
    assert {key: note.status for key, note in notes.items()} == month.truth.notes


def check_sales_rows(db) -> None:
    """The dashboard's materialized sales rows, kept by each refresh, equal the view built in Python."""
    from handlers.sales_rows import SALE_FIELDS
    from tests.unit.test_sales_rows import stored_rows, view_rows

    with db.session() as session:
        built, stored = view_rows(session), stored_rows(session)
    assert stored == built, (
        f"stored only: {sorted(set(stored) - set(built), key=repr)}, "
        f"view only: {sorted(set(built) - set(stored), key=repr)} ({', '.join(SALE_FIELDS)})"
    )
    check_plan_rows(db)


def check_plan_rows(db) -> None:
    """The dashboard's materialized plans equal `load_plans` (built in Python from every fact)."""
    from sqlalchemy import select as select_core

    from handlers.sales_rows import PLAN_FIELDS
    from models import PlanRowRecord

    with db.session() as session:
        built = sorted(tuple(getattr(p, name) for name in PLAN_FIELDS) for p in load_plans(session))
        table = PlanRowRecord.__table__
        columns = [table.c[name] for name in PLAN_FIELDS]
        stored = sorted(tuple(row) for row in session.execute(select_core(*columns)).all())
    only_stored = sorted(set(stored) - set(built), key=repr)
    only_built = sorted(set(built) - set(stored), key=repr)
    assert stored == built, f"stored only: {only_stored}, view only: {only_built}"


def check_month(db, standin, seed: int) -> None:
    month = run_month(db, standin, seed)
    try:
        check_sales_rows(db)
        check_sales(db, month)
        check_plans(db, month)
        check_alerts_and_notes(db, month)
    except AssertionError as failure:
        raise AssertionError(f"month seed {seed}: {failure}") from failure


@pytest.mark.skipif(not ONE_MONTH, reason="set MONTH_SEED=N to check one month")
def test_one_month(db, standin):
    check_month(db, standin, int(ONE_MONTH or 0))


# Months that once failed, checked on every run whatever Hypothesis draws:
# 213324: an installment retried and paid while its webhooks were lost; the nightly run found the paid
# invoice but refreshed nobody, so the dashboard's plan row kept its unpaid invoice.
FOUND_BY_HYPOTHESIS = (213324,)


@pytest.mark.parametrize("seed", FOUND_BY_HYPOTHESIS)
def test_months_that_once_failed(db, standin, seed):
    check_month(db, standin, seed)


@settings(
    max_examples=MONTHS,
    deadline=None,
    database=None,
    # CI checks the same months every run; locally each run draws new ones (--hypothesis-seed repeats).
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_a_generated_month_matches_its_ground_truth(db, standin, seed):
    empty_tables(db)
    check_month(db, standin, seed)

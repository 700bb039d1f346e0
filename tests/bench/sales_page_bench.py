"""How fast the dashboard's Sales page is with 100,000 payments stored, against building the view in Python.

Stores N payments (default 100,000) straight into the fact tables (charges, invoices, invoice payments,
refunds, disputes, funnel purchases: one-time sales, 3-payment plans, declined attempts, refunds, lost
disputes, funnel sales whose payment has not arrived, over a year, several currencies), fills
`sales_rows` with `handlers.sales_rows.rebuild_sales_rows`, then times, each RUNS times (default 30):

- `query_sales` with no filter (page 1), a customer filter (part of an email), a date range (a month in
  Tokyo), a product and status filter, and page 500 with no filter;
- `period_totals` for a month;
and, in the same run, the baseline the page replaces: `load_all_facts(session).view()` (the whole view
built in Python, as `SalesFacts.view()` does it per account; --baseline-runs, default 1: it takes
minutes at 100k). It prints p50 and p95 of each and the ratio of the
baseline to each query's p50. Target: p95 < 200 ms per page at 100k.

SQLite by default (a file in a temporary folder); PostgreSQL when DATABASE_URL is given (a database of
its own, `<name>_sales_bench`, made afresh and dropped afterwards):

    .venv/bin/python tests/bench/sales_page_bench.py
    DATABASE_URL=$(scripts/postgres.sh) .venv/bin/python tests/bench/sales_page_bench.py
    .venv/bin/python tests/bench/sales_page_bench.py --payments 10000 --runs 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import func, insert, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from handlers.sales_rows import rebuild_sales_rows  # noqa: E402
from handlers.sales_view import load_all_facts  # noqa: E402
from models import (  # noqa: E402
    Charge,
    Database,
    Dispute,
    FunnelPurchase,
    Invoice,
    InvoicePayment,
    Refund,
)
from models.db import make_engine, normalise_url  # noqa: E402
from worker.dashboard.sales_query import SalesFilter, period_totals, query_sales  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_SECONDS = 365 * 86_400
PRODUCTS = [
    f"{name} {n}" for name in ("Workshop", "Course", "Ebook", "Coaching", "Membership") for n in range(8)
]
CURRENCIES = [("usd", 0.8), ("jpy", 0.15), ("eur", 0.05)]
TOKYO = ZoneInfo("Asia/Tokyo")


# --- the data ---------------------------------------------------------------------------------------------


def generate(payments: int, seed: int = 7) -> dict[str, list[dict]]:
    """Facts for `payments` payment attempts: rows for each table, as the handlers would store them."""
    rng = random.Random(seed)
    customers = [f"customer{n:06d}@example.com" for n in range(max(1, payments // 5))]
    now = datetime(2027, 1, 2, tzinfo=UTC)
    tables: dict[str, list[dict]] = {name: [] for name in ("charges", "invoices", "payments", "refunds")}
    tables |= {"disputes": [], "purchases": []}
    made = 0
    serial = 0

    def charge(email, product, amount, currency, at, *, status="succeeded", invoice=None, refunded=0):
        nonlocal serial
        serial += 1
        charge_id = f"ch_{serial:08d}"
        tables["charges"].append(
            {
                "id": charge_id,
                "account": "",
                "amount": amount,
                "amount_refunded": refunded,
                "currency": currency,
                "status": status,
                "paid": status == "succeeded",
                "refunded": refunded >= amount,
                "customer": f"cus_{email.split('@')[0]}",
                "payment_intent": f"pi_{serial:08d}",
                "description": product,
                "customer_email": email,
                "invoice_id": invoice,
                "no_invoice": invoice is None,
                "failure_code": "card_declined" if status == "failed" else None,
                "failure_message": "Your card was declined." if status == "failed" else None,
                "livemode": False,
                "created": at,
                "found_by": "webhook" if rng.random() < 0.97 else "reconcile",
                "version": int(at.timestamp()),
                "last_event_id": None,
                "updated_at": now,
            }
        )
        if refunded:
            tables["refunds"].append(
                {
                    "id": f"re_{serial:08d}",
                    "account": "",
                    "charge": charge_id,
                    "payment_intent": f"pi_{serial:08d}",
                    "amount": refunded,
                    "currency": currency,
                    "status": "succeeded",
                    "reason": "requested_by_customer",
                    "created": at + timedelta(days=3),
                    "version": int(at.timestamp()) + 3 * 86_400,
                    "last_event_id": None,
                    "updated_at": now,
                }
            )
        return charge_id, f"pi_{serial:08d}"

    while made < payments:
        email = rng.choice(customers)
        product = rng.choice(PRODUCTS)
        currency = rng.choices([c for c, _ in CURRENCIES], [w for _, w in CURRENCIES])[0]
        amount = rng.randrange(1_000, 50_000, 100) * (100 if currency == "jpy" else 1)
        at = START + timedelta(seconds=rng.randrange(YEAR_SECONDS))
        shape = rng.random()
        if shape < 0.15 and made + 3 <= payments:  # a 3-payment plan sold in the funnel
            serial += 1
            subscription = f"sub_{serial:08d}"
            first_intent = None
            for number in range(1, 4):
                paid_at = at + timedelta(days=30 * (number - 1))
                invoice_id = f"in_{serial:08d}_{number}"
                failed_first = number == 3 and rng.random() < 0.1
                if failed_first:
                    charge(email, product, amount, currency, paid_at, status="failed", invoice=invoice_id)
                charge_id, intent = charge(
                    email,
                    product,
                    amount,
                    currency,
                    paid_at + timedelta(days=3 if failed_first else 0),
                    invoice=invoice_id,
                )
                first_intent = first_intent or intent
                tables["invoices"].append(
                    {
                        "id": invoice_id,
                        "account": "",
                        "subscription_id": subscription,
                        "customer": f"cus_{email.split('@')[0]}",
                        "customer_email": email,
                        "billing_reason": "subscription_create" if number == 1 else "subscription_cycle",
                        "status": "paid",
                        "amount_paid": amount,
                        "amount_due": amount,
                        "currency": currency,
                        "product": product,
                        "attempt_count": 2 if failed_first else 1,
                        "next_payment_attempt": None,
                        "price_id": None,
                        "charge_id": charge_id,
                        "payment_intent_id": intent,
                        "paid_at": paid_at,
                        "created": paid_at,
                        "version": int(paid_at.timestamp()),
                        "updated_at": now,
                    }
                )
                made += 2 if failed_first else 1
            tables["purchases"].append(
                _purchase(serial, email, product, amount, currency, at, now, subscription, first_intent, 3)
            )
        elif shape < 0.20:  # a declined attempt
            charge(email, product, amount, currency, at, status="failed")
            made += 1
        elif shape < 0.22:  # a funnel sale whose payment has not arrived
            serial += 1
            tables["purchases"].append(
                _purchase(serial, email, product, amount, currency, at, now, None, f"pi_x{serial:08d}", None)
            )
            made += 1
        else:  # a one-time sale; some refunded, a few disputed and lost
            refunded = amount if rng.random() < 0.04 else (amount // 2 if rng.random() < 0.03 else 0)
            charge_id, intent = charge(email, product, amount, currency, at, refunded=refunded)
            if rng.random() < 0.3:
                serial += 1
                tables["purchases"].append(
                    _purchase(serial, email, product, amount, currency, at, now, None, intent, None)
                )
            if not refunded and rng.random() < 0.005:
                tables["disputes"].append(
                    {
                        "id": f"dp_{charge_id}",
                        "account": "",
                        "charge": charge_id,
                        "payment_intent": intent,
                        "amount": amount,
                        "currency": currency,
                        "status": rng.choice(["lost", "needs_response", "won"]),
                        "reason": "fraudulent",
                        "due_by": None,
                        "is_charge_refundable": False,
                        "created": at + timedelta(days=10),
                        "version": int(at.timestamp()) + 10 * 86_400,
                        "updated_at": now,
                    }
                )
            made += 1
    for invoice in tables["invoices"]:
        tables["payments"].append(
            {
                "id": f"inpay_{invoice['id']}",
                "invoice_id": invoice["id"],
                "payment_intent_id": invoice["payment_intent_id"],
                "charge_id": None,
                "amount_paid": invoice["amount_paid"],
                "currency": invoice["currency"],
                "status": "paid",
                "paid_at": invoice["paid_at"],
                "version": invoice["version"],
                "updated_at": now,
            }
        )
    return tables


def _purchase(serial, email, product, amount, currency, at, now, subscription, payment, installments):
    return {
        "purchase_id": f"{serial}",
        "product_key": product,
        "product_name": product,
        "amount": amount,
        "currency": currency,
        "customer_email": email,
        "customer_name": None,
        "stripe_plan": "plan_3" if installments else None,
        "installments_total": installments,
        "is_subscription": bool(subscription),
        "subscription_id": subscription,
        "charge_id": payment,
        "status": "paid",
        "purchased_at": at,
        "origin": "webhook",
        "version": int(at.timestamp()),
        "updated_at": now,
    }


TABLES = {
    "charges": Charge,
    "invoices": Invoice,
    "payments": InvoicePayment,
    "refunds": Refund,
    "disputes": Dispute,
    "purchases": FunnelPurchase,
}


def store(db: Database, tables: dict[str, list[dict]]) -> None:
    with db.session() as session:
        for name, model in TABLES.items():
            rows = tables[name]
            for start in range(0, len(rows), 5_000):
                session.connection().execute(insert(model.__table__), rows[start : start + 5_000])


# --- the timings ------------------------------------------------------------------------------------------


def timed(db: Database, runs: int, action) -> list[float]:
    """Milliseconds of each of `runs` calls of action(session), each in a session of its own."""
    times = []
    for _ in range(runs):
        with db.session() as session:
            started = time.perf_counter()
            action(session)
            times.append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def cases(customer: str) -> dict:
    month = SalesFilter(date_from=date(2026, 6, 1), date_to=date(2026, 6, 30))
    return {
        "no filter, page 1": lambda s: query_sales(s, SalesFilter()),
        "customer (part of an email)": lambda s: query_sales(s, SalesFilter(customer=customer)),
        "date range (June, Tokyo)": lambda s: query_sales(s, month, tz=TOKYO),
        "product + status": lambda s: query_sales(s, SalesFilter(product="course 3", status="paid")),
        "no filter, page 500": lambda s: query_sales(s, SalesFilter(), page=500),
        "period_totals (a month)": lambda s: period_totals(
            s, datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
        ),
    }


def run(url: str, payments: int, runs: int, baseline_runs: int) -> dict:
    db = Database(url)
    try:
        db.create_all()
        started = time.perf_counter()
        store(db, generate(payments))
        stored_s = time.perf_counter() - started
        # The baseline, timed in the same run: the whole view built in Python, as the page would
        # otherwise have to (quadratic in handlers.matching: minutes at 100k, so few runs).
        baseline = []
        for _ in range(baseline_runs):
            with db.session() as session:
                started = time.perf_counter()
                built = [(part, part.view()) for part in load_all_facts(session).by_account()]
                baseline.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        with db.session() as session:
            rows = rebuild_sales_rows(session, built)  # the rows just built: no second build
        rebuild_s = time.perf_counter() - started
        if db.dialect == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE")
        else:
            with db.engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
        with db.session() as session:
            page_500 = query_sales(session, SalesFilter(), page=500)
            assert page_500.total_rows == rows, "the page counts another number of rows than were built"
            if rows >= 500 * 50:
                assert len(page_500.rows) == 50, "page 500 is not a full page"
            charges = session.connection().execute(select(func.count()).select_from(Charge)).scalar()
        results = {}
        for name, action in cases("customer0001").items():
            times = timed(db, runs, action)
            results[name] = {"p50_ms": percentile(times, 0.5), "p95_ms": percentile(times, 0.95)}
        base = statistics.median(baseline)
        for figures in results.values():
            figures["baseline_over_p50"] = base / figures["p50_ms"] if figures["p50_ms"] else None
        return {
            "backend": db.dialect,
            "payments": payments,
            "charges": charges,
            "sales_rows": rows,
            "store_s": stored_s,
            "rebuild_s": rebuild_s,
            "runs": runs,
            "baseline_view_ms": {"runs": baseline_runs, "p50": base, "max": max(baseline)},
            "queries": results,
        }
    finally:
        db.dispose()


def _admin(admin_url: str, *statements: str) -> None:
    engine = make_engine(admin_url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def report(result: dict) -> None:
    print(
        f"{result['backend']}: {result['payments']:,} payments ({result['charges']:,} charges), "
        f"{result['sales_rows']:,} sales rows; stored in {result['store_s']:.1f}s, "
        f"sales rows written in {result['rebuild_s']:.1f}s"
    )
    base = result["baseline_view_ms"]
    print(f"  baseline load_all_facts().view(): {base['p50']:,.0f} ms (median of {base['runs']})")
    print(f"  {'query':32} {'p50 ms':>8} {'p95 ms':>8} {'baseline/p50':>13}  (runs: {result['runs']})")
    for name, figures in result["queries"].items():
        ratio = figures["baseline_over_p50"]
        print(
            f"  {name:32} {figures['p50_ms']:8.1f} {figures['p95_ms']:8.1f} "
            f"{(f'{ratio:,.0f}x' if ratio else '-'):>13}"
        )
    worst = max(f["p95_ms"] for f in result["queries"].values())
    print(f"  target p95 < 200 ms: {'met' if worst < 200 else 'MISSED'} (worst p95 {worst:.1f} ms)")


@contextmanager
def scratch_database(suffix: str) -> Iterator[str]:
    """A database of the bench's own: a SQLite file in a temporary folder, or, when DATABASE_URL names a
    PostgreSQL server, `<name>_<suffix>` made afresh there and dropped afterwards."""
    given = os.environ.get("DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix=f"{suffix}-") as folder:
        if not given or given.startswith("sqlite"):
            yield given or f"sqlite:///{folder}/{suffix}.db"
            return
        url = make_url(normalise_url(given))
        name = f"{url.database}_{suffix}"
        admin = url.set(database="postgres").render_as_string(hide_password=False)
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--baseline-runs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with scratch_database("sales_bench") as target:
        result = run(target, args.payments, args.runs, args.baseline_runs)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How fast the dashboard's pages answer with 100,000 payments stored, over HTTP through the real app.

Stores the same month-of-a-year data as `sales_page_bench.py` (payments, plans, refunds, disputes,
funnel purchases), one event-log row per payment and a few hundred alerts, fills `sales_rows`, signs
in, then requests each page RUNS times (default 30) through the web process's own ASGI app (session
cookie, routing, queries, templates; no network): the overview, the Sales page (page 1, a customer
filter, a month in Tokyo, page 500), a customer's page, the CSV export of one customer, and the plans
page. In the same run it times two baselines: `GET /healthz` (the framework's floor) and building the
whole sales view in Python (`load_all_facts().view()`, what a page would cost without `sales_rows`).
It prints p50/p95 per page and the ratios. Target: p95 < 200 ms for the sales, customer and
overview pages.

    .venv/bin/python tests/bench/dashboard_pages_bench.py
    DATABASE_URL=$(scripts/postgres.sh) .venv/bin/python tests/bench/dashboard_pages_bench.py
    .venv/bin/python tests/bench/dashboard_pages_bench.py --payments 10000 --runs 10
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import insert  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from handlers.sales_rows import rebuild_sales_rows  # noqa: E402
from handlers.sales_view import load_all_facts  # noqa: E402
from models import Alert, Database, Event  # noqa: E402
from tests.bench.sales_page_bench import generate, percentile, scratch_database, store  # noqa: E402

PASSWORD = "bench password 12345"
TARGET_MS = 200
TARGETED = (
    "overview",
    "sales, page 1",
    "sales, part of an email",
    "sales, one email",
    "sales, June in Tokyo",
    "sales, page 500",
    "customer page",
)


def add_events_and_alerts(db: Database, tables: dict) -> None:
    """One stored event per charge (most done, a few failed or dead) and an alert per 250 charges."""
    charges = tables["charges"]
    events, alerts = [], []
    for number, charge in enumerate(charges):
        status = "dead" if number % 5_000 == 0 else "failed" if number % 2_000 == 0 else "done"
        events.append(
            {
                "id": f"evt_{number:09d}",
                "account": "",
                "type": "charge.succeeded",
                "api_version": "2025-03-31.basil",
                "livemode": False,
                "created": charge["created"],
                "payload": json.dumps({"id": f"evt_{number:09d}", "data": {"object": {"id": charge["id"]}}}),
                "status": status,
                "attempts": 1,
                "received_at": charge["created"] + timedelta(seconds=2),
                "updated_at": charge["created"] + timedelta(seconds=3),
                "processed_at": charge["created"] + timedelta(seconds=3),
            }
        )
        if number % 250 == 0:
            alerts.append(
                {
                    "key": f"payment_failed:in_{number:09d}",
                    "kind": "payment_failed" if number % 500 else "access_revocation",
                    "status": "open" if number % 1_000 else "resolved",
                    "customer_email": charge["customer_email"],
                    "charge_id": charge["id"],
                    "message": f"bench alert for {charge['id']}",
                    "created_at": charge["created"],
                    "updated_at": charge["created"],
                    "delivery_status": "sent",
                    "delivery_attempts": 1,
                }
            )
    with db.session() as session:
        for start in range(0, len(events), 5_000):
            session.connection().execute(insert(Event.__table__), events[start : start + 5_000])
        session.connection().execute(insert(Alert.__table__), alerts)


def signed_in_client(db: Database) -> TestClient:
    from worker.dashboard import accounts
    from worker.dashboard.app import create_dashboard
    from worker.dashboard.web import DashboardConfig
    from worker.receiver.web import create_app

    accounts.add_user(db, "bench@example.com", "admin", PASSWORD, actor="bench")
    config = DashboardConfig(secret_key="bench-" + "k" * 40, now=lambda: datetime(2026, 12, 15, tzinfo=UTC))
    app = create_app(
        db=db, enqueue=lambda *_: None, secrets=["whsec_bench"], dashboard=create_dashboard(db, config)
    )
    client = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/app/sign-in").text).group(1)
    signed = client.post(
        "/app/sign-in", data={"email": "bench@example.com", "password": PASSWORD, "csrf_token": token}
    )
    assert signed.status_code == 303, signed.text[:300]
    return client


def pages(customer: str) -> dict[str, str]:
    return {
        "overview": "/app/",
        "sales, page 1": "/app/sales",
        "sales, part of an email": f"/app/sales?customer={customer.split('@')[0]}",
        "sales, one email": f"/app/sales?customer={customer}",
        "sales, June in Tokyo": "/app/sales?from=2026-06-01&to=2026-06-30",
        "sales, page 500": "/app/sales?page=500",
        "customer page": f"/app/customers/{customer}",
        "sales CSV, a customer": f"/app/sales.csv?customer={customer.split('@')[0]}",
        "plans": "/app/plans",
    }


def timed_get(client: TestClient, path: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times


def run(url: str, payments: int, runs: int, baseline_runs: int, slow_runs: int) -> dict:
    db = Database(url)
    try:
        db.create_all()
        tables = generate(payments)
        store(db, tables)
        add_events_and_alerts(db, tables)
        with db.session() as session:
            rows = rebuild_sales_rows(session)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE" if db.dialect == "postgresql" else "ANALYZE")
        client = signed_in_client(db)
        customer = "customer000001@example.com"
        healthz = timed_get(client, "/healthz", runs)
        view_ms = []
        for _ in range(baseline_runs):
            with db.reading() as session:
                started = time.perf_counter()
                load_all_facts(session).view()
                view_ms.append((time.perf_counter() - started) * 1000)
        results = {}
        for name, path in pages(customer).items():
            times = timed_get(client, path, slow_runs if name == "plans" else runs)
            results[name] = {
                "p50_ms": percentile(times, 0.5),
                "p95_ms": percentile(times, 0.95),
                "runs": len(times),
            }
        return {
            "backend": db.dialect,
            "payments": payments,
            "sales_rows": rows,
            "healthz_p50_ms": percentile(healthz, 0.5),
            "python_view_ms": statistics.median(view_ms),
            "pages": results,
        }
    finally:
        db.dispose()


def report(result: dict) -> None:
    print(f"{result['backend']}: {result['payments']:,} payments, {result['sales_rows']:,} sales rows")
    floor, view = result["healthz_p50_ms"], result["python_view_ms"]
    print(f"  baselines: GET /healthz p50 {floor:.1f} ms; the whole view built in Python {view:,.0f} ms")
    print(f"  {'page':24} {'p50 ms':>8} {'p95 ms':>8} {'p50/healthz':>12} {'view/p95':>9}")
    for name, figures in result["pages"].items():
        print(
            f"  {name:24} {figures['p50_ms']:8.1f} {figures['p95_ms']:8.1f} "
            f"{figures['p50_ms'] / floor:11.0f}x {view / figures['p95_ms']:8.1f}x"
        )
    worst = max(result["pages"][name]["p95_ms"] for name in TARGETED)
    verdict = "met" if worst < TARGET_MS else "MISSED"
    print(f"  target p95 < {TARGET_MS} ms (sales, customer, overview): {verdict} (worst {worst:.1f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument(
        "--plans-runs", type=int, default=3, help="the plans page builds every plan: fewer runs"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with scratch_database("dashboard_bench") as target:
        result = run(target, args.payments, args.runs, args.baseline_runs, args.plans_runs)
    print(json.dumps(result, indent=2)) if args.json else report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

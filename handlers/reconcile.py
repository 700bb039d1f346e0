"""The nightly reconciliation: list what Stripe has in a window and add what no webhook delivered.

It pages through charges, invoice payments (with their invoices expanded) and refunds created in the
window, 100 a request (the next page is fetched while one is stored: handlers/read_ahead.py), and
upserts each page in one transaction together with the run's cursor, so a run that dies resumes where
it stopped and running the same window twice changes nothing. Objects are
streamed page by page: memory does not grow with the number of charges. The report is computed with
SQL aggregates for the same reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlmodel import col

from handlers.customers import emails_for_charges, emails_for_refunds, refresh_customers
from handlers.payments import CHARGE_FILL_ONLY, INVOICE_FILL_ONLY, INVOICE_PAYMENT_FILL_ONLY
from handlers.ranks import CHARGE_TIES, REFUND_TIES
from handlers.read_ahead import read_ahead
from handlers.reconcile_report import build_report
from handlers.stripe_shapes import charge_facts, invoice_facts, invoice_payment_facts, refund_facts
from models import Charge, Database, Invoice, InvoicePayment, ReconcileRun, Refund, upsert_many
from models.types import utcnow

log = logging.getLogger(__name__)

OVERLAP = timedelta(hours=48)


class StripeLister(Protocol):
    api_calls: int

    def pages(
        self, path: str, params: dict[str, Any], *, account: str = "", starting_after: str | None = None
    ) -> Iterator[list[dict]]: ...


@dataclass(frozen=True)
class Resource:
    name: str
    path: str
    expand: tuple[str, ...] = ()


RESOURCES = (
    Resource("charges", "/v1/charges"),
    Resource("invoice_payments", "/v1/invoice_payments", expand=("data.invoice",)),
    Resource("refunds", "/v1/refunds"),
)

# Resources whose new rows mean a webhook never reached us.
WEBHOOK_RESOURCES = ("charges", "refunds")


@dataclass
class Counts:
    seen: int = 0
    added: int = 0
    already_present: int = 0
    missed_webhooks: int = 0
    api_calls: int = 0
    by_resource: dict[str, dict[str, int]] = field(default_factory=dict)
    added_by_currency: dict[str, int] = field(default_factory=dict)  # amounts of the charges added

    def add(self, resource: str, seen: int, added: int) -> None:
        self.seen += seen
        self.added += added
        self.already_present += seen - added
        if resource in WEBHOOK_RESOURCES:
            self.missed_webhooks += added
        entry = self.by_resource.setdefault(resource, {"seen": 0, "added": 0})
        entry["seen"] += seen
        entry["added"] += added


def default_window(db: Database, now: datetime, initial_days: int) -> tuple[datetime, datetime]:
    """Since the last successful run's end, less a 48-hour overlap; on a first run, `initial_days` back."""
    with db.session() as session:
        last_end = session.exec(
            select(func.max(ReconcileRun.window_end)).where(ReconcileRun.status == "done")
        ).scalar_one_or_none()
    if last_end is None:
        return now - timedelta(days=initial_days), now
    return min(last_end - OVERLAP, now), now


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _start_or_resume(db: Database, start: datetime, end: datetime) -> tuple[int, dict[str, str], Counts]:
    with db.session() as session:
        run = (
            session.exec(
                select(ReconcileRun)
                .where(ReconcileRun.window_start == start, ReconcileRun.window_end == end)
                .where(col(ReconcileRun.status).in_(["running", "failed"]))
                .order_by(ReconcileRun.id.desc())
            )
            .scalars()
            .first()
        )
        if run is None:
            run = ReconcileRun(window_start=start, window_end=end)
            session.add(run)
            session.flush()
            return run.id, {}, Counts()
        run.status, run.error = "running", None
        saved = json.loads(run.counts or "{}")
        return run.id, json.loads(run.cursors or "{}"), Counts(**saved) if saved else Counts()


def _existing_ids(session, model, ids: list[str]) -> set[str]:
    return set(session.exec(select(model.id).where(model.id.in_(ids))).scalars().all())


def _stored_values(session, column, ids: list[str]) -> dict[str, Any]:
    """What is stored now for these ids (before the page's upsert): to tell what the page changes."""
    model = column.class_
    return dict(session.exec(select(model.id, column).where(model.id.in_(ids))).all())


def _store_page(session, resource: str, objects: list[dict], version: int, counts: Counts) -> list[dict]:
    """Upsert one page and count how many of its objects were new to us.

    Returns the objects whose customers' records need refreshing: charges and refunds the page adds
    or changes the refund side of. A second run of the same window changes nothing and so refreshes
    nobody.
    """
    now = utcnow()
    if resource == "charges":
        rows = [charge_facts(o, account="", version=version, event_id=None) for o in objects]
        for row in rows:
            row.update(found_by="reconcile", updated_at=now)
        refunded_before = _stored_values(session, Charge.amount_refunded, [r["id"] for r in rows])
        known = set(refunded_before)
        upsert_many(
            session,
            Charge,
            rows,
            keep_on_update=("found_by", "last_event_id"),
            fill_only=CHARGE_FILL_ONLY,
            rank_on_tie=CHARGE_TIES,
        )

        for row in rows:
            if row["id"] not in known and row["status"] == "succeeded":
                counts.added_by_currency[row["currency"]] = (
                    counts.added_by_currency.get(row["currency"], 0) + row["amount"]
                )
        counts.add(resource, len(rows), len(rows) - len(known))
        return [
            o
            for o, r in zip(objects, rows, strict=True)
            if r["amount_refunded"] and refunded_before.get(r["id"]) != r["amount_refunded"]
        ]
    if resource == "refunds":
        rows = [refund_facts(o, account="", version=version, event_id=None) for o in objects]
        for row in rows:
            row["updated_at"] = now
        status_before = _stored_values(session, Refund.status, [r["id"] for r in rows])
        known = set(status_before)
        upsert_many(
            session,
            Refund,
            rows,
            keep_on_update=("last_event_id",),
            fill_only=("charge", "payment_intent"),
            rank_on_tie=REFUND_TIES,
        )

        counts.add(resource, len(rows), len(rows) - len(known))
        return [
            o
            for o, r in zip(objects, rows, strict=True)
            if r["id"] not in known or status_before[r["id"]] != r["status"]
        ]
    # invoice payments, each with its invoice expanded: the link from a payment to its subscription
    rows = [invoice_payment_facts(o, version=version) for o in objects]
    invoices = {o["invoice"]["id"]: o["invoice"] for o in objects if isinstance(o.get("invoice"), dict)}
    for row in rows:
        row["updated_at"] = now
    known = _existing_ids(session, InvoicePayment, [r["id"] for r in rows])
    upsert_many(session, InvoicePayment, rows, fill_only=INVOICE_PAYMENT_FILL_ONLY)
    invoice_rows = [invoice_facts(i, account="", version=version) for i in invoices.values()]
    for row in invoice_rows:
        row["updated_at"] = now
    upsert_many(session, Invoice, invoice_rows, fill_only=INVOICE_FILL_ONLY)
    counts.add(resource, len(rows), len(rows) - len(known))
    return []


def _refresh_refunded_customers(session, resource: str, objects: list[dict]) -> list[int]:
    """Refunds the nightly run finds (or sees change) get their notes and alerts like webhook ones."""
    if resource == "refunds":
        emails = emails_for_refunds(session, objects)
    elif resource == "charges":
        emails = emails_for_charges(session, [o["id"] for o in objects if o.get("amount_refunded")])
    else:
        return []
    return refresh_customers(session, emails)


Progress = Callable[[str, int], None]


def reconcile(
    db: Database,
    stripe: StripeLister,
    start: datetime,
    end: datetime,
    *,
    progress: Progress | None = None,
    on_alerts: Callable[[list[int]], None] | None = None,
) -> dict[str, Any]:
    """Reconcile the window [start, end); returns the report (also stored on the run)."""
    run_id, cursors, counts = _start_or_resume(db, start, end)
    # A resumed run keeps the API calls of its earlier attempts and adds this attempt's.
    calls_base, calls_before = counts.api_calls, stripe.api_calls

    def save(session) -> None:
        counts.api_calls = calls_base + stripe.api_calls - calls_before
        run = session.get(ReconcileRun, run_id)
        run.cursors, run.counts = json.dumps(cursors), json.dumps(counts.__dict__)

    # Objects read from the API are the current state: newer than any event created before now.
    version = _unix(utcnow())
    try:
        for resource in RESOURCES:
            if cursors.get(resource.name) == "complete":
                continue
            params: dict[str, Any] = {"created": {"gte": _unix(start), "lt": _unix(end)}}
            if resource.expand:
                params["expand"] = list(resource.expand)
            pages = stripe.pages(resource.path, params, starting_after=cursors.get(resource.name))
            for page in read_ahead(pages, name=f"reconcile-{resource.name}"):
                with db.session() as session:
                    changed = _store_page(session, resource.name, page, version, counts)
                    raised = _refresh_refunded_customers(session, resource.name, changed)
                    cursors[resource.name] = page[-1]["id"]
                    save(session)
                if raised and on_alerts:
                    try:
                        on_alerts(raised)
                    except Exception as exc:
                        # Stored already; the clock re-sends undelivered alerts. The run goes on.
                        log.warning("alerts %s not handed to the sink (%s)", raised, type(exc).__name__)
                if progress:
                    progress(resource.name, counts.by_resource[resource.name]["seen"])
            cursors[resource.name] = "complete"
            with db.session() as session:
                save(session)
    except BaseException as exc:
        with db.session() as session:
            run = session.get(ReconcileRun, run_id)
            run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        raise

    with db.session() as session:
        report = build_report(session, start, end, counts, run_id=run_id)
        run = session.get(ReconcileRun, run_id)
        run.status, run.finished_at = "done", utcnow()
        run.report = json.dumps(report)
    return report

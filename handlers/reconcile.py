"""The nightly reconciliation: list what Stripe has in a window and add what no webhook delivered.

For each account it lists (the platform, or each Connect account in RECONCILE_ACCOUNTS, asked with the
`Stripe-Account` header) it pages through what was created in the window, 100 a request (the next page
is fetched while one is stored: handlers/read_ahead.py): invoice payments (their invoices expanded),
charges (failed ones too, with their failure), refunds, disputes, and subscriptions (`status=all`, so
ended ones are listed too; their latest invoice expanded). Each page is upserted in one transaction
together with the run's cursor for that account and resource, so a run that dies resumes where it
stopped. Objects read from the API are the current state: they win over any event older than the run.

The customers whose records the pages changed are refreshed once each, after every list is stored,
as a webhook would have done (notes, dispute, payment-failed and access alerts, plan ends, the
dashboard's rows). A page remembers what it changed (new or changed charges, refunds, invoices and
invoice payments, disputes, subscriptions) in `reconcile_pending`, in the page's own transaction; the
end of the run finds whose they are and refreshes them in batches, each batch forgetting its keys as it
commits, so a run that dies resumes the refreshes too, and a later run of any window finishes what a
dead one left. Refreshing after every page instead re-read each customer's history once per page that
touched them (about three times a customer), two thirds of a first run's time; an alert that a later
page would have changed is now raised once, in its final state. Objects already stored as Stripe
describes them remember nothing, so running the same window twice changes nothing. Objects are
streamed page by page: memory does not grow with the number of charges, and the report is computed
with SQL aggregates for the same reason (handlers/reconcile_report.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, func, or_, select, text, union
from sqlmodel import Session, col

from handlers.customers import emails_for_charges, emails_for_refunds, raise_alert, refresh_customers
from handlers.dispute_alerts import dispute_alert
from handlers.payments import CHARGE_FILL_ONLY, INVOICE_FILL_ONLY, INVOICE_PAYMENT_FILL_ONLY
from handlers.ranks import CHARGE_TIES, REFUND_TIES
from handlers.read_ahead import read_ahead
from handlers.reconcile_report import build_report
from handlers.sales_rows import store_unowned_rows
from handlers.stripe_shapes import (
    charge_facts,
    dispute_facts,
    invoice_facts,
    invoice_payment_facts,
    refund_facts,
    subscription_facts,
)
from models import (
    Charge,
    CustomerStripeId,
    Database,
    Dispute,
    FunnelPurchase,
    Invoice,
    InvoicePayment,
    ReconcilePending,
    ReconcileRun,
    Refund,
    Subscription,
    upsert_many,
)
from models.db import built_once, dialect_insert, execute
from models.prepared import Prepared
from models.types import utcnow

log = logging.getLogger(__name__)

OVERLAP = timedelta(hours=48)
PLATFORM = ""  # the `account` of rows from the platform's own Stripe account
FOUND_LISTED = 200  # found payments the report names; it counts them all
# Pending keys resolved to customers per transaction, and customers refreshed per transaction: large
# enough that each statement of a refresh serves many customers, small enough that a transaction holds
# a few hundred customers' locks and histories.
FIND_BATCH = 1000
# Pages stored per transaction, with the cursor that resumes after them: a commit is an fsync on SQLite
# (FULL), about as long as storing a page, and a run that dies lists at most this many pages again.
PAGES_PER_TRANSACTION = 10
REFRESH_BATCH = 250


class StripeLister(Protocol):
    api_calls: int

    def pages(
        self, path: str, params: dict[str, Any], *, account: str = "", starting_after: str | None = None
    ) -> Iterator[list[dict]]: ...


@dataclass(frozen=True)
class Resource:
    name: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    expand: tuple[str, ...] = ()


# In this order: a charge stored after its invoice payment is refreshed with its installment number
# already known, and a dispute after its charge finds the customer to put its alert on.
RESOURCES = (
    Resource("invoice_payments", "/v1/invoice_payments", expand=("data.invoice",)),
    Resource("charges", "/v1/charges"),
    Resource("refunds", "/v1/refunds"),
    Resource("disputes", "/v1/disputes"),
    # Without status=all Stripe leaves canceled subscriptions out, and with them every completed plan.
    Resource(
        "subscriptions", "/v1/subscriptions", params=(("status", "all"),), expand=("data.latest_invoice",)
    ),
)

# Resources whose new rows mean a webhook never reached us.
WEBHOOK_RESOURCES = ("charges", "refunds", "disputes", "subscriptions")


@dataclass
class Tally:
    """What a run (or one account of it) saw, added and spent."""

    seen: int = 0
    added: int = 0
    already_present: int = 0
    missed_webhooks: int = 0
    api_calls: int = 0
    by_resource: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, resource: str, seen: int, added: int) -> None:
        self.seen += seen
        self.added += added
        self.already_present += seen - added
        if resource in WEBHOOK_RESOURCES:
            self.missed_webhooks += added
        entry = self.by_resource.setdefault(resource, {"seen": 0, "added": 0})
        entry["seen"] += seen
        entry["added"] += added


@dataclass
class Counts(Tally):
    """The whole run's tally (the sum over its accounts), kept on the run so a resumed run goes on."""

    added_by_currency: dict[str, int] = field(default_factory=dict)  # amounts of the charges added
    accounts: dict[str, Tally] = field(default_factory=dict)  # "" is the platform account
    # The payments (charges) this run added: the first FOUND_LISTED ids, and how many in all.
    found: list[str] = field(default_factory=list)
    found_count: int = 0

    def account(self, account: str) -> Tally:
        return self.accounts.setdefault(account, Tally())

    def add(self, resource: str, seen: int, added: int, account: str = PLATFORM) -> None:
        super().add(resource, seen, added)
        self.account(account).add(resource, seen, added)

    def add_calls(self, account: str, calls: int) -> None:
        self.api_calls += calls
        self.account(account).api_calls += calls

    def add_found(self, charge_ids: list[str]) -> None:
        self.found_count += len(charge_ids)
        self.found.extend(charge_ids[: max(0, FOUND_LISTED - len(self.found))])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> Counts:
        saved = json.loads(text or "{}")
        accounts = {name: Tally(**tally) for name, tally in saved.pop("accounts", {}).items()}
        return cls(**saved, accounts=accounts)


@dataclass
class Changed:
    """What storing one page added or changed, by the links that lead to the customers concerned."""

    charge_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    subscription_ids: set[str] = field(default_factory=set)
    dispute_ids: set[str] = field(default_factory=set)  # their customers are found by the disputed charge


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


def _cursor_key(account: str, resource: str) -> str:
    # The platform's keys are the resource names alone, as runs saved before Connect support had them.
    return f"{account}:{resource}" if account else resource


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
        return run.id, json.loads(run.cursors or "{}"), Counts.from_json(run.counts)


# --- storing a page -----------------------------------------------------------------------------------

# Bookkeeping columns: a row whose facts are unchanged is unchanged whatever these say.
_NOT_COMPARED = frozenset({"id", "version", "updated_at", "last_event_id", "found_by"})


def _diff(
    session: Session, model, rows: list[dict[str, Any]], *, fill_only: Iterable[str] = ()
) -> tuple[set[str], set[str]]:
    """Read before the rows are upserted: (ids already stored, ids the rows add or change).

    A `fill_only` column the row leaves empty keeps what is stored, so it changes nothing.
    """
    table, fill_only = model.__table__, set(fill_only)
    columns = tuple(name for name in rows[0] if name not in _NOT_COMPARED)
    # Built once per table and columns: building and compiling a select of ~30 columns for every page
    # cost more than running it.
    query = built_once(
        ("reconcile stored", table.name, columns),
        lambda: select(table.c.id, *(table.c[name] for name in columns)).where(
            table.c.id.in_(bindparam("ids", expanding=True))
        ),
    )
    stored = {found[0]: found[1:] for found in execute(session, query, {"ids": [row["id"] for row in rows]})}
    changed = set()
    for row in rows:
        before = stored.get(row["id"])
        if before is None or any(
            row[name] != old and not (row[name] is None and name in fill_only)
            for name, old in zip(columns, before, strict=True)
        ):
            changed.add(row["id"])
    return set(stored), changed


def _store_rows(
    session: Session, model, rows: list[dict[str, Any]], *, fill_only: Iterable[str] = (), **upsert: Any
) -> tuple[set[str], set[str]]:
    """Upsert the rows the run adds or changes; return (ids already stored, ids added or changed).

    A row stored as Stripe describes it is not written again (most of what a nightly run lists came by
    webhook), but its version is raised to the run's: what the API answered is the current state, so an
    event older than the run that arrives late must still not overwrite it.
    """
    known, changed = _diff(session, model, rows, fill_only=fill_only)
    upsert_many(session, model, [row for row in rows if row["id"] in changed], fill_only=fill_only, **upsert)
    unchanged = sorted(known - changed)
    if unchanged:
        table = model.__table__
        statement = built_once(
            ("reconcile version", table.name),
            lambda: (
                table.update()
                .where(
                    table.c.id.in_(bindparam("ids", expanding=True)),
                    table.c.version < bindparam("run_version"),
                )
                .values(version=bindparam("run_version"))
            ),
        )
        execute(session, statement, {"ids": unchanged, "run_version": rows[0]["version"]})
    return known, changed


def _stamped(rows: Iterable[dict[str, Any]], **values: Any) -> list[dict[str, Any]]:
    now = utcnow()
    return [{**row, **values, "updated_at": now} for row in rows]


def _store_invoices(session: Session, facts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Upsert invoices (expanded in another object); return the rows of those new or changed."""
    rows = _stamped(facts)
    if not rows:
        return []
    _, changed = _store_rows(session, Invoice, rows, fill_only=INVOICE_FILL_ONLY)
    return [row for row in rows if row["id"] in changed]


def _store_invoice_payments(
    session: Session, objects: list[dict], *, account: str, version: int, counts: Counts
) -> Changed:
    rows = _stamped(invoice_payment_facts(o, version=version) for o in objects)
    known, changed_ids = _store_rows(session, InvoicePayment, rows, fill_only=INVOICE_PAYMENT_FILL_ONLY)
    expanded = {o["invoice"]["id"]: o["invoice"] for o in objects if isinstance(o.get("invoice"), dict)}
    invoices = _store_invoices(
        session, (invoice_facts(i, account=account, version=version) for i in expanded.values())
    )
    counts.add("invoice_payments", len(rows), len(rows) - len(known), account)
    payments = [row for row in rows if row["id"] in changed_ids]
    return Changed(
        charge_ids=_stored_charges_paying(session, [*payments, *invoices]),
        # Any invoice that changed changes its plan: an unpaid one is a failed row of its own (the failed
        # charge may not be stored), and one paid on a retry whose webhooks never came ends the plan's
        # unpaid count and next attempt. Its subscription's customer learns of it even when no charge is
        # known.
        subscription_ids={i["subscription_id"] for i in invoices if i["subscription_id"]},
    )


def _stored_charges_paying(session: Session, links: list[dict[str, Any]]) -> set[str]:
    """The stored charges these invoice or invoice-payment rows name, by charge or payment intent.

    Only stored ones: a charge listed later in the run refreshes its own customer then.
    """
    ids = {link.get("charge_id") for link in links} - {None}
    intents = {link.get("payment_intent_id") for link in links} - {None}
    if not ids and not intents:
        return set()
    charges = Charge.__table__.c
    query = select(charges.id).where(
        or_(charges.id.in_(sorted(ids)), charges.payment_intent.in_(sorted(intents)))
    )
    return set(execute(session, query).scalars())


def _store_charges(
    session: Session, objects: list[dict], *, account: str, version: int, counts: Counts
) -> Changed:
    rows = _stamped(
        (charge_facts(o, account=account, version=version, event_id=None) for o in objects),
        found_by="reconcile",
    )
    known, changed = _store_rows(
        session,
        Charge,
        rows,
        keep_on_update=("found_by", "last_event_id"),
        fill_only=CHARGE_FILL_ONLY,
        rank_on_tie=CHARGE_TIES,
    )
    added = [row for row in rows if row["id"] not in known]
    for row in added:
        if row["status"] == "succeeded":
            currency = row["currency"]
            counts.added_by_currency[currency] = counts.added_by_currency.get(currency, 0) + row["amount"]
    counts.add("charges", len(rows), len(added), account)
    # Payments the sales view shows (paid or failed); a pending charge is not one yet.
    counts.add_found([row["id"] for row in added if row["status"] in ("succeeded", "failed")])
    # A new charge can complete an alert or a note, or raise a payment_failed alert; a changed one
    # (refunded since, a link filled in) changes its customer's view.
    return Changed(charge_ids=changed)


def _store_refunds(
    session: Session, objects: list[dict], *, account: str, version: int, counts: Counts
) -> Changed:
    rows = _stamped(refund_facts(o, account=account, version=version, event_id=None) for o in objects)
    known, changed = _store_rows(
        session,
        Refund,
        rows,
        keep_on_update=("last_event_id",),
        fill_only=("charge", "payment_intent"),
        rank_on_tie=REFUND_TIES,
    )
    counts.add("refunds", len(rows), len(rows) - len(known), account)
    return Changed(emails=emails_for_refunds(session, [o for o in objects if o["id"] in changed]))


def _store_disputes(
    session: Session, objects: list[dict], *, account: str, version: int, counts: Counts
) -> Changed:
    rows = _stamped(dispute_facts(o, account=account, version=version) for o in objects)
    known, changed = _store_rows(session, Dispute, rows)
    counts.add("disputes", len(rows), len(rows) - len(known), account)
    return Changed(dispute_ids=changed)


def _store_subscriptions(
    session: Session, objects: list[dict], *, account: str, version: int, counts: Counts
) -> Changed:
    rows = _stamped(subscription_facts(o, account=account, version=version) for o in objects)
    known, changed = _store_rows(session, Subscription, rows)
    latest = {
        o["latest_invoice"]["id"]: invoice_facts(o["latest_invoice"], account=account, version=version)
        for o in objects
        # expanded (as the run asks): as good as an invoice event; it may be one no payment listed yet
        if isinstance(o.get("latest_invoice"), dict) and o["latest_invoice"].get("currency")
    }
    invoices = _store_invoices(session, latest.values())
    counts.add("subscriptions", len(rows), len(rows) - len(known), account)
    return Changed(
        subscription_ids=changed | {i["subscription_id"] for i in invoices if i["subscription_id"]}
    )


Store = Callable[..., Changed]
STORES: dict[str, Store] = {
    "invoice_payments": _store_invoice_payments,
    "charges": _store_charges,
    "refunds": _store_refunds,
    "disputes": _store_disputes,
    "subscriptions": _store_subscriptions,
}


def _store_page(
    session: Session, resource: str, objects: list[dict], *, account: str, version: int, counts: Counts
) -> Changed:
    """Upsert one page, count how many of its objects were new to us, and say what it changed."""
    return STORES[resource](session, objects, account=account, version=version, counts=counts)


# --- refreshing the customers a page concerns --------------------------------------------------------


def _emails_of_subscriptions(session: Session, subscription_ids: set[str]) -> set[str]:
    """Whose subscriptions these are: by their invoices, their funnel purchases, their Stripe customer."""
    if not subscription_ids:
        return set()
    ids = sorted(subscription_ids)
    invoices, purchases = Invoice.__table__.c, FunnelPurchase.__table__.c
    links = CustomerStripeId.__table__.c
    customers = select(Subscription.__table__.c.customer).where(Subscription.__table__.c.id.in_(ids))
    query = union(
        select(invoices.customer_email).where(invoices.subscription_id.in_(ids)),
        select(purchases.customer_email).where(purchases.subscription_id.in_(ids)),
        select(links.email).where(links.stripe_customer_id.in_(customers)),
    )
    return {email for (email,) in execute(session, query) if email}


def _remember(session: Session, changed: Changed) -> None:
    """Keep what a page changed, in its transaction, for the customer refreshes at the end of the run."""
    keys = {("email", email) for email in changed.emails if email}
    keys |= {("charge", charge_id) for charge_id in changed.charge_ids}
    keys |= {("subscription", subscription_id) for subscription_id in changed.subscription_ids}
    keys |= {("dispute", dispute_id) for dispute_id in changed.dispute_ids}
    _add_pending(session, keys)


def _add_pending(session: Session, keys: Iterable[tuple[str, str]]) -> None:
    values = [{"kind": kind, "key": key} for kind, key in sorted(keys)]
    if values:
        statement = built_once(
            ("reconcile pending", dialect_insert(session)),
            lambda: dialect_insert(session)(ReconcilePending.__table__).on_conflict_do_nothing(),
        )
        execute(session, statement, values[0] if len(values) == 1 else values)


def _take_pending(session: Session, kind: str, limit: int) -> list[str]:
    """Up to `limit` pending keys of a kind, in order, and forget them (in this transaction: a run that
    dies before committing keeps them)."""
    keys = list(execute(session, _PENDING_OF_KIND, {"kind": kind, "limit": limit}).scalars())
    if keys:
        execute(session, _FORGET_PENDING, {"kind": kind, "keys": keys})
    return keys


_pending = ReconcilePending.__table__.c
_PENDING_OF_KIND = Prepared(
    select(_pending.key)
    .where(_pending.kind == bindparam("kind"))
    .order_by(_pending.key)
    .limit(bindparam("limit"))
)
_FORGET_PENDING = Prepared(
    ReconcilePending.__table__.delete().where(
        _pending.kind == bindparam("kind"), _pending.key.in_(bindparam("keys", expanding=True))
    )
)


def _find_customers(session: Session, kind: str, keys: list[str]) -> set[tuple[str, str]]:
    """The pending keys that replace these: the customers they concern (emails), a dispute whose
    customer is unknown (kept as it is), and whether payments nobody owns were among them."""
    if kind == "charge":
        found = {("email", email) for email in emails_for_charges(session, keys)}
        if _has_unowned_charges(session, keys):
            found.add(("unowned", ""))
        return found
    if kind == "subscription":
        return {("email", email) for email in _emails_of_subscriptions(session, set(keys))}
    # disputes, by the disputed charge
    found = set()
    disputed = dict(execute(session, _DISPUTED_CHARGES, {"ids": keys}).all())
    for dispute_id in keys:
        charge_id = disputed.get(dispute_id)
        emails = emails_for_charges(session, [charge_id]) if charge_id else set()
        found |= {("email", email) for email in emails} or {("unplaced_dispute", dispute_id)}
    return found


def _has_unowned_charges(session: Session, charge_ids: Iterable[str]) -> bool:
    ids = sorted(charge_ids)
    if not ids:
        return False
    query = select(Charge.id).where(col(Charge.id).in_(ids), col(Charge.customer_email).is_(None)).limit(1)
    return session.exec(query).first() is not None


_DISPUTED_CHARGES = Prepared(
    select(Dispute.__table__.c.id, Dispute.__table__.c.charge).where(
        Dispute.__table__.c.id.in_(bindparam("ids", expanding=True))
    )
)


def _raise_unplaced_dispute(session: Session, dispute_id: str) -> int | None:
    """A dispute whose customer is unknown: raised as it stands (as with a webhook); the charge's
    arrival, by a webhook or a later run, completes it in place."""
    dispute = session.get(Dispute, dispute_id)
    if dispute is None:
        return None
    charge = session.get(Charge, dispute.charge) if dispute.charge else None
    return raise_alert(session, dispute_alert(dispute, None, None, charge.description if charge else None))


def _find_step(session: Session, kind: str) -> tuple[list[str], list[int]]:
    keys = _take_pending(session, kind, FIND_BATCH)
    if keys:
        _add_pending(session, _find_customers(session, kind, keys))
    return keys, []


def _refresh_step(session: Session) -> tuple[list[str], list[int]]:
    emails = _take_pending(session, "email", REFRESH_BATCH)
    return emails, refresh_customers(session, emails) if emails else []


def _unplaced_disputes_step(session: Session) -> tuple[list[str], list[int]]:
    disputes = _take_pending(session, "unplaced_dispute", FIND_BATCH)
    raised = []
    for dispute_id in disputes:
        alert_id = _raise_unplaced_dispute(session, dispute_id)
        if alert_id is not None:
            raised.append(alert_id)
    if disputes:
        _add_pending(session, {("unowned", "")})  # their charges' rows, if stored, are nobody's
    return disputes, raised


def _unowned_rows_step(session: Session) -> tuple[list[str], list[int]]:
    unowned = _take_pending(session, "unowned", 1)
    if unowned:
        store_unowned_rows(session)  # the dashboard's rows of payments nobody's refresh reaches
    return unowned, []


# --- the run ------------------------------------------------------------------------------------------


def _plan_for_these_lists(session: Session) -> None:
    """PostgreSQL: plan each statement of this page's transaction for its own lists of ids.

    psycopg prepares a statement run five times, and PostgreSQL may then keep one generic plan for it.
    A first run fills the tables as it goes, so a plan made while they were nearly empty (a sequential
    scan) would be kept while they grow to the whole history: whole-table scans on every page.
    """
    if session.get_bind().dialect.name == "postgresql":
        execute(session, _CUSTOM_PLANS)


_CUSTOM_PLANS = Prepared(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))

Progress = Callable[[str, int], None]


class _Run:
    """One run's state: its cursors and counts, saved with every page."""

    def __init__(
        self,
        db: Database,
        stripe: StripeLister,
        start: datetime,
        end: datetime,
        progress: Progress | None,
        on_alerts: Callable[[list[int]], None] | None,
        as_of: datetime | None,
    ) -> None:
        self.db, self.stripe, self.start, self.end = db, stripe, start, end
        self.progress, self.on_alerts = progress, on_alerts
        self.run_id, self.cursors, self.counts = _start_or_resume(db, start, end)
        # Objects read from the API are the current state: newer than any event created before now.
        self.version = _unix(as_of or utcnow())
        # A resumed run keeps the API calls of its earlier attempts and adds this attempt's.
        self.calls_counted = stripe.api_calls

    def save(self, session: Session, account: str) -> None:
        # Calls made since the last save were made for this account (its lists run one at a time).
        self.counts.add_calls(account, self.stripe.api_calls - self.calls_counted)
        self.calls_counted = self.stripe.api_calls
        run = session.get(ReconcileRun, self.run_id)
        run.cursors, run.counts = json.dumps(self.cursors), self.counts.to_json()

    def list_resource(self, account: str, resource: Resource) -> None:
        key = _cursor_key(account, resource.name)
        if self.cursors.get(key) == "complete":
            return
        params: dict[str, Any] = {"created": {"gte": _unix(self.start), "lt": _unix(self.end)}}
        params.update(resource.params)
        if resource.expand:
            params["expand"] = list(resource.expand)
        pages = self.stripe.pages(
            resource.path, params, account=account, starting_after=self.cursors.get(key)
        )
        label = f"{account} {resource.name}" if account else resource.name
        with contextlib.closing(read_ahead(pages, name=f"reconcile-{resource.name}")) as ahead:
            while True:
                with self.db.session() as session:
                    stored, stripe_error = self._store_pages(session, ahead, account, resource.name, key)
                if stored and self.progress:
                    self.progress(label, self.counts.account(account).by_resource[resource.name]["seen"])
                if stripe_error is not None:
                    raise stripe_error
                if not stored:
                    break
        self.cursors[key] = "complete"
        with self.db.session() as session:
            self.save(session, account)

    def _store_pages(
        self, session: Session, pages: Iterator[list[dict]], account: str, resource: str, key: str
    ) -> tuple[int, Exception | None]:
        """Store up to PAGES_PER_TRANSACTION pages and the cursor after them, in one transaction.

        Returns how many, and the error Stripe answered in place of the next page, if it did: the
        pages before it are kept (committed with their cursor), and the caller raises it.
        """
        _plan_for_these_lists(session)
        stored = 0
        stripe_error = None
        while stored < PAGES_PER_TRANSACTION:
            try:
                page = next(pages)
            except StopIteration:
                break
            except Exception as exc:
                stripe_error = exc
                break
            changed = _store_page(
                session, resource, page, account=account, version=self.version, counts=self.counts
            )
            _remember(session, changed)
            self.cursors[key] = page[-1]["id"]
            stored += 1
        if stored:
            self.save(session, account)
        return stored, stripe_error

    def refresh_changed_customers(self) -> None:
        """Refresh, once each, the customers the run's pages changed: first find them (charges,
        subscriptions and disputes become emails), then refresh them a batch at a time, then raise the
        disputes nobody could be found for and rebuild the rows of payments nobody owns.

        Every step takes its keys from reconcile_pending and forgets them in the transaction that does
        its work, so a run that dies here goes on where it stopped when it is resumed. Alerts are handed
        to the sink after the transaction that raised them has committed.
        """
        for kind in ("charge", "subscription", "dispute"):
            while self._step(lambda session, kind=kind: _find_step(session, kind)):
                pass
        refreshed = 0
        while emails := self._step(_refresh_step):
            refreshed += len(emails)
            if self.progress:
                self.progress("customer records", refreshed)  # "reconciling customer records: N"
        while self._step(_unplaced_disputes_step):
            pass
        self._step(_unowned_rows_step)

    def _step(self, step: Callable[[Session], tuple[list[str], list[int]]]) -> list[str]:
        with self.db.session() as session:
            _plan_for_these_lists(session)
            keys, raised = step(session)
        self._hand_over(raised)
        return keys

    def _hand_over(self, alert_ids: list[int]) -> None:
        if not alert_ids or not self.on_alerts:
            return
        try:
            self.on_alerts(alert_ids)
        except Exception as exc:
            # Stored already; the clock re-sends undelivered alerts. The run goes on.
            log.warning("alerts %s not handed to the sink (%s)", alert_ids, type(exc).__name__)

    def failed(self, exc: BaseException) -> None:
        with self.db.session() as session:
            run = session.get(ReconcileRun, self.run_id)
            run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]

    def finish(self) -> dict[str, Any]:
        with self.db.session() as session:
            report = build_report(session, self.start, self.end, self.counts, run_id=self.run_id)
            run = session.get(ReconcileRun, self.run_id)
            run.status, run.finished_at = "done", utcnow()
            run.report = json.dumps(report)
        return report


def reconcile(
    db: Database,
    stripe: StripeLister,
    start: datetime,
    end: datetime,
    *,
    accounts: Sequence[str] = (PLATFORM,),
    progress: Progress | None = None,
    on_alerts: Callable[[list[int]], None] | None = None,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """Reconcile the window [start, end) of each account ("" is the platform's own); returns the
    report (also stored on the run).

    `as_of` is the moment Stripe's answers describe (default: now): what the run stores outranks every
    event created until then. Only a simulation whose data is dated ahead of this machine's clock
    (generated months) needs to pass its own "now".
    """
    run = _Run(db, stripe, start, end, progress, on_alerts, as_of)
    try:
        for account in accounts:
            run.counts.account(account)  # reported even when it has nothing in the window
            for resource in RESOURCES:
                run.list_resource(account, resource)
        run.refresh_changed_customers()
    except BaseException as exc:
        run.failed(exc)
        raise
    return run.finish()

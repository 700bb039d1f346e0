"""Keeping customer records current: their Stripe customer ids, refund notes and access alerts.

`refresh_customers` recomputes a customer's notes and alerts from their complete sales view. It runs
after any event that could change them (a charge, a refund, an invoice, a funnel purchase, a page of
the nightly run). Notes are upserted by refund id and alerts inserted once by key, so running it again,
or for events that arrive in any order or twice, gives one note per refund and at most one alert.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import String, bindparam, cast, literal, null, or_, select, text, union, update
from sqlmodel import Session

from handlers.access_alerts import AlertDraft, access_alert, kept_duplicate
from handlers.dispute_alerts import dispute_alert
from handlers.payment_failed_alerts import payment_failed_alert
from handlers.plans import PlanRow, build_plans, plan_end_note
from handlers.ranks import COUNTED_REFUND_STATUSES
from handlers.refund_notes import refund_note_text
from handlers.sales_view import ByDialect, SaleRow, SalesFacts, load_customers_facts
from models import (
    Alert,
    Charge,
    Customer,
    CustomerNote,
    CustomerStripeId,
    FunnelPurchase,
    Invoice,
    InvoicePayment,
    Refund,
    SubscriptionEnd,
    advisory_lock,
    dialect_insert,
    insert_ignore,
    upsert_many,
)
from models.db import built_once, execute
from models.prepared import Prepared
from models.types import utcnow

# How far apart two purchases of one product may be and still count as a duplicate. Set from
# DUPLICATE_WINDOW_DAYS by `worker.runtime.configure_domain` at start-up.
DUPLICATE_WINDOW = timedelta(days=30)


def emails_for_charges(session: Session, charge_ids: Iterable[str]) -> set[str]:
    """The customers (by email) that paid these charges, through every link the view uses."""
    ids = sorted({c for c in charge_ids if c})
    if not ids:
        return set()
    return {email for (email,) in execute(session, _EMAILS_FOR_CHARGES, {"charge_ids": ids}) if email}


def _emails_for_charges_statement(*, with_intents: bool = False):
    """One UNION of index lookups (run once per event, so one round trip rather than five).

    `with_intents`: the charges are those named by `charge_ids` and those of the payment intents
    `intents` (a refund may name only its payment intent), found in the same statement. Each lookup
    by a charge is then two SELECTs, by the ids and by the intents' charges: an OR of the two would
    make the server scan the whole table instead of using its index.
    """
    ids = bindparam("charge_ids", expanding=True)
    intents = bindparam("intents", expanding=True)
    charges, invoices, purchases = Charge.__table__.c, Invoice.__table__.c, FunnelPurchase.__table__.c
    payments, links = InvoicePayment.__table__.c, CustomerStripeId.__table__.c
    the_charges = charges.id.in_(ids)
    if with_intents:
        the_charges = the_charges | charges.payment_intent.in_(intents)

    def one_of_the_charges(column) -> list:
        if not with_intents:
            return [column.in_(ids)]
        return [column.in_(ids), column.in_(select(charges.id).where(charges.payment_intent.in_(intents)))]

    def of_the_charges(column):
        return select(column).where(the_charges).scalar_subquery()

    paid_invoices = select(payments.invoice_id).where(
        payments.payment_intent_id.in_(of_the_charges(charges.payment_intent))
    )
    return union(
        select(charges.customer_email).where(the_charges),
        *(select(invoices.customer_email).where(c) for c in one_of_the_charges(invoices.charge_id)),
        select(invoices.customer_email).where(invoices.id.in_(of_the_charges(charges.invoice_id))),
        select(invoices.customer_email).where(invoices.id.in_(paid_invoices.scalar_subquery())),
        select(invoices.customer_email).where(
            invoices.payment_intent_id.in_(of_the_charges(charges.payment_intent))
        ),
        *(select(purchases.customer_email).where(c) for c in one_of_the_charges(purchases.charge_id)),
        select(purchases.customer_email).where(
            purchases.charge_id.in_(of_the_charges(charges.payment_intent))
        ),
        select(links.email).where(links.stripe_customer_id.in_(of_the_charges(charges.customer))),
    )


_EMAILS_FOR_CHARGES = Prepared(_emails_for_charges_statement())
_EMAILS_FOR_CHARGES_OR_INTENTS = Prepared(_emails_for_charges_statement(with_intents=True))


def emails_for_refunds(session: Session, refunds: Iterable[dict]) -> set[str]:
    refunds = list(refunds)
    charge_ids = {r.get("charge") for r in refunds if isinstance(r.get("charge"), str)}
    intents = sorted({r["payment_intent"] for r in refunds if isinstance(r.get("payment_intent"), str)})
    if len(refunds) == 1 and intents:
        # A refund event's: the charges of its payment intent found by the same statement (one
        # round trip, not two). Only for one refund: the SQL is kept per pair of list lengths.
        found = execute(
            session,
            _EMAILS_FOR_CHARGES_OR_INTENTS,
            {"charge_ids": sorted(c for c in charge_ids if c), "intents": intents},
        )
        return {email for (email,) in found if email}
    if intents:
        charge_ids |= set(execute(session, _CHARGES_OF_INTENTS, {"intents": intents}).scalars().all())
    return emails_for_charges(session, charge_ids)


_CHARGES_OF_INTENTS = Prepared(
    select(Charge.__table__.c.id).where(
        Charge.__table__.c.payment_intent.in_(bindparam("intents", expanding=True))
    )
)


def _note_values(email: str, refund: Refund, sale: SaleRow | None) -> dict:
    """A refund's note on the customer's record (upserted by `_note_upsert`)."""
    now = utcnow()
    return {
        "key": f"refund:{refund.id}",
        "email": email,
        "kind": "refund",
        "refund_id": refund.id,
        "charge_id": refund.charge,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
        "text": refund_note_text(refund, sale),
        "created_at": refund.created or now,
        "updated_at": now,
    }


def _write_note(session: Session, values: list[dict]) -> None:
    """Upsert refund notes (`_note_values`), one batched statement for several."""
    insert = dialect_insert(session)
    _execute_each(session, built_once(("refund note", insert), lambda: _note_upsert(insert)), values)


def _note_upsert(insert):
    table = CustomerNote.__table__
    statement = insert(table)
    # A refund's note changes only when what it says changes (a status update, the product becoming
    # known); rewriting an identical note would only move its updated_at.
    return statement.on_conflict_do_update(
        index_elements=["key"],
        set_={
            name: statement.excluded[name]
            for name in ("email", "amount", "currency", "status", "text", "updated_at")
        },
        where=or_(table.c.text != statement.excluded.text, table.c.email != statement.excluded.email),
    )


def _refund_that_completed(sale: SaleRow, refunds: list[Refund]) -> Refund | None:
    """Of a fully refunded payment's refunds, the one that took the refunded total to the full amount."""
    total = 0
    for refund in sorted(refunds, key=lambda r: (r.created is None, r.created, r.id)):
        if refund.status not in COUNTED_REFUND_STATUSES:
            continue
        total += refund.amount
        if total >= sale.amount:
            return refund
    return None


def upsert_alert(session: Session, draft: AlertDraft) -> int | None:
    """Raise the alert once by its key, or bring the stored one up to date in place.

    Returns the alert's id when it must be sent: when it is new, or when its state changed (a dispute
    won or lost, a failed payment paid on retry). Facts filled in later (the kept purchase's charge, the
    customer of a dispute) update the same alert without sending it again. A change of state reopens an
    alert staff had resolved: there is news to act on.
    """
    now = utcnow()
    new = insert_ignore(
        session,
        Alert,
        {**draft.__dict__, "status": "open", "created_at": now, "updated_at": now},
        conflict_on=["key"],
    )
    stored = execute(session, _ALERT_BY_KEY, {"key": draft.key}).first()
    if new:
        return stored.id
    if all(getattr(stored, name) == value for name, value in draft.__dict__.items()):
        return None
    material = stored.state != draft.state
    changes = {**draft.__dict__, "updated_at": now}
    if material:
        changes.update(status="open", delivery_status="pending", claimed_at=None, delivery_attempts=0)
    session.connection().execute(
        update(Alert.__table__).where(Alert.__table__.c.id == stored.id).values(changes)
    )
    return stored.id if material else None


_ALERT_BY_KEY = Prepared(select(Alert.__table__).where(Alert.__table__.c.key == bindparam("key")))


def _plan_end_values(email: str, plan: PlanRow) -> tuple[dict, dict]:
    """A cancelled or completed plan: when access ends (subscription_ends), and its note."""
    rule = (
        "plan_completed"
        if plan.status == "completed"
        else ("immediately_unpaid" if plan.unpaid_invoices else "end_of_paid_period")
    )
    now = utcnow()
    end = {
        "subscription_id": plan.subscription_id,
        "customer_email": email,
        "stripe_customer_id": None,
        "canceled_at": plan.canceled_at,
        "access_ends_at": plan.access_ends_at,
        "rule": rule,
        "unpaid_invoices": plan.unpaid_invoices,
        "version": 0,
        "updated_at": now,
    }
    note = {
        "key": f"subscription_end:{plan.subscription_id}",
        "email": email,
        "kind": "subscription_end",
        "text": plan_end_note(plan),
        "created_at": plan.canceled_at or now,
        "updated_at": now,
    }
    return end, note


def _plan_end_note_upsert(insert):
    table = CustomerNote.__table__
    statement = insert(table)
    # Only the text follows the plan: the note keeps the email it was first written for.
    return statement.on_conflict_do_update(
        index_elements=["key"],
        set_={"text": statement.excluded.text, "updated_at": statement.excluded.updated_at},
        where=table.c.text != statement.excluded.text,
    )


def _dispute_alerts(rows: list[SaleRow], disputes) -> list[AlertDraft]:
    by_charge = {r.charge_id: r for r in rows if r.charge_id}
    drafts = []
    for dispute in disputes:
        sale = by_charge.get(dispute.charge)
        if sale is not None:
            drafts.append(dispute_alert(dispute, sale, sale.customer_email, sale.product))
    return drafts


def _payment_failed_alerts(rows: list[SaleRow], invoices) -> list[AlertDraft]:
    invoice_by_id = {i.id: i for i in invoices}
    by_invoice: dict[str, list[SaleRow]] = {}
    for row in rows:
        if row.invoice_id and row.subscription_id:
            by_invoice.setdefault(row.invoice_id, []).append(row)
    drafts = []
    for invoice_id, group in by_invoice.items():
        failed = [r for r in group if r.status == "failed"]
        if not failed:
            continue
        paid = next((r for r in group if r.took_money), None)
        latest = max(failed, key=lambda r: (r.paid_at is not None, r.paid_at, r.charge_id or ""))
        drafts.append(payment_failed_alert(latest, paid, invoice_by_id.get(invoice_id)))
    return drafts


def refresh_customers(
    session: Session, emails: Iterable[str], *, window: timedelta | None = None
) -> list[int]:
    """Bring each customer's record up to date; return the ids of alerts to send (new or changed).

    The customers are refreshed together (the nightly run passes a page's worth): their locks taken in
    sorted order, their facts read with one statement per table (`load_customers_facts`), their links,
    notes and plan ends written in batches. The result is what refreshing them one at a time in sorted
    order gives: each write is an upsert by key whose outcome does not depend on the statement it is
    sent in (a key met twice keeps its last value, an inserted-once row its first), and the alerts,
    whose steps read what the steps before them wrote, are still raised and withdrawn in that order.
    """
    from handlers.sales_rows import store_customer_rows

    window = window or DUPLICATE_WINDOW
    wanted = sorted({e for e in emails if e})
    _lock_customers(session, wanted)  # see models.db.advisory_lock: sorted, before anything is read
    # What the customers' records hold already. Started before the facts are read (alerts are written
    # only after it is read), so in a pipelined transaction it travels with the facts' first statement.
    record_read = _RECORDS(session).start(session, {"emails": wanted}) if wanted else None
    loaded = load_customers_facts(session, wanted)
    records = _Records(record_read.rows() if record_read else [])
    built = {email: [(part, part.view()) for part in loaded[email].by_account()] for email in wanted}
    # Built once: the plan-end notes below and the dashboard's plan_rows both come from them.
    plans = {email: [build_plans(part, rows) for part, rows in built[email]] for email in wanted}

    writes = _Writes(records)
    drafts_of: dict[str, list[AlertDraft]] = {}
    for email in wanted:
        parts = built[email]
        writes.link(email, [row for _, rows in parts for row in rows])
        drafts: list[AlertDraft] = []
        for (part, rows), part_plans in zip(parts, plans[email], strict=True):
            drafts += _update_record(writes, email, part, rows, part_plans, window)
        drafts_of[email] = drafts
    writes.flush(session)

    to_send: list[int] = []
    holding = records.holding
    for email in wanted:
        drafts = drafts_of[email]
        for draft in drafts:
            alert_id = upsert_alert(session, draft)
            if alert_id is not None:
                to_send.append(alert_id)
            if draft.kind == "access_revocation" and draft.customer_email:
                holding.add(draft.customer_email)
        # Only a customer that holds a live access alert, from before or just raised, has one to withdraw.
        if email in holding:
            to_send += _withdraw_stale_access_alerts(session, email, {d.key for d in drafts})
    store_customer_rows(session, loaded, built, plans)  # the dashboard's copy of the sales view
    return to_send


def _lock_customers(session: Session, emails: list[str]) -> None:
    """`advisory_lock` of each customer, in the given (sorted) order, in one statement."""
    if len(emails) == 1:
        advisory_lock(session, f"customer:{emails[0]}")
    elif emails and session.get_bind().dialect.name == "postgresql":
        execute(session, _ADVISORY_LOCKS, {"keys": [f"customer:{email}" for email in emails]})


# A function scan returns the array's elements in order, so the locks are taken in the keys' order;
# the keys are hashed as `advisory_lock` hashes them, so both take the same locks. The same statement
# makes the transaction plan each statement for its own lists: the batch statements
# (handlers.sales_view.ByDialect) have one SQL text whatever the lists hold, and a plan kept for them
# from when the tables were small (a sequential scan) would be kept as they grow.
_ADVISORY_LOCKS = Prepared(
    text(
        "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
        "count(pg_advisory_xact_lock(hashtextextended(key, 0))) "
        "FROM unnest(CAST(:keys AS text[])) AS key"
    )
)


class _Records:
    """What the refreshed customers' records held when the refresh began (`_RECORDS`)."""

    def __init__(self, rows) -> None:
        self.holding: set[str] = set()  # customers holding an access alert that is not withdrawn
        self.customers: set[str] = set()  # customers with a row in `customers`
        self.links: set[tuple[str, str]] = set()  # (Stripe customer, email) in `customer_stripe_ids`
        for what, email, stripe_customer in rows:
            if what == "alert":
                self.holding.add(email)
            elif what == "customer":
                self.customers.add(email)
            else:
                self.links.add((stripe_customer, email))


class _Writes:
    """A refresh's links, notes and plan ends, gathered in refresh order and written in batches.

    A key met twice is written once with what the last write would have left (an insert-once row:
    the first), so one batched statement never touches a row twice (PostgreSQL refuses that). An
    insert-once row already stored as it would be written is not sent at all (`records`): the
    customer row and links of a customer seen before, who most events are about.
    """

    def __init__(self, records: _Records) -> None:
        self.records = records
        self.customers: dict[str, dict] = {}
        self.links: dict[str, dict] = {}
        self.notes: dict[str, dict] = {}
        self.ends: dict[str, dict] = {}
        self.end_notes: dict[str, dict] = {}

    def link(self, email: str, rows: list[SaleRow]) -> None:
        now = utcnow()
        if email not in self.records.customers:
            self.customers.setdefault(email, {"email": email, "created_at": now})
        for stripe_customer in sorted({r.stripe_customer_id for r in rows if r.stripe_customer_id}):
            if (stripe_customer, email) in self.records.links:
                continue  # stored already, for this email: the insert would do nothing
            self.links.setdefault(
                stripe_customer, {"stripe_customer_id": stripe_customer, "email": email, "first_seen_at": now}
            )

    def note(self, email: str, refund: Refund, sale: SaleRow | None) -> None:
        values = _note_values(email, refund, sale)
        earlier = self.notes.get(values["key"])
        if earlier is not None:  # the first write inserted it (created_at); the last one's says the rest
            values["created_at"] = earlier["created_at"]
        self.notes[values["key"]] = values

    def plan_end(self, email: str, plan: PlanRow) -> None:
        end, note = _plan_end_values(email, plan)
        self.ends[plan.subscription_id] = end  # every column but the key follows the last write
        earlier = self.end_notes.get(note["key"])
        if earlier is not None:  # the note keeps its first email and date; its text follows the last
            note.update(email=earlier["email"], created_at=earlier["created_at"])
        self.end_notes[note["key"]] = note

    def flush(self, session: Session) -> None:
        insert = dialect_insert(session)
        if self.customers:
            _insert_ignore_many(session, Customer, list(self.customers.values()), ("email",))
        if self.links:
            _insert_ignore_many(session, CustomerStripeId, list(self.links.values()), ("stripe_customer_id",))
        if self.notes:
            _write_note(session, list(self.notes.values()))
        if self.ends:
            upsert_many(
                session, SubscriptionEnd, list(self.ends.values()), keep_on_update=("stripe_customer_id",)
            )
            statement = built_once(("plan end note", insert), lambda: _plan_end_note_upsert(insert))
            _execute_each(session, statement, list(self.end_notes.values()))


def _execute_each(session: Session, statement: Prepared, values: list[dict]) -> None:
    """One row: the prepared statement; several: one batched statement (models.db.execute)."""
    execute(session, statement, values[0] if len(values) == 1 else values)


def _insert_ignore_many(session: Session, model, values: list[dict], keys: tuple[str, ...]) -> None:
    """`insert_ignore` of each row (INSERT ... ON CONFLICT DO NOTHING), in one batched statement."""
    table, insert = model.__table__, dialect_insert(session)
    statement = built_once(
        ("ignore many", insert, table.name, tuple(values[0]), keys),
        lambda: insert(table).on_conflict_do_nothing(index_elements=list(keys)),
    )
    _execute_each(session, statement, values)


def _withdraw_stale_access_alerts(session: Session, email: str, live: set[str]) -> list[int]:
    """Close access alerts whose cause is gone: their refund failed or was canceled (staff often
    refund again, and that refund then has its own alert), or the kept purchase was refunded too.

    The alert stays, resolved by the worker with the reason, and is sent again so staff who were about
    to act on it know; if its cause comes back (a late event), the next refresh reopens it.
    """
    alerts = Alert.__table__
    stale = execute(session, _LIVE_ACCESS_ALERTS, {"email": email}).all()
    withdrawn = []
    now = utcnow()
    for alert in stale:
        if alert.key in live:
            continue
        reason = f"Withdrawn: refund {alert.refund_id} no longer leaves a paid duplicate (it failed or was "
        reason += "canceled, or the other purchase was refunded too); nothing to re-grant for it."
        session.connection().execute(
            update(alerts)
            .where(alerts.c.id == alert.id)
            .values(
                state="withdrawn",
                status="resolved",
                resolved_by="worker",
                resolved_at=now,
                resolution_note=reason,
                message=f"{alert.message} {reason}",
                updated_at=now,
                delivery_status="pending",
                claimed_at=None,
                delivery_attempts=0,
            )
        )
        withdrawn.append(alert.id)
    return withdrawn


_alerts = Alert.__table__
_customers, _links = Customer.__table__, CustomerStripeId.__table__
# Per customer: whether they hold an access alert that is not withdrawn (what the next refresh can
# withdraw), whether their `customers` row exists, and their links to Stripe customers; one statement.
_RECORDS = ByDialect(
    lambda in_: union(
        select(
            literal("alert").label("what"),
            _alerts.c.customer_email,
            cast(null(), String).label("stripe_customer"),
        ).where(
            in_(_alerts.c.customer_email, "emails"),
            _alerts.c.kind == "access_revocation",
            _alerts.c.state.is_distinct_from("withdrawn"),
        ),
        select(literal("customer"), _customers.c.email, null()).where(in_(_customers.c.email, "emails")),
        select(literal("link"), _links.c.email, _links.c.stripe_customer_id).where(
            in_(_links.c.email, "emails")
        ),
    )
)
_LIVE_ACCESS_ALERTS = Prepared(
    select(_alerts.c.id, _alerts.c.key, _alerts.c.refund_id, _alerts.c.message).where(
        _alerts.c.customer_email == bindparam("email"),
        _alerts.c.kind == "access_revocation",
        _alerts.c.state.is_distinct_from("withdrawn"),
    )
)


def _update_record(
    writes: _Writes,
    email: str,
    facts: SalesFacts,
    rows: list[SaleRow],
    plans: list[PlanRow],
    window: timedelta,
) -> list[AlertDraft]:
    """One account's part of a customer's record: refund notes and plan-end notes written, the alerts
    the facts call for returned as drafts. `plans`: `build_plans(facts, rows)`."""
    drafts: list[AlertDraft] = []
    by_charge = {r.charge_id: r for r in rows if r.charge_id}
    refunds_by_charge: dict[str, list[Refund]] = {}
    for refund in (r for r in facts.refunds if r.charge in by_charge):
        writes.note(email, refund, by_charge.get(refund.charge))
        refunds_by_charge.setdefault(refund.charge, []).append(refund)
    for charge_id, charge_refunds in refunds_by_charge.items():
        sale = by_charge[charge_id]
        if sale.refunded_amount < sale.amount:
            continue
        completing = _refund_that_completed(sale, charge_refunds)
        kept = kept_duplicate(sale, rows, window) if completing else None
        if completing and kept:
            drafts.append(access_alert(completing.id, sale, kept))
    drafts += _dispute_alerts(rows, facts.disputes)
    drafts += _payment_failed_alerts(rows, facts.invoices)
    for plan in plans:
        if plan.status in ("completed", "cancelled"):
            writes.plan_end(email, plan)
    return drafts


def raise_alert(session: Session, draft: AlertDraft) -> int | None:
    """Raise (or update) an alert that no customer refresh can: a dispute whose customer is unknown."""
    if draft.customer_email:
        insert_ignore(session, Customer, {"email": draft.customer_email, "created_at": utcnow()})
    return upsert_alert(session, draft)

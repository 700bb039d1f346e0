"""A short refund history in the Stripe customer's metadata, for staff who work in the Stripe dashboard.

With MIRROR_NOTES_TO_STRIPE=true the clock calls `mirror_changed_customers` every minute. It writes
one metadata key, `refund_history`, on every `cus_` id of a customer whose refund notes changed:

- **Only our key.** `POST /v1/customers/{id}` with `metadata[refund_history]=...` sets that key and
  leaves every other key the seller keeps there as it is (Stripe merges metadata on update; posting
  our key as "" deletes it, which is how a history that became empty is taken away). We never read,
  send or count the seller's keys.
- **Within Stripe's limits** (https://docs.stripe.com/metadata: 50 keys, key names up to 40
  characters, values up to 500 characters): one key of 14 characters, and a value of at most 500
  UTF-8 bytes (so also at most 500 characters, however Stripe counts), newest refunds first, whole
  entries only, ending in "… +N more" when they do not all fit. A customer who already has 50 keys
  of their own gets Stripe's 400, which is logged and not retried until the history changes.
- **Each seller sees only their own refunds.** A `cus_` id belongs to one Stripe account (the
  platform, or one Connect account, as its charges show); its history lists only refunds on that
  account, and is written with that account's `Stripe-Account` header, even when
  MERGE_CUSTOMERS_ACROSS_ACCOUNTS joins the customer's records across sellers.
- **Idempotency keys.** Stripe saves the first answer to a key for 24 hours and replays it, 500s
  included, and refuses the same key with other parameters
  (https://docs.stripe.com/api/idempotent_requests). The key is built from the customer id, the
  number of requests recorded for it so far, and the hash of the value: a retry of a request whose
  answer was lost (the clock died after Stripe applied it) sends the same key and cannot write twice;
  a changed history, and any request after a recorded failure, gets a new key, so a history that goes
  A, B, A within a day is written all three times and a saved 500 is not replayed forever.
- **Why the clock and not an actor enqueued after commit:** an enqueue after commit is lost when the
  process dies between the commit and the enqueue, or Redis is down then (there is no outbox). The
  clock instead compares what is stored (refund notes' `updated_at`) with what it last checked
  (`stripe_note_mirrors.checked_through`), so a missed turn, a crash or a Stripe outage only delays a
  write; and it skips customers whose hash is unchanged, so a run repeated, or two clocks (which also
  take a lock), never write twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

import stripe
from sqlalchemy import and_, func, or_, select

from handlers.money import format_amount
from models import (
    Charge,
    CustomerNote,
    CustomerStripeId,
    Database,
    Invoice,
    Refund,
    StripeNoteMirror,
    Subscription,
)
from models.types import utcnow

log = logging.getLogger(__name__)

# The one metadata key this worker owns on a Stripe customer.
METADATA_KEY = "refund_history"
# Stripe's limits (https://docs.stripe.com/metadata).
MAX_KEYS = 50
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500
assert len(METADATA_KEY) <= MAX_KEY_LENGTH and "[" not in METADATA_KEY and "]" not in METADATA_KEY

SEPARATOR = "; "
# How many customers one run of the clock looks at (and so at most how many requests it makes).
DEFAULT_LIMIT = 100
# Notes updated up to this long before a look are looked at again on later runs: a note written in a
# transaction that commits after the look (an event handler waiting on Stripe) is still seen. A look
# that finds the same history costs one query and no request.
LOOK_BACK = timedelta(minutes=15)

_CUSTOMER_ID = re.compile(r"^cus_[A-Za-z0-9]{1,250}$")


class NoteLike(Protocol):
    refund_id: str | None
    amount: int | None
    currency: str | None
    status: str | None
    created_at: datetime


class Requests(Protocol):
    """What the mirror needs of `worker.stripe_api.StripeReader`: one request with retries."""

    def request(self, method: str, path: str, params: dict | None = None, *, account: str = "") -> dict: ...


def _entry(note: NoteLike, timezone: tzinfo) -> str:
    day = note.created_at.astimezone(timezone).strftime("%Y-%m-%d") if note.created_at else "date unknown"
    if note.amount is not None and note.currency:
        amount = format_amount(note.amount, note.currency)
    else:
        amount = "amount unknown"
    return f"{day} {note.refund_id or '?'} {amount} {note.status or 'status unknown'}"


def _size(text: str) -> int:
    # Bytes, not characters: at most 500 either way, whichever Stripe counts ("…" is 3 bytes).
    return len(text.encode("utf-8"))


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, ending in "…" when cut."""
    if _size(text) <= limit:
        return text
    while text and _size(text + "…") > limit:
        text = text[:-1]
    return text + "…"


def refund_history_text(notes: Iterable[NoteLike], *, timezone: tzinfo = UTC) -> str:
    """Refunds newest first, "2026-11-03 re_… 1,000 JPY succeeded; …", at most 500 UTF-8 bytes.

    Whole entries only; what does not fit is counted in a closing "… +N more". "" for no refunds.
    """
    ordered = sorted(notes, key=lambda n: (n.created_at, n.refund_id or ""), reverse=True)
    entries = [_entry(note, timezone) for note in ordered]
    text = ""
    for shown, entry in enumerate(entries):
        candidate = text + SEPARATOR + entry if text else entry
        left = len(entries) - shown - 1
        suffix = f"{SEPARATOR}… +{left} more" if left else ""
        if _size(candidate + suffix) > MAX_VALUE_LENGTH:
            if text:
                return text + f"{SEPARATOR}… +{len(entries) - shown} more"
            # Not even the newest entry fits beside the count (an id of hundreds of characters).
            return _cut(entry, MAX_VALUE_LENGTH - _size(suffix)) + suffix
        text = candidate
    return text


def refund_history_metadata(notes: Iterable[NoteLike], *, timezone: tzinfo = UTC) -> dict[str, str]:
    """The metadata to send: our one key only, "" (which deletes the key) when there is no refund."""
    return {METADATA_KEY: refund_history_text(notes, timezone=timezone)}


def content_hash(metadata: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def idempotency_key(stripe_customer_id: str, attempts: int, digest: str) -> str:
    """One key per (customer, recorded request number, value): see the module's docstring. <= 255 chars."""
    key = f"refund-history:{stripe_customer_id}:{attempts}:{digest[:32]}"
    if len(key) > 255:
        key = "refund-history:" + hashlib.sha256(key.encode()).hexdigest()
    return key


# --- reading what to write --------------------------------------------------------------------------


def account_of(session, stripe_customer_id: str) -> str:
    """The account a customer lives in, as its charges, subscriptions or invoices show ("": platform)."""
    for table in (Charge.__table__, Subscription.__table__, Invoice.__table__):
        found = (
            session.connection()
            .execute(select(table.c.account).where(table.c.customer == stripe_customer_id).limit(1))
            .first()
        )
        if found is not None:
            return found.account or ""
    return ""


def refund_notes(session, email: str, account: str) -> list[CustomerNote]:
    """The customer's refund notes for refunds on `account` (never another seller's)."""
    notes, refunds, charges = CustomerNote.__table__, Refund.__table__, Charge.__table__
    statement = (
        select(notes)
        .outerjoin(refunds, refunds.c.id == notes.c.refund_id)
        .outerjoin(charges, charges.c.id == notes.c.charge_id)
        .where(
            notes.c.email == email,
            notes.c.kind == "refund",
            func.coalesce(refunds.c.account, charges.c.account, "") == account,
        )
    )
    return [
        CustomerNote.model_validate(dict(row._mapping)) for row in session.connection().execute(statement)
    ]


@dataclass
class _Plan:
    stripe_customer_id: str
    email: str
    account: str
    metadata: dict[str, str]
    digest: str
    attempts: int
    stored_hash: str | None
    refused_hash: str | None
    looked_at: datetime


def _plan(database: Database, stripe_customer_id: str, email: str, timezone: tzinfo) -> _Plan:
    looked_at = utcnow()
    with database.session() as session:
        stored = session.get(StripeNoteMirror, stripe_customer_id)
        account = account_of(session, stripe_customer_id)
        notes = refund_notes(session, email, account)
    metadata = refund_history_metadata(notes, timezone=timezone)
    return _Plan(
        stripe_customer_id=stripe_customer_id,
        email=email,
        account=account,
        metadata=metadata,
        digest=content_hash(metadata),
        attempts=stored.attempts if stored else 0,
        stored_hash=stored.content_hash if stored else None,
        refused_hash=stored.refused_hash if stored else None,
        looked_at=looked_at,
    )


def _record(
    database: Database,
    plan: _Plan,
    *,
    sent: bool,
    written: bool,
    checked: bool,
    error: str | None,
    refused: bool = False,
) -> None:
    now = utcnow()
    with database.session() as session:
        row = session.get(StripeNoteMirror, plan.stripe_customer_id) or StripeNoteMirror(
            stripe_customer_id=plan.stripe_customer_id
        )
        row.account = plan.account
        if sent:
            row.attempts += 1
            row.attempted_at = now
            row.last_error = error
        if written:
            row.content_hash = plan.digest
            row.mirrored_at = now
        if sent:
            row.refused_hash = plan.digest if refused else None
        if checked:
            through = plan.looked_at - LOOK_BACK
            if row.checked_through is None or row.checked_through < through:
                row.checked_through = through
        session.add(row)


# --- writing ----------------------------------------------------------------------------------------


class StripeUnavailable(RuntimeError):
    """Stripe did not take a request even after retries (an outage, a rate limit, a bad API key)."""


def _refused_for_this_customer(error: stripe.StripeError) -> bool:
    """A refusal about this customer (no such customer, 50 keys already, no access to its account),
    as opposed to Stripe or our key being unusable right now."""
    return isinstance(error, stripe.InvalidRequestError | stripe.PermissionError)


def _one_line(error: stripe.StripeError) -> str:
    parts = [type(error).__name__]
    if error.http_status:
        parts.append(f"HTTP {error.http_status}")
    code = getattr(error, "code", None)
    if code:
        parts.append(code)
    message = (getattr(error, "user_message", None) or str(error) or "").strip().splitlines()
    if message:
        parts.append(message[0][:300])
    if error.request_id:
        parts.append(f"request {error.request_id}")
    return "; ".join(parts)


def mirror_stripe_customer(
    database: Database, client: Requests, stripe_customer_id: str, email: str, *, timezone: tzinfo = UTC
) -> str:
    """Bring one Stripe customer's `refund_history` up to date; returns what happened:

    "written", "unchanged" (Stripe already has it, or there is nothing and never was), "refused"
    (Stripe refused it for this customer: logged, tried again when the history changes). Raises
    StripeUnavailable when Stripe could not be reached or asked us to come back later (recorded: the
    next run retries with a new idempotency key).
    """
    if not _CUSTOMER_ID.match(stripe_customer_id):
        return "unchanged"  # not a Stripe customer id (never put into a URL)
    plan = _plan(database, stripe_customer_id, email, timezone)
    nothing_yet = plan.stored_hash is None and not plan.metadata[METADATA_KEY]
    # Stripe has it already, or refused exactly this history for this customer: nothing to send.
    if plan.digest in (plan.stored_hash, plan.refused_hash) or nothing_yet:
        _record(database, plan, sent=False, written=False, checked=True, error=None)
        return "unchanged"
    key = idempotency_key(stripe_customer_id, plan.attempts, plan.digest)
    try:
        client.request(
            "post",
            f"/v1/customers/{stripe_customer_id}",
            {"metadata": plan.metadata, "idempotency_key": key},
            account=plan.account,
        )
    except stripe.StripeError as error:
        line = _one_line(error)
        if _refused_for_this_customer(error):
            log.warning(
                "refund history not written to %s%s: %s (tried again when the history changes)",
                stripe_customer_id,
                f" on {plan.account}" if plan.account else "",
                line,
            )
            _record(database, plan, sent=True, written=False, checked=True, error=line, refused=True)
            return "refused"
        _record(database, plan, sent=True, written=False, checked=False, error=line)
        raise StripeUnavailable(f"{stripe_customer_id}: {line}") from error
    _record(database, plan, sent=True, written=True, checked=True, error=None)
    return "written"


def mirror_customer(
    database: Database, client: Requests, email: str, *, timezone: tzinfo = UTC
) -> dict[str, str]:
    """Every `cus_` id of `email`, brought up to date: {cus_id: outcome}."""
    with database.session() as session:
        ids = (
            session.connection()
            .execute(
                select(CustomerStripeId.__table__.c.stripe_customer_id)
                .where(CustomerStripeId.__table__.c.email == email)
                .order_by(CustomerStripeId.__table__.c.stripe_customer_id)
            )
            .scalars()
            .all()
        )
    return {cus: mirror_stripe_customer(database, client, cus, email, timezone=timezone) for cus in ids}


def changed_customers(database: Database, limit: int) -> list[tuple[str, str]]:
    """(cus_ id, email) pairs whose refund notes changed after they were last looked at; never looked
    at first, then the longest since their last request (so one customer Stripe keeps refusing never
    holds up the others)."""
    links, notes, mirrors = CustomerStripeId.__table__, CustomerNote.__table__, StripeNoteMirror.__table__
    latest = func.max(notes.c.updated_at)
    statement = (
        select(links.c.stripe_customer_id, links.c.email)
        .join(notes, and_(notes.c.email == links.c.email, notes.c.kind == "refund"))
        .outerjoin(mirrors, mirrors.c.stripe_customer_id == links.c.stripe_customer_id)
        .group_by(
            links.c.stripe_customer_id, links.c.email, mirrors.c.checked_through, mirrors.c.attempted_at
        )
        .having(or_(mirrors.c.checked_through.is_(None), latest > mirrors.c.checked_through))
        .order_by(mirrors.c.attempted_at.asc().nulls_first(), links.c.stripe_customer_id)
        .limit(limit)
    )
    with database.session() as session:
        return [(row.stripe_customer_id, row.email) for row in session.connection().execute(statement)]


def mirror_changed_customers(
    database: Database, client: Requests, *, limit: int = DEFAULT_LIMIT, timezone: tzinfo = UTC
) -> dict[str, int]:
    """One run of the clock's job: up to `limit` changed customers; stops at the first sign that Stripe
    is unavailable (logged in one line; everything not written is tried again next run)."""
    counts = {"written": 0, "unchanged": 0, "refused": 0, "failed": 0}
    for stripe_customer_id, email in changed_customers(database, limit):
        try:
            outcome = mirror_stripe_customer(database, client, stripe_customer_id, email, timezone=timezone)
        except StripeUnavailable as error:
            log.warning("refund history mirror paused until the next run: %s", error)
            counts["failed"] += 1
            break
        counts[outcome] += 1
    return counts

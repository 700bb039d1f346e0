"""Payments: charges, invoices and invoice payments, from `charge.*`, `invoice.*` and
`invoice_payment.paid` events, with the links a payload lacks fetched from Stripe (never guessed).

Every handler stores facts keyed by their own ids; `handlers.sales_view` derives the links when the view
is read, so the order in which events arrive does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import func, select

from handlers.context import FetchContext, HandlerContext
from handlers.customers import emails_for_charges, refresh_customers
from handlers.fields import object_id
from handlers.funnel import normalise_email
from handlers.ranks import CHARGE_TIES, COUNTED_REFUND_STATUSES
from handlers.refunds import record_refund
from handlers.stripe_shapes import (
    charge_email,
    charge_facts,
    invoice_facts,
    invoice_is_paid,
    invoice_payment_facts,
)
from models import Charge, CustomerStripeId, Invoice, InvoicePayment, Refund, advisory_lock, upsert_newer
from models.types import utcnow

# Link columns a payload may lack: a payload without them must not erase what another one supplied.
CHARGE_FILL_ONLY = ("customer", "payment_intent", "description", "customer_email", "invoice_id")
INVOICE_FILL_ONLY = (
    "subscription_id",
    "customer",
    "customer_email",
    "product",
    "price_id",
    "charge_id",
    "payment_intent_id",
    "paid_at",
    "billing_reason",
)
INVOICE_PAYMENT_FILL_ONLY = ("payment_intent_id", "charge_id", "amount_paid", "currency", "paid_at")


@dataclass
class Fetched:
    """Objects fetched from Stripe to complete an event's links."""

    charges: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    invoice_payments: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    # The email of the event's Stripe customer, when the charge itself carries none.
    customer_email: str | None = None
    # Stripe said the event's payment belongs to no invoice (a one-time sale): remembered on the charge.
    no_invoice: bool = False


# --- writes ----------------------------------------------------------------------------------------


def upsert_charge(ctx: HandlerContext, charge: dict[str, Any], *, found_by: str = "webhook") -> None:
    values = charge_facts(charge, account=ctx.account, version=ctx.version, event_id=ctx.event_id)
    values.update(found_by=found_by, updated_at=utcnow())
    if values["customer_email"] is None and ctx.fetched is not None:
        values["customer_email"] = ctx.fetched.customer_email

    upsert_newer(
        ctx.session,
        Charge,
        values,
        keep_on_update=("found_by",),
        fill_only=CHARGE_FILL_ONLY,
        rank_on_tie=CHARGE_TIES,
    )
    # Before API version 2022-11-15 charges carry their refunds inline; record them too.
    refunds = charge.get("refunds")
    if isinstance(refunds, dict):
        for refund in refunds.get("data") or []:
            if isinstance(refund, dict):
                record_refund(ctx, refund)


def upsert_invoice(ctx: HandlerContext, invoice: dict[str, Any]) -> None:
    values = invoice_facts(invoice, account=ctx.account, version=ctx.version)
    values["updated_at"] = utcnow()
    upsert_newer(ctx.session, Invoice, values, fill_only=INVOICE_FILL_ONLY)
    payments = invoice.get("payments")  # present when the invoice was fetched with expand[]=payments
    if isinstance(payments, dict):
        for invoice_payment in payments.get("data") or []:
            upsert_invoice_payment(ctx, invoice_payment)


def upsert_invoice_payment(ctx: HandlerContext, invoice_payment: dict[str, Any]) -> None:
    values = invoice_payment_facts(invoice_payment, version=ctx.version)
    values["updated_at"] = utcnow()
    upsert_newer(ctx.session, InvoicePayment, values, fill_only=INVOICE_PAYMENT_FILL_ONLY)
    intent = (invoice_payment.get("payment") or {}).get("payment_intent")
    if isinstance(intent, dict) and isinstance(intent.get("latest_charge"), dict):
        upsert_charge(ctx, intent["latest_charge"])
    if isinstance(invoice_payment.get("invoice"), dict):
        upsert_invoice(ctx, invoice_payment["invoice"])


def apply_fetched(ctx: HandlerContext) -> None:
    fetched: Fetched | None = ctx.fetched
    if fetched is None:
        return
    for invoice in fetched.invoices:
        upsert_invoice(ctx, invoice)
    for invoice_payment in fetched.invoice_payments:
        upsert_invoice_payment(ctx, invoice_payment)
    for charge in fetched.charges:
        upsert_charge(ctx, charge)
    for refund in fetched.refunds:
        record_refund(ctx, refund)


# --- what is already known -------------------------------------------------------------------------


def _known(ctx: FetchContext, model, **where: str) -> bool:
    with ctx.session_factory() as session:
        query = select(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return session.exec(query.limit(1)).first() is not None


def _invoice_link_known(ctx: FetchContext, payment_intent: str, charge_id: str) -> bool:
    """Whether asking Stripe for the payment's invoice would tell us nothing new: the link is stored,
    or Stripe already said there is none (every event of a one-time charge would ask again)."""
    return (
        _known(ctx, InvoicePayment, payment_intent_id=payment_intent)
        or _known(ctx, Invoice, payment_intent_id=payment_intent)
        or _known(ctx, Charge, id=charge_id, no_invoice=True)
    )


# --- charge.* --------------------------------------------------------------------------------------


def fetch_charge_links(ctx: FetchContext) -> Fetched | None:
    """The invoice a paid (or failed) charge belongs to, when neither the payload nor the database says."""
    charge = ctx.object
    if ctx.stripe is None or charge.get("status") not in ("succeeded", "failed"):
        return None
    fetched = Fetched()
    invoice_id = object_id(charge.get("invoice"))
    payment_intent = object_id(charge.get("payment_intent"))
    if invoice_id:  # before 2025-03-31: the charge names its invoice; we may lack its subscription
        if not _known(ctx, Invoice, id=invoice_id):
            fetched.invoices.append(ctx.stripe.get(f"/v1/invoices/{invoice_id}", account=ctx.account))
    elif payment_intent and not _invoice_link_known(ctx, payment_intent, charge["id"]):
        page = ctx.stripe.get(
            "/v1/invoice_payments",
            {
                "payment": {"type": "payment_intent", "payment_intent": payment_intent},
                "expand": ["data.invoice"],
            },
            account=ctx.account,
        )
        fetched.invoice_payments.extend(page.get("data") or [])
        fetched.no_invoice = not fetched.invoice_payments
    if _refunds_missing(ctx, charge):
        # Since API version 2022-11-15 a charge no longer lists its refunds: without them a refund
        # seen only through charge.refunded would get no note.
        page = ctx.stripe.get("/v1/refunds", {"charge": charge["id"], "limit": 100}, account=ctx.account)
        fetched.refunds.extend(page.get("data") or [])
    customer = charge.get("customer")
    if charge_email(charge) is None and isinstance(customer, str):
        # Without an email the payment cannot be put on anyone's record; ask Stripe whose it is.
        # A customer deleted since (404, or `deleted: true`) just leaves the email unknown.
        fetched.customer_email = _known_email(ctx, customer) or normalise_email(
            (ctx.stripe.get_optional(f"/v1/customers/{customer}", account=ctx.account) or {}).get("email")
        )

    return fetched


def _refunds_missing(ctx: FetchContext, charge: dict[str, Any]) -> bool:
    refunded = charge.get("amount_refunded") or 0
    if not refunded or isinstance(charge.get("refunds"), dict) and charge["refunds"].get("data"):
        return False
    with ctx.session_factory() as session:
        known = (
            session.exec(
                select(func.sum(Refund.amount)).where(
                    Refund.charge == charge["id"], Refund.status.in_(COUNTED_REFUND_STATUSES)
                )
            ).one()
            or 0
        )
    return known < refunded


def _known_email(ctx: FetchContext, stripe_customer: str) -> str | None:

    with ctx.session_factory() as session:
        link = session.get(CustomerStripeId, stripe_customer)
        return link.email if link else None


def _refresh(ctx: HandlerContext, charge_ids: set[str], emails: set[str | None] = frozenset()) -> None:
    fetched: Fetched | None = ctx.fetched
    if fetched is not None:
        charge_ids |= {c["id"] for c in fetched.charges}
        charge_ids |= {object_id(ip.get("payment", {}).get("charge")) for ip in fetched.invoice_payments} - {
            None
        }
    found = emails_for_charges(ctx.session, charge_ids) | {e for e in emails if e}
    ctx.new_alert_ids.extend(refresh_customers(ctx.session, found))


def record_charge(ctx: HandlerContext) -> None:
    advisory_lock(ctx.session, f"charge:{ctx.object.get('id')}")  # before reading: see advisory_lock
    upsert_charge(ctx, ctx.object)
    if ctx.fetched is not None and ctx.fetched.no_invoice:
        ctx.session.connection().execute(
            update(Charge.__table__).where(Charge.__table__.c.id == ctx.object["id"]).values(no_invoice=True)
        )

    apply_fetched(ctx)
    _refresh(ctx, {ctx.object["id"]})


# --- invoice.paid, invoice.payment_succeeded -------------------------------------------------------


def fetch_invoice_links(ctx: FetchContext) -> Fetched | None:
    """The payment (and its charge) behind a paid invoice, or behind a failed attempt to pay one,
    when the payload does not carry it."""
    invoice = ctx.object
    if ctx.stripe is None or not (invoice_is_paid(invoice) or invoice.get("attempt_count")):
        return None
    fetched = Fetched()
    charge_id = object_id(invoice.get("charge"))
    if charge_id:  # before 2025-03-31: the invoice names its charge
        if not _known(ctx, Charge, id=charge_id):
            fetched.charges.append(ctx.stripe.get(f"/v1/charges/{charge_id}", account=ctx.account))
        return fetched
    invoice_id = invoice["id"]
    if _known(ctx, InvoicePayment, invoice_id=invoice_id):
        return fetched
    page = ctx.stripe.get(
        "/v1/invoice_payments",
        {"invoice": invoice_id, "expand": ["data.payment.payment_intent.latest_charge"]},
        account=ctx.account,
    )
    fetched.invoice_payments.extend(page.get("data") or [])
    return fetched


def record_invoice(ctx: HandlerContext) -> None:
    upsert_invoice(ctx, ctx.object)
    apply_fetched(ctx)
    charge_id = object_id(ctx.object.get("charge"))
    _refresh(ctx, {charge_id} if charge_id else set(), {normalise_email(ctx.object.get("customer_email"))})


# --- invoice_payment.paid (API versions from 2025-05-28.basil) --------------------------------------


def fetch_invoice_payment_links(ctx: FetchContext) -> Fetched | None:
    invoice_payment = ctx.object
    if ctx.stripe is None:
        return None
    fetched = Fetched()
    invoice_id = object_id(invoice_payment.get("invoice"))
    if (
        invoice_id
        and not isinstance(invoice_payment.get("invoice"), dict)
        and not _known(ctx, Invoice, id=invoice_id)
    ):
        fetched.invoices.append(ctx.stripe.get(f"/v1/invoices/{invoice_id}", account=ctx.account))
    payment_intent = object_id((invoice_payment.get("payment") or {}).get("payment_intent"))
    if payment_intent and not _known(ctx, Charge, payment_intent=payment_intent):
        intent = ctx.stripe.get(
            f"/v1/payment_intents/{payment_intent}", {"expand": ["latest_charge"]}, account=ctx.account
        )
        if isinstance(intent.get("latest_charge"), dict):
            fetched.charges.append(intent["latest_charge"])
    return fetched


def record_invoice_payment(ctx: HandlerContext) -> None:
    upsert_invoice_payment(ctx, ctx.object)
    apply_fetched(ctx)
    intent = object_id((ctx.object.get("payment") or {}).get("payment_intent"))
    charges = (
        set(ctx.session.exec(select(Charge.id).where(Charge.payment_intent == intent)).all())
        if intent
        else set()
    )
    _refresh(ctx, charges)

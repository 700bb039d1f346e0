"""Subscriptions (`customer.subscription.created`, `.updated`, `.deleted`): their state as last described.

The state is stored as it comes (newest event wins); what it means for the seller (a plan completed, a
subscription past due, a cancellation and when access ends) is derived by `handlers.plans` when the
customer's record is refreshed, so facts that arrive later (the plan's last invoice, the funnel
purchase that says how many payments the plan has) still change the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from handlers.context import FetchContext, HandlerContext
from handlers.customers import refresh_customers
from handlers.fields import object_id, required
from handlers.funnel import normalise_email
from handlers.payments import upsert_invoice
from handlers.stripe_shapes import subscription_facts
from models import CustomerStripeId, FunnelPurchase, Invoice, Subscription, upsert_newer
from models.db import execute
from models.types import utcnow


@dataclass
class FetchedSubscription:
    invoices: list[dict[str, Any]] = field(default_factory=list)
    customer_email: str | None = None


def fetch_subscription_facts(ctx: FetchContext) -> FetchedSubscription | None:
    """At a cancellation, the subscription's invoices (paid ones decide whether a plan was completed,
    unpaid ones when access ends), and whose subscription it is when no payment has told us yet."""
    if ctx.stripe is None:
        return None
    subscription = ctx.object
    fetched = FetchedSubscription()
    if ctx.event["type"] == "customer.subscription.deleted":
        page = ctx.stripe.get(
            "/v1/invoices", {"subscription": subscription["id"], "limit": 100}, account=ctx.account
        )
        fetched.invoices = [i for i in page.get("data") or [] if isinstance(i, dict)]
    customer = object_id(subscription.get("customer"))
    if customer and not _known_customer(ctx, customer):
        found = ctx.stripe.get_optional(f"/v1/customers/{customer}", account=ctx.account) or {}
        fetched.customer_email = normalise_email(found.get("email"))
    return fetched


def _known_customer(ctx: FetchContext, customer: str) -> bool:
    with ctx.session_factory() as session:
        return session.get(CustomerStripeId, customer) is not None


def record_subscription(ctx: HandlerContext) -> None:
    subscription = ctx.object
    subscription_id = required(subscription, "id", str)
    values = subscription_facts(subscription, account=ctx.account, version=ctx.version)
    values["updated_at"] = utcnow()
    upsert_newer(ctx.session, Subscription, values)
    latest = subscription.get("latest_invoice")
    if isinstance(latest, dict) and latest.get("currency"):  # expanded: as good as an invoice event
        upsert_invoice(ctx, latest)
    fetched: FetchedSubscription | None = ctx.fetched
    emails = set()
    if fetched is not None:
        for invoice in fetched.invoices:
            upsert_invoice(ctx, invoice)
        emails.add(fetched.customer_email)
    ctx.new_alert_ids.extend(refresh_customers(ctx.session, emails | _emails_of(ctx, subscription_id)))


def _emails_of(ctx: HandlerContext, subscription_id: str) -> set[str | None]:
    """Whose subscription this is: by its Stripe customer, its invoices, or its funnel purchase."""
    customer = object_id(ctx.object.get("customer"))
    link = ctx.session.get(CustomerStripeId, customer) if customer else None
    emails = {link.email if link else None}
    emails |= set(
        execute(
            ctx.session,
            select(Invoice.customer_email).where(
                Invoice.subscription_id == subscription_id, Invoice.customer_email.is_not(None)
            ),
        ).scalars()
    )
    emails |= set(
        execute(
            ctx.session,
            select(FunnelPurchase.customer_email).where(FunnelPurchase.subscription_id == subscription_id),
        ).scalars()
    )
    return emails

"""Subscription cancellations (`customer.subscription.deleted`): when should access end?

The platform's rule (seed articles): a cancelled member is removed at once when payments are
outstanding, otherwise at the end of the period already paid for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from handlers.context import FetchContext, HandlerContext
from handlers.fields import object_id, required
from models import CustomerNote, CustomerStripeId, Invoice, SubscriptionEnd, dialect_insert, upsert_newer
from models.types import from_unix, utcnow

UNPAID_STATUSES = ("open", "uncollectible")


def paid_period_end(subscription: dict[str, Any]) -> int | None:
    """End of the paid period: `current_period_end` before 2025-03-31, per item from basil on."""
    if isinstance(subscription.get("current_period_end"), int):
        return subscription["current_period_end"]
    ends = [
        item.get("current_period_end")
        for item in (subscription.get("items") or {}).get("data") or []
        if isinstance(item, dict) and isinstance(item.get("current_period_end"), int)
    ]
    return max(ends) if ends else None


def access_end(subscription: dict[str, Any], unpaid_invoices: int) -> tuple[str, datetime | None]:
    ended = subscription.get("ended_at") or subscription.get("canceled_at")
    if unpaid_invoices:
        return "immediately_unpaid", from_unix(ended)
    return "end_of_paid_period", from_unix(paid_period_end(subscription) or ended)


def _unpaid_from_payload(subscription: dict[str, Any]) -> int | None:
    latest = subscription.get("latest_invoice")
    if isinstance(latest, dict) and latest.get("status"):
        return 1 if latest["status"] in UNPAID_STATUSES else 0
    return None


def fetch_unpaid_invoices(ctx: FetchContext) -> int | None:
    """How many invoices of the subscription are still unpaid, asked of Stripe when it can be."""
    known = _unpaid_from_payload(ctx.object)
    if known is not None or ctx.stripe is None:
        return known
    subscription_id = ctx.object["id"]
    return sum(
        len(
            ctx.stripe.get(
                "/v1/invoices",
                {"subscription": subscription_id, "status": status, "limit": 100},
                account=ctx.account,
            ).get("data")
            or []
        )
        for status in UNPAID_STATUSES
    )


def record_subscription_end(ctx: HandlerContext) -> None:
    subscription = ctx.object
    subscription_id = required(subscription, "id", str)
    unpaid = ctx.fetched
    if unpaid is None:
        # No payload hint and no API key: our own records of its invoices are the best we have.
        unpaid = len(
            ctx.session.execute(
                select(Invoice.id).where(
                    Invoice.subscription_id == subscription_id, Invoice.status.in_(UNPAID_STATUSES)
                )
            ).all()
        )
    rule, ends_at = access_end(subscription, unpaid)
    stripe_customer = object_id(subscription.get("customer"))
    link = ctx.session.get(CustomerStripeId, stripe_customer) if stripe_customer else None
    email = (
        link.email
        if link
        else ctx.session.execute(
            select(Invoice.customer_email).where(
                Invoice.subscription_id == subscription_id, Invoice.customer_email.is_not(None)
            )
        )
        .scalars()
        .first()
    )
    upsert_newer(
        ctx.session,
        SubscriptionEnd,
        {
            "subscription_id": subscription_id,
            "customer_email": email,
            "stripe_customer_id": stripe_customer,
            "canceled_at": from_unix(subscription.get("canceled_at")),
            "access_ends_at": ends_at,
            "rule": rule,
            "unpaid_invoices": unpaid,
            "version": ctx.version,
            "updated_at": utcnow(),
        },
    )
    if email:
        when = ends_at.strftime("%Y-%m-%d %H:%M UTC") if ends_at else "unknown"
        why = (
            f"{unpaid} unpaid invoice(s): access ends at once"
            if unpaid
            else "access runs to the end of the paid period"
        )
        text = f"Subscription {subscription_id} cancelled; {why} ({when})."
        insert = dialect_insert(ctx.session)(CustomerNote.__table__).values(
            key=f"subscription_end:{subscription_id}",
            email=email,
            kind="subscription_end",
            text=text,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        ctx.session.execute(
            insert.on_conflict_do_update(
                index_elements=["key"],
                set_={"text": insert.excluded.text, "updated_at": insert.excluded.updated_at},
            )
        )

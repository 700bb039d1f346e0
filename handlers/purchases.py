"""Funnel purchases (`funnel.purchase.*` events from the ClickFunnels webhook, and CSV imports)."""

from __future__ import annotations

from sqlmodel import Session

from handlers.context import HandlerContext, UnprocessableEvent
from handlers.customers import refresh_customers
from handlers.funnel import FunnelPayloadError, purchase_rows
from models import FunnelPurchase, upsert_many
from models.types import utcnow

# A later webhook or import may lack what an earlier one had (a charge id, a subscription id).
PURCHASE_FILL_ONLY = (
    "customer_email",
    "customer_name",
    "stripe_plan",
    "subscription_id",
    "charge_id",
    "installments_total",
    "purchased_at",
    "status",
)


def store_purchases(session: Session, rows: list[dict]) -> None:
    """Upsert purchase rows, newest `updated_at` winning."""
    now = utcnow()
    upsert_many(
        session,
        FunnelPurchase,
        [{**row, "updated_at": now} for row in rows],
        keep_on_update=("origin",),
        fill_only=PURCHASE_FILL_ONLY,
    )


def record_funnel_purchase(ctx: HandlerContext) -> None:
    try:
        rows = purchase_rows(ctx.object)
    except FunnelPayloadError as exc:
        raise UnprocessableEvent(str(exc)) from exc
    store_purchases(ctx.session, rows)
    emails = {row["customer_email"] for row in rows if row["customer_email"]}
    ctx.new_alert_ids.extend(refresh_customers(ctx.session, emails))

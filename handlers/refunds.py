"""Refunds as Stripe last described them (`refund.*` and `charge.refund.updated` events)."""

from __future__ import annotations

from typing import Any

from handlers.context import HandlerContext
from handlers.customers import emails_for_refunds, refresh_customers
from handlers.fields import object_id
from handlers.ranks import REFUND_TIES
from handlers.stripe_shapes import refund_facts
from models import Refund, advisory_lock, upsert_newer
from models.types import utcnow


def record_refund(ctx: HandlerContext, refund: dict[str, Any]) -> None:
    values = refund_facts(refund, account=ctx.account, version=ctx.version, event_id=ctx.event_id)
    values["updated_at"] = utcnow()
    upsert_newer(
        ctx.session, Refund, values, fill_only=("charge", "payment_intent", "reason"), rank_on_tie=REFUND_TIES
    )


def record_refund_event(ctx: HandlerContext) -> None:
    charge = object_id(ctx.object.get("charge"))
    if charge:
        advisory_lock(ctx.session, f"charge:{charge}")  # the charge's events take turns: advisory_lock
    record_refund(ctx, ctx.object)

    emails = emails_for_refunds(ctx.session, [ctx.object])
    ctx.new_alert_ids.extend(refresh_customers(ctx.session, emails))

"""Refunds as Stripe last described them (`refund.*` and `charge.refund.updated` events)."""

from __future__ import annotations

from typing import Any

from handlers.context import HandlerContext
from handlers.fields import object_id, optional_str, required
from models import Refund, upsert_newer
from models.types import from_unix, utcnow


def record_refund(ctx: HandlerContext, refund: dict[str, Any]) -> None:
    upsert_newer(
        ctx.session,
        Refund,
        {
            "id": required(refund, "id", str),
            "account": ctx.account,
            "charge": object_id(refund.get("charge")),
            "payment_intent": object_id(refund.get("payment_intent")),
            "amount": required(refund, "amount", int),
            "currency": required(refund, "currency", str).lower(),
            "status": optional_str(refund, "status", 32),
            "reason": optional_str(refund, "reason", 64),
            "created": from_unix(refund.get("created")),
            "version": ctx.version,
            "last_event_id": ctx.event_id,
            "updated_at": utcnow(),
        },
    )


def record_refund_event(ctx: HandlerContext) -> None:
    record_refund(ctx, ctx.object)

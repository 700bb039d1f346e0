"""Charges as Stripe last described them (`charge.*` events)."""

from __future__ import annotations

from handlers.context import HandlerContext
from handlers.fields import object_id, optional_str, required
from handlers.refunds import record_refund
from models import Charge, upsert_newer
from models.types import from_unix, utcnow


def record_charge(ctx: HandlerContext) -> None:
    charge = ctx.object
    upsert_newer(
        ctx.session,
        Charge,
        {
            "id": required(charge, "id", str),
            "account": ctx.account,
            "amount": required(charge, "amount", int),
            "amount_refunded": charge.get("amount_refunded") or 0,
            "currency": required(charge, "currency", str).lower(),
            "status": required(charge, "status", str),
            "paid": bool(charge.get("paid")),
            "refunded": bool(charge.get("refunded")),
            "customer": object_id(charge.get("customer")),
            "payment_intent": object_id(charge.get("payment_intent")),
            "description": optional_str(charge, "description", 1000),
            "livemode": bool(charge.get("livemode")),
            "created": from_unix(charge.get("created")),
            "version": ctx.version,
            "last_event_id": ctx.event_id,
            "updated_at": utcnow(),
        },
    )
    # Before API version 2022-11-15 `charge.refunded` carries its refunds inline; record them too.
    refunds = charge.get("refunds")
    if isinstance(refunds, dict):
        for refund in refunds.get("data") or []:
            if isinstance(refund, dict):
                record_refund(ctx, refund)

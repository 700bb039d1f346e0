"""The dispatch table: which function applies which Stripe event type.

Types not listed here are stored as `ignored` and answered 200, so Stripe stops retrying them; they
stay in the event log and can be replayed once a handler exists.
"""

from __future__ import annotations

from collections.abc import Callable

from handlers.context import HandlerContext, UnprocessableEvent
from handlers.payments import record_charge
from handlers.refunds import record_refund_event

Handler = Callable[[HandlerContext], None]

DISPATCH: dict[str, Handler] = {
    "charge.succeeded": record_charge,
    "charge.updated": record_charge,
    "charge.captured": record_charge,
    "charge.failed": record_charge,
    "charge.refunded": record_charge,
    "charge.refund.updated": record_refund_event,
    "refund.created": record_refund_event,
    "refund.updated": record_refund_event,
    "refund.failed": record_refund_event,
}


def handler_for(event_type: str) -> Handler | None:
    return DISPATCH.get(event_type)


__all__ = ["DISPATCH", "Handler", "HandlerContext", "UnprocessableEvent", "handler_for"]

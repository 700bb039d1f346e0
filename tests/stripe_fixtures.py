"""Building Stripe-shaped events and signing them the way Stripe does, for tests, the benchmark and demos."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from worker.receiver.signature import sign

TEST_SECRET = "whsec_test_" + "a1b2c3d4" * 4
_counter = itertools.count(1)


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    api_version: str = "2024-06-20",
    account: str | None = None,
) -> dict[str, Any]:
    document = {
        "id": event_id or f"evt_test{next(_counter):08d}",
        "object": "event",
        "api_version": api_version,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    if account:
        document["account"] = account
    return document


def charge(
    charge_id: str = "ch_test1", *, amount: int = 5000, currency: str = "usd", **fields: Any
) -> dict[str, Any]:
    obj = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": 0,
        "currency": currency,
        "customer": "cus_test1",
        "description": "Online course",
        "paid": True,
        "refunded": False,
        "status": "succeeded",
        "payment_intent": "pi_" + charge_id.removeprefix("ch_"),
        "livemode": False,
        "created": 1_763_000_000,
    }
    obj.update(fields)
    return obj


def refund(
    refund_id: str = "re_test1", *, charge_id: str = "ch_test1", amount: int = 5000, **fields: Any
) -> dict[str, Any]:
    obj = {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "charge": charge_id,
        "currency": "usd",
        "payment_intent": "pi_" + charge_id.removeprefix("ch_"),
        "reason": "duplicate",
        "status": "succeeded",
        "created": 1_763_000_500,
    }
    obj.update(fields)
    return obj


def signed(
    document: dict[str, Any], secret: str = TEST_SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Stripe would send for `document`."""
    body = json.dumps(document).encode()
    return body, {"Stripe-Signature": sign(body, secret, timestamp), "Content-Type": "application/json"}

"""The funnel's (ClickFunnels 1.0) records of the month's orders: purchase webhooks and SALES CSV exports.

Shapes follow the payloads in tests/data (funnel_*.json, sales_export_en.csv). The funnel records only an
order's first payment, and names it by a `ch_`, by its `pi_`, or not at all (a plan or subscription paid
at checkout may carry only its `subscription_id`).
"""

from __future__ import annotations

import copy
import csv
import io
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from stripe_standin.months_facts import DAY, HORIZON, HOUR, PURCHASE_DAYS, START, PurchaseFact

FUNNEL_ID = 9_876_543
BILLING_INTEGRATION = "stripe_account-49012"
CSV_HEADER = ("Order ID", "Customer Email", "Customer Name", "Product", "Price", "Currency", "Created At",
              "Stripe Charge ID", "Subscription ID", "Status", "Funnel")  # fmt: skip
# The funnel's clock (US Eastern in November), a Japanese seller's, and UTC.
ZONES = (timezone(timedelta(hours=-5)), timezone(timedelta(hours=9)), UTC)
NEVER = 50_000_000


def _reference(purchase: PurchaseFact, rng: random.Random, weights: dict[str, float]) -> str | None:
    """Which id the record names the first payment by: its charge, its PaymentIntent, or none."""
    charge = purchase.first_charge
    if charge.payment_intent is None:
        return charge.id  # a legacy charge has no PaymentIntent to name
    if purchase.product.kind == "one_time":
        weights = {k: v for k, v in weights.items() if k != "none"}  # only a subscription can stand in
    choice = rng.choices(list(weights), weights=list(weights.values()))[0]
    return {"ch": charge.id, "pi": charge.payment_intent, "none": None}[choice]


def _stamp(when: int, zone: timezone, *, millis: bool = True) -> str:
    return datetime.fromtimestamp(when, zone).isoformat(timespec="milliseconds" if millis else "seconds")


def webhook_body(purchase: PurchaseFact, rng: random.Random) -> dict[str, Any]:
    """`{"event": "created", "purchase": {...}}`, or now and then the flat form with an `event` key."""
    product, person = purchase.product, purchase.person
    zone = rng.choice(ZONES)
    created_at = _stamp(purchase.created, zone)
    currency = product.currency.upper() if rng.random() < 0.85 else product.currency
    cents: int | str = product.amount if rng.random() < 0.9 else str(product.amount)
    plan = product.plan_id if product.plan_id else rng.choice((None, ""))
    funnel_product = {
        "id": product.funnel_id,
        "name": product.name,
        "stripe_plan": plan,
        "amount": {"cents": cents, "currency_iso": currency},
        "amount_currency": product.currency.upper(),
        "created_at": _stamp(START - 300 * DAY, zone),
        "updated_at": _stamp(START - 30 * DAY, zone),
        "subject": "Thanks for your purchase",
        "thumbnail": None,
        "upsell": False,
        "bump": False,
        "stripe_cancel_after_payments": product.cancel_after_field,
        "braintree_cancel_after_payments": None,
        "billing_integration": BILLING_INTEGRATION,
        "infusionsoft_product_id": None,
    }
    body = {
        "id": purchase.order_id,
        "products": [funnel_product],
        "member_id": None,
        "contact": {
            "id": 600_000 + sum(map(ord, person.email)) * 7 % 99_991,
            "page_id": 1_029_384,
            "first_name": person.first,
            "last_name": person.last,
            "name": person.name,
            "address": "",
            "city": "",
            "country": "JP" if product.currency == "jpy" else "US",
            "email": purchase.typed_email,
            "phone": "",
            "ip": f"203.0.113.{rng.randint(1, 254)}",
            "created_at": _stamp(purchase.created - 120, zone),
            "updated_at": created_at,
        },
        "funnel_id": FUNNEL_ID,
        "stripe_customer_token": rng.choice(("tok_", "pm_")) + "1" + str(purchase.order_id) + "QxYz",
        "created_at": created_at,
        "updated_at": _stamp(purchase.created + 5, zone),
        "subscription_id": purchase.subscription.id if purchase.subscription else None,
        "charge_id": _reference(purchase, rng, {"ch": 0.3, "pi": 0.35, "none": 0.35}),
        "ctransreceipt": None,
        "status": "paid",
        "fulfillment_status": None,
        "fulfillment_id": None,
        "fulfillments": {},
        "payments_count": 1,
        "infusionsoft_ccid": None,
        "oap_customer_id": None,
        "payment_instrument_type": "",
        "original_amount_cents": product.amount,
        "original_amount": {"cents": product.amount, "currency_iso": currency},
        "original_amount_currency": product.currency.upper(),
        "manual": False,
        "error_message": None,
        "nmi_customer_vault_id": None,
    }
    if body["charge_id"] is None and rng.random() < 0.5:
        del body["charge_id"]  # seen both ways: null, or no key at all
    if rng.random() < 0.15:
        body["id"] = str(purchase.order_id)
        return {"event": "created", **body}
    return {"event": "created", "purchase": body}


def _price(amount: int, currency: str, rng: random.Random) -> str:
    """The price in major units, written the ways exports write it."""
    if currency == "jpy":
        text = f"{amount:,}" if rng.random() < 0.6 else str(amount)
        return ("¥" + text) if rng.random() < 0.5 else text
    text = f"{amount / 100:,.2f}"
    symbol = {"usd": "$", "eur": "€"}.get(currency, "")
    return (symbol + text) if rng.random() < 0.6 else text


def sales_export(purchases: list[PurchaseFact], rng: random.Random) -> str:
    """One SALES CSV export; its date and currency styles are the same on every row, as in a real export."""
    zone = rng.choice(ZONES)
    plain_dates = rng.random() < 0.4
    upper_currency = rng.random() < 0.7
    rows = sorted(purchases, key=lambda p: p.created, reverse=rng.random() < 0.5)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for purchase in rows:
        product = purchase.product
        when = datetime.fromtimestamp(purchase.created, zone)
        writer.writerow(
            (
                purchase.order_id,
                purchase.typed_email.strip(),
                purchase.person.name,
                product.name,
                _price(product.amount, product.currency, rng),
                product.currency.upper() if upper_currency else product.currency,
                when.strftime("%Y-%m-%d %H:%M:%S") if plain_dates else when.isoformat(timespec="seconds"),
                _reference(purchase, rng, {"ch": 0.25, "pi": 0.35, "none": 0.4}) or "",
                purchase.subscription.id if purchase.subscription else "",
                rng.choice(("Paid", "paid")),
                rng.choice(("Launch", "Evergreen", "Webinar")),
            )
        )
    return out.getvalue()


def funnel_deliveries(
    purchases: list[PurchaseFact], seed: int
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """(arrival time, webhook body) for every purchase the funnel posts, some twice; and (export time,
    CSV text) for one export after the sales period, and often an earlier one that overlaps it."""
    rng = random.Random(f"stripe-standin-months-funnel-{seed}")
    webhooks = []
    for purchase in purchases:
        if purchase.channel not in ("webhook", "both"):
            continue
        body = webhook_body(purchase, rng)
        arrival = purchase.created + rng.randint(2, 90)
        webhooks.append((arrival, body))
        if rng.random() < 0.05:
            webhooks.append((arrival + rng.randint(30, 600), copy.deepcopy(body)))
    exported = [p for p in purchases if p.channel in ("csv", "both")]
    export_times = [HORIZON + rng.randint(HOUR, 20 * HOUR)]
    if rng.random() < 0.6:
        export_times.insert(0, START + rng.randint(25, PURCHASE_DAYS - 20) * DAY + rng.randint(0, DAY))
    exports = [(at, sales_export([p for p in exported if p.created < at], rng)) for at in export_times]
    return webhooks, exports

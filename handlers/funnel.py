"""ClickFunnels 1.0 purchase webhooks read into `FunnelPurchase` rows: plain data in, plain data out.

The payload is not signed and its shape varies between funnels, so everything is checked here and a
body that cannot be recorded exactly is refused with a `FunnelPayloadError` the seller can read.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

from handlers.money import MAX_MINOR, normalise_currency

MAX_PRODUCTS = 50
UNNAMED_PRODUCT = "(unnamed product)"
# ClickFunnels stores "never cancel" as a huge payment count (e.g. 50000000); a real plan is short.
MAX_INSTALLMENTS = 999
ORIGINS = ("webhook", "import")

_CENTS_TEXT = re.compile(r"[0-9]{1,15}(\.0+)?")
_COUNT_TEXT = re.compile(r"[0-9]{1,15}")
_LINE_BREAKS = re.compile(r"\s*(\r\n|\r|\n)\s*")


class FunnelPayloadError(ValueError):
    """A purchase body that cannot be recorded as it is; redelivering it will not help."""


# The ASCII characters for which str.isspace() is true or whose category is Cc: all of 0x00-0x20, and DEL.
# Checked per character with unicodedata this was a tenth of storing a nightly run's charges.
_ASCII_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def normalise_email(value: object) -> str | None:
    """The address people are matched by (trimmed, lower case), or None if it is not an address.

    Full-width characters typed on Japanese keyboards ("ｔａｒｏ＠…") are folded to ASCII first.
    """
    if not isinstance(value, str):
        return None
    if value.isascii():  # most addresses: NFKC changes nothing, and one regex finds what is refused
        email = value.strip().lower()
        if _ASCII_SPACE_OR_CONTROL.search(email):
            return None
    else:
        email = unicodedata.normalize("NFKC", value).strip().lower()
        if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in email):
            return None
    if not email or len(email) > 320 or email.count("@") != 1:
        return None
    local, domain = email.split("@")
    labels = domain.split(".")
    if not local or len(labels) < 2 or not all(labels):
        return None
    return email


def clean_text(value: object, max_length: int) -> str | None:
    """Free text as stored: trimmed, cut to the column's length, control characters but tab removed.

    A line break becomes a space, so "Course<newline>(second run)" does not run its words together.
    Anything else, SQL-looking text or unusual unicode included, is data and is kept as it came.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int) and value.bit_length() > 64:
        return None
    text = _LINE_BREAKS.sub(" ", str(value))
    text = "".join(ch for ch in text if ch == "\t" or unicodedata.category(ch) != "Cc").strip()
    return text[:max_length] or None


def stripe_id(value: object, prefixes: tuple[str, ...]) -> str | None:
    """A Stripe id with one of `prefixes`; other gateways' ids in the same field are dropped."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith(prefixes) and len(value) <= 255 and value.isprintable() and " " not in value:
            return value
    return None


def parse_timestamp(value: object) -> datetime | None:
    """An ISO 8601 time (offset, "Z" or none, read as UTC) as an aware UTC datetime; None if unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.upper().endswith(" UTC"):
        text = text[:-4]
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def purchase_rows(payload: Any, *, origin: str = "webhook") -> list[dict[str, Any]]:
    """One `FunnelPurchase` row (as a dict of its columns) per product of a purchase webhook body."""
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}")
    purchase = _unwrap(payload)
    purchase_id = _purchase_id(purchase.get("id"))
    products = purchase.get("products")
    if products is None:
        products = []
    if not isinstance(products, list):
        raise FunnelPayloadError(f"purchase {purchase_id}: 'products' is not a list")
    if len(products) > MAX_PRODUCTS:
        raise FunnelPayloadError(
            f"purchase {purchase_id}: {len(products)} products; at most {MAX_PRODUCTS} are accepted"
        )

    created = parse_timestamp(purchase.get("created_at"))
    updated = parse_timestamp(purchase.get("updated_at")) or created
    subscription_id = stripe_id(purchase.get("subscription_id"), ("sub_",))
    common = {
        "purchase_id": purchase_id,
        "customer_email": _email(purchase),
        "customer_name": _customer_name(purchase.get("contact")),
        "subscription_id": subscription_id,
        "charge_id": stripe_id(purchase.get("charge_id"), ("pi_", "ch_")),
        "status": (clean_text(purchase.get("status"), 64) or "").lower() or None,
        "purchased_at": created,
        "origin": origin,
        "version": max(0, int(updated.timestamp())) if updated else 0,
    }
    original = purchase.get("original_amount")

    if not products:
        # The money was taken even if the funnel sent no product list; refusing the body would drop a
        # real sale from the seller's view, while its charge, subscription and email still let it be
        # matched to Stripe. So it is kept under a placeholder name, priced by `original_amount`.
        amount, currency = _money(original, None, f"purchase {purchase_id}: original_amount")
        return [
            {
                **common,
                "product_key": UNNAMED_PRODUCT,
                "product_name": UNNAMED_PRODUCT,
                "amount": amount,
                "currency": currency,
                "stripe_plan": None,
                "installments_total": None,
                "is_subscription": subscription_id is not None,
            }
        ]

    original_currency = original.get("currency_iso") if isinstance(original, dict) else None
    fallback_currency = normalise_currency(original_currency)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for position, product in enumerate(products, start=1):
        where = f"purchase {purchase_id}: product {position}"
        row = {**common, **_product(product, where, fallback_currency)}
        # The same product twice in one order (an order bump of the main product) is two sales: keep
        # both rows apart, stably, instead of letting one overwrite the other.
        key = row["product_key"]
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            row["product_key"] = f"{key[:250]}#{seen[key]}"
        rows.append(row)
    return rows


def funnel_event_id(payload_bytes: bytes) -> str:
    """An event-log id from the raw body, so a byte-identical redelivery is recognised as a duplicate."""
    return "cfevt_" + hashlib.sha256(bytes(payload_bytes)).hexdigest()[:32]


def funnel_event_type(payload: Any) -> str:
    """`funnel.purchase.<event>` ("created", "updated", ...); "updated" when the body names none."""
    event = payload.get("event") if isinstance(payload, dict) else None
    name = re.sub(r"[^a-z0-9_]+", "_", event.lower()).strip("_")[:40] if isinstance(event, str) else ""
    # A closed set: the body is unsigned, and event types become metric labels and log fields.
    if name not in KNOWN_FUNNEL_EVENTS:
        name = "other" if name else "updated"
    return f"funnel.purchase.{name}"


KNOWN_FUNNEL_EVENTS = frozenset(
    {"created", "updated", "deleted", "paid", "refunded", "canceled", "cancelled"}
)


def _unwrap(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise FunnelPayloadError("the body is not a JSON object")
    if "purchase" not in payload:
        return payload
    if not isinstance(payload["purchase"], dict):
        raise FunnelPayloadError("'purchase' is not an object")
    return payload["purchase"]


def _purchase_id(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else clean_text(value, 255) or ""
    if not text:
        raise FunnelPayloadError("the purchase has no id")
    # Cutting an id short could merge two purchases into one row, so an over-long one is refused.
    if len(text) > 255 or not text.isprintable():
        raise FunnelPayloadError("the purchase id is malformed")
    return text


def _product(product: Any, where: str, fallback_currency: str | None) -> dict[str, Any]:
    if not isinstance(product, dict):
        raise FunnelPayloadError(f"{where} is not an object")
    product_id = clean_text(product.get("id"), 255)
    name = clean_text(product.get("name"), 500)
    if name is None and product_id is None:
        raise FunnelPayloadError(f"{where} has neither a name nor an id")
    amount, currency = _money(product.get("amount"), fallback_currency, f"{where} amount")
    stripe_plan = clean_text(product.get("stripe_plan"), 255)
    installments = _count(product.get("stripe_cancel_after_payments"))
    return {
        "product_key": product_id or name[:255],
        "product_name": name or UNNAMED_PRODUCT,
        "amount": amount,
        "currency": currency,
        "stripe_plan": stripe_plan,
        # Payment plans and subscriptions are both Stripe subscriptions; only a plan has a short count.
        "installments_total": installments if stripe_plan and installments is not None else None,
        "is_subscription": stripe_plan is not None,
    }


def _money(value: Any, fallback_currency: str | None, where: str) -> tuple[int, str]:
    if not isinstance(value, dict):
        raise FunnelPayloadError(f"{where} is missing")
    if value.get("cents") is None:
        raise FunnelPayloadError(f"{where} has no cents")
    cents = _cents(value["cents"])
    if cents is None:
        raise FunnelPayloadError(
            f"{where} {_shown(value['cents'])} is not a whole, non-negative number of cents"
        )
    if "currency_iso" in value and value["currency_iso"] is not None:
        # A currency that is present but unreadable is refused rather than replaced: it would be a guess.
        currency = normalise_currency(value["currency_iso"])
    else:
        currency = fallback_currency
    if currency is None:
        raise FunnelPayloadError(f"{where} has no valid currency")
    return cents, currency


def _cents(value: Any) -> int | None:
    """Cents as ClickFunnels sends them: 1999, 1999.0 or "1999"; None for anything inexact or out of range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip()
        value = int(text.split(".")[0]) if _CENTS_TEXT.fullmatch(text) else None
    if isinstance(value, int) and 0 <= value <= MAX_MINOR:
        return value
    return None


def _shown(value: Any) -> str:
    """A bad value as quoted in a message, short whatever was sent."""
    if isinstance(value, int) and value.bit_length() > 64:
        return "(a huge number)"
    return repr(value[:40]) if isinstance(value, str) else repr(value)[:40]


def _count(value: Any) -> int | None:
    """A plan's payment count N when 1 <= N <= MAX_INSTALLMENTS; None for "never" and for junk."""
    if isinstance(value, str) and _COUNT_TEXT.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INSTALLMENTS:
        return value
    return None


def _email(purchase: dict[str, Any]) -> str | None:
    contact = purchase.get("contact")
    if isinstance(contact, dict) and (email := normalise_email(contact.get("email"))):
        return email
    return normalise_email(purchase.get("email"))


def _customer_name(contact: Any) -> str | None:
    if not isinstance(contact, dict):
        return None
    parts = [clean_text(contact.get(key), 500) for key in ("first_name", "last_name")]
    name = " ".join(part for part in parts if part) or clean_text(contact.get("name"), 500)
    return name[:500] if name else None

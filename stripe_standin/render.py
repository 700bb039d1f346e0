"""Objects as a given API version shows them: the one place that knows the shapes before 2025-03-31.

The store holds the newest (2025-03-31.basil and later) shape. A request whose `Stripe-Version` is older
sees what Stripe showed then:
- charge.invoice, payment_intent.invoice (basil reads these from invoice_payments instead);
- invoice.subscription, invoice.subscription_details, invoice.charge, invoice.payment_intent, invoice.paid
  (basil: invoice.parent.subscription_details.subscription, invoice_payments, invoice.status);
- invoice lines' `subscription` (basil: lines.data[].parent.subscription_item_details.subscription);
- subscription.current_period_start/end (basil: on each subscription item);
- before 2022-11-15, charge.refunds listed by default (later only when expanded).
An event's `data.object` is shown in the event's own `api_version` (as Stripe renders an event once, for
the webhook endpoint's version), whatever version the caller asks in. An event stored with `FROZEN` set
already holds `data.object` rendered at the event's time, and is served as it is: rendering it again from
today's objects would show later links (an invoice's newer charge, a charge's later refunds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripe_standin.shapes import complete, subscription_of

if TYPE_CHECKING:
    from stripe_standin.store import Store

LATEST = "2026-10-28.endive"
BASIL = "2025-03-31"
CHARGE_REFUNDS_DROPPED = "2022-11-15"
FROZEN = "_standin_frozen"  # a stored event's marker: its data.object is already in its api_version


def _date(version: str) -> str:
    return version[:10]


def is_pre_basil(version: str) -> bool:
    return _date(version) < BASIL


def render(stored: dict[str, Any], version: str, store: Store) -> dict[str, Any]:
    """A new dict: `stored` completed with Stripe's default fields, in the shape of `version`."""
    obj = complete(stored)
    kind = obj.get("object")
    if kind == "event":
        return _event(obj, version, store)
    if is_pre_basil(version):
        legacy = _LEGACY.get(kind)
        if legacy is not None:
            legacy(obj, store)
    if kind == "charge" and _date(version) < CHARGE_REFUNDS_DROPPED:
        obj["refunds"] = refunds_list(obj["id"], store)
    return obj


def refunds_list(charge_id: str, store: Store, limit: int = 10) -> dict[str, Any]:
    """`charge.refunds` as Stripe embeds it: the newest refunds and whether there are more."""
    refunds, has_more = store.list("refunds", where={"charge": charge_id}, limit=limit)
    return {
        "object": "list",
        "data": [complete(refund) for refund in refunds],
        "has_more": has_more,
        "url": f"/v1/charges/{charge_id}/refunds",
    }


def _event(event: dict[str, Any], version: str, store: Store) -> dict[str, Any]:
    if event.pop(FROZEN, False):
        return event
    event_version = event.get("api_version") or version
    event["api_version"] = event_version
    data = dict(event.get("data") or {})
    if isinstance(data.get("object"), dict):
        data["object"] = render(data["object"], event_version, store)
    event["data"] = data
    return event


def _invoice_of_payment_intent(payment_intent: str | None, store: Store) -> str | None:
    if not payment_intent:
        return None
    payments, _ = store.list("invoice_payments", where={"payment_intent": payment_intent}, limit=1)
    return payments[0]["invoice"] if payments else None


def _payment_intent_of_invoice(invoice_id: str, store: Store) -> str | None:
    """The invoice's default payment (as `invoice.payment_intent` was), else its newest paid one."""
    payments, _ = store.list("invoice_payments", where={"invoice": invoice_id}, limit=100)
    chosen = next((p for p in payments if p.get("is_default", True)), None)
    chosen = chosen or next((p for p in payments if p.get("status", "paid") == "paid"), None)
    return (chosen.get("payment") or {}).get("payment_intent") if chosen else None


def _charge_of_payment_intent(payment_intent: str | None, store: Store) -> str | None:
    if not payment_intent:
        return None
    intent = store.get("payment_intents", payment_intent)
    if intent and intent.get("latest_charge"):
        return intent["latest_charge"]
    charges, _ = store.list("charges", where={"payment_intent": payment_intent}, limit=1)
    return charges[0]["id"] if charges else None


def _charge(obj: dict[str, Any], store: Store) -> None:
    obj["invoice"] = _invoice_of_payment_intent(obj.get("payment_intent"), store)


def _payment_intent(obj: dict[str, Any], store: Store) -> None:
    obj["invoice"] = _invoice_of_payment_intent(obj["id"], store)


def _invoice(obj: dict[str, Any], store: Store) -> None:
    subscription = subscription_of(obj)
    parent = obj.pop("parent", None) or {}
    details = parent.get("subscription_details") or {}
    obj["subscription"] = subscription
    obj["subscription_details"] = {"metadata": details.get("metadata")}
    obj["quote"] = (parent.get("quote_details") or {}).get("quote")
    obj["payment_intent"] = _payment_intent_of_invoice(obj["id"], store)
    obj["charge"] = _charge_of_payment_intent(obj["payment_intent"], store)
    obj["paid"] = obj["status"] == "paid"
    obj["paid_out_of_band"] = False
    obj["discount"] = None
    obj["tax"] = None
    obj["total_tax_amounts"] = []
    obj.pop("amount_overpaid", None)
    obj.pop("total_taxes", None)
    lines = obj.get("lines")
    if isinstance(lines, dict):
        obj["lines"] = {**lines, "data": [_legacy_line(line) for line in lines.get("data", [])]}


def _legacy_line(line: dict[str, Any]) -> dict[str, Any]:
    line = dict(line)
    parent = line.pop("parent", None) or {}
    item = parent.get("subscription_item_details") or {}
    line["subscription"] = item.get("subscription")
    line["subscription_item"] = item.get("subscription_item")
    line["proration"] = bool(item.get("proration", False))
    line["type"] = "subscription" if item.get("subscription") else "invoiceitem"
    line.pop("pricing", None)
    line.pop("taxes", None)
    line["tax_amounts"] = []
    return line


def _subscription(obj: dict[str, Any], store: Store) -> None:
    items = obj.get("items") or {}
    data = items.get("data") or []
    first = data[0] if data else {}
    obj["current_period_start"] = first.get("current_period_start", obj.get("start_date"))
    obj["current_period_end"] = first.get("current_period_end")
    obj["discount"] = None
    obj.pop("billing_mode", None)
    legacy_items = []
    for item in data:
        item = dict(item)
        item.pop("current_period_start", None)
        item.pop("current_period_end", None)
        legacy_items.append(item)
    if items:
        obj["items"] = {**items, "data": legacy_items}


_LEGACY = {
    "charge": _charge,
    "invoice": _invoice,
    "payment_intent": _payment_intent,
    "subscription": _subscription,
}

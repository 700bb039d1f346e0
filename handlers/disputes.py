"""Chargebacks (`charge.dispute.created`): raised as an alert at once, keyed by the dispute id."""

from __future__ import annotations

from datetime import UTC, datetime

from handlers.access_alerts import AlertDraft
from handlers.context import HandlerContext
from handlers.customers import emails_for_charges, raise_alert
from handlers.fields import object_id, required
from handlers.money import format_amount
from models import Charge


def record_dispute(ctx: HandlerContext) -> None:
    dispute = ctx.object
    dispute_id = required(dispute, "id", str)
    charge_id = object_id(dispute.get("charge"))
    amount, currency = dispute.get("amount"), (dispute.get("currency") or "").lower() or None
    charge = ctx.session.get(Charge, charge_id) if charge_id else None
    emails = sorted(emails_for_charges(ctx.session, [charge_id])) if charge_id else []
    due = (dispute.get("evidence_details") or {}).get("due_by")
    due_text = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%d") if isinstance(due, int) else "see Stripe"
    shown = format_amount(amount, currency) if isinstance(amount, int) and currency else "an unknown amount"
    reason = (dispute.get("reason") or "no reason").replace("_", " ")
    message = (
        f"{emails[0] if emails else 'A customer'} opened a chargeback ({reason}) "
        f"for {shown} on charge {charge_id}. Submit evidence in the Stripe dashboard by {due_text}; "
        "do not refund the disputed charge as well (a refund does not close a dispute)."
    )
    draft = AlertDraft(
        key=f"dispute:{dispute_id}",
        kind="dispute",
        customer_email=emails[0] if emails else None,
        product=charge.description if charge else None,
        refund_id=None,
        charge_id=charge_id,
        kept_charge_id=None,
        amount=amount if isinstance(amount, int) else None,
        currency=currency,
        message=message,
    )
    alert_id = raise_alert(ctx.session, draft)
    if alert_id is not None:
        ctx.new_alert_ids.append(alert_id)

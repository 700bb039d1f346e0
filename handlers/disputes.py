"""Disputes (`charge.dispute.created`, `.updated`, `.closed`, `.funds_withdrawn`, `.funds_reinstated`).

The dispute is stored as its newest event describes it, and its one alert (keyed by the dispute id) is
raised or updated from the customer's record, so the alert names the customer, the product and the
installment, and says what the current status means. A lost dispute marks the sale `dispute_lost` in
the sales view; a won one returns it to `paid`.
"""

from __future__ import annotations

from typing import Any

from handlers.context import FetchContext, HandlerContext
from handlers.customers import emails_for_charges, raise_alert, refresh_customers
from handlers.dispute_alerts import dispute_alert
from handlers.fields import object_id, required
from handlers.payments import upsert_charge
from handlers.sales_rows import store_unowned_rows
from handlers.stripe_shapes import dispute_facts
from models import Charge, Dispute, advisory_lock, upsert_newer
from models.types import utcnow


def fetch_disputed_charge(ctx: FetchContext) -> dict[str, Any] | None:
    """The disputed charge (with its customer, for the email) when no event has stored it yet."""
    charge_id = object_id(ctx.object.get("charge"))
    if isinstance(ctx.object.get("charge"), dict):
        return ctx.object["charge"]
    if ctx.stripe is None or not charge_id:
        return None
    with ctx.session_factory() as session:
        if session.get(Charge, charge_id) is not None:
            return None
    return ctx.stripe.get_optional(f"/v1/charges/{charge_id}", {"expand": ["customer"]}, account=ctx.account)


def record_dispute(ctx: HandlerContext) -> None:
    dispute = ctx.object
    required(dispute, "id", str)
    charge_id = object_id(dispute.get("charge"))
    if charge_id:
        advisory_lock(ctx.session, f"charge:{charge_id}")  # the charge's events take turns
    values = dispute_facts(dispute, account=ctx.account, version=ctx.version)
    values["updated_at"] = utcnow()
    upsert_newer(ctx.session, Dispute, values)
    if isinstance(ctx.fetched, dict):
        upsert_charge(ctx, ctx.fetched)

    emails = emails_for_charges(ctx.session, [charge_id]) if charge_id else set()
    if emails:
        ctx.new_alert_ids.extend(refresh_customers(ctx.session, emails))
        return
    # Nobody to put it on yet: raise it as it stands; the charge's arrival completes it in place.
    store_unowned_rows(ctx.session)  # the disputed payment's row in the dashboard's sales rows
    stored = ctx.session.get(Dispute, values["id"])
    charge = ctx.session.get(Charge, charge_id) if charge_id else None
    alert_id = raise_alert(
        ctx.session, dispute_alert(stored, None, None, charge.description if charge else None)
    )
    if alert_id is not None:
        ctx.new_alert_ids.append(alert_id)

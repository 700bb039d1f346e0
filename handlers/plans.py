"""Payment plans and subscriptions: one row each, with how far they are paid and whether they go on.

A ClickFunnels 1.0 payment plan of N payments is a Stripe subscription the funnel cancels after the
N-th paid invoice, so a cancelled subscription is a *completed* plan when N invoices were paid, and a
cancellation otherwise. For a cancellation the platform's rule (seed articles) says when access ends:
at once when invoices are unpaid, otherwise at the end of the period already paid for.

Derived on read from stored facts (subscriptions, invoices, the sales view's rows), like the sales
view, so the order in which events arrived does not matter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handlers.sales_view import SaleRow, SalesFacts
from models.types import iso

PLAN_STATUSES = ("active", "past_due", "unpaid", "completed", "cancelled")
ENDED_STRIPE_STATUSES = frozenset({"canceled", "incomplete_expired"})
# An invoice in these states after a failed attempt is money the customer still owes (past due). At a
# cancellation any open invoice is outstanding, and one voided after failed attempts (a cancellation
# may void open invoices) was still unpaid when the subscription ended.
UNPAID_INVOICE_STATUSES = frozenset({"open", "uncollectible"})
UNPAID_AT_END_STATUSES = UNPAID_INVOICE_STATUSES | {"void"}


@dataclass
class PlanRow:
    subscription_id: str
    customer_email: str | None
    product: str | None
    funnel_purchase_id: str | None
    kind: str  # installment | subscription
    installments_paid: int
    installments_total: int | None
    failed_payments: int
    status: str  # active | past_due | unpaid | completed | cancelled
    next_payment_attempt: datetime | None
    access_ends_at: datetime | None
    canceled_at: datetime | None = None
    unpaid_invoices: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription_id,
            "customer_email": self.customer_email,
            "product": self.product,
            "funnel_purchase_id": self.funnel_purchase_id,
            "kind": self.kind,
            "installments_paid": self.installments_paid,
            "installments_total": self.installments_total,
            "failed_payments": self.failed_payments,
            "status": self.status,
            "next_payment_attempt": iso(self.next_payment_attempt),
            "access_ends_at": iso(self.access_ends_at),
        }


def build_plans(facts: SalesFacts, rows: Sequence[SaleRow]) -> list[PlanRow]:
    """One row per subscription the facts mention, from its invoices, its payments and its last state."""
    rows_of: dict[str, list[SaleRow]] = defaultdict(list)
    for row in rows:
        if row.subscription_id:
            rows_of[row.subscription_id].append(row)
    invoices_of: dict[str, list[Any]] = defaultdict(list)
    for invoice in facts.invoices:
        if invoice.subscription_id:
            invoices_of[invoice.subscription_id].append(invoice)
    state_of = {s.id: s for s in facts.subscriptions}
    purchase_of = {p.subscription_id: p for p in facts.purchases if p.subscription_id}

    plans = []
    for subscription_id in sorted(set(rows_of) | set(invoices_of) | set(state_of) | set(purchase_of)):
        plans.append(
            _plan(
                subscription_id,
                rows_of.get(subscription_id, []),
                invoices_of.get(subscription_id, []),
                state_of.get(subscription_id),
                purchase_of.get(subscription_id),
            )
        )
    return plans


def _plan(subscription_id: str, rows: list[SaleRow], invoices: list, state, purchase) -> PlanRow:
    paid_invoices = {i.id for i in invoices if i.status == "paid"}
    paid_invoices |= {r.invoice_id or f"row:{r.installment}" for r in rows if r.took_money}
    failed = [r for r in rows if r.status == "failed" and r.charge_id]
    unpaid = [i for i in invoices if i.status in UNPAID_INVOICE_STATUSES and i.attempt_count]
    unpaid_at_end = [
        i
        for i in invoices
        if i.status in UNPAID_INVOICE_STATUSES or (i.status in UNPAID_AT_END_STATUSES and i.attempt_count)
    ]
    total = purchase.installments_total if purchase is not None else None
    total = total or next((r.installments_total for r in rows if r.installments_total), None)
    kind = "installment" if total else "subscription"
    paid = len(paid_invoices)
    first_row = min(rows, key=lambda r: r.installment or 0, default=None)

    status, ends_at = _status(state, kind, paid, total, unpaid, unpaid_at_end)
    next_attempt = max((i.next_payment_attempt for i in unpaid if i.next_payment_attempt), default=None)
    return PlanRow(
        subscription_id=subscription_id,
        customer_email=(purchase.customer_email if purchase else None)
        or next((r.customer_email for r in rows if r.customer_email), None)
        or next((i.customer_email for i in invoices if i.customer_email), None),
        product=(purchase.product_name if purchase else None) or (first_row.product if first_row else None),
        funnel_purchase_id=(purchase.purchase_id if purchase else None)
        or next((r.funnel_purchase_id for r in rows if r.funnel_purchase_id), None),
        kind=kind,
        installments_paid=paid,
        installments_total=total,
        failed_payments=len(failed),
        status=status,
        next_payment_attempt=next_attempt if status in ("past_due", "unpaid", "active") else None,
        access_ends_at=ends_at,
        canceled_at=(state.ended_at or state.canceled_at) if state is not None else None,
        unpaid_invoices=len(unpaid_at_end),
    )


def _status(
    state, kind: str, paid: int, total: int | None, unpaid: list, unpaid_at_end: list
) -> tuple[str, datetime | None]:
    if state is not None and state.status in ENDED_STRIPE_STATUSES:
        if kind == "installment" and total and paid >= total:
            return "completed", None
        ended = state.ended_at or state.canceled_at
        if unpaid_at_end:
            return "cancelled", ended
        return "cancelled", state.current_period_end or ended
    if state is not None and state.status in ("past_due", "unpaid"):
        return state.status, None
    if state is None and unpaid:
        return "past_due", None
    if state is None and kind == "installment" and total and paid >= total:
        # Paid in full; the funnel's cancellation has not reached us yet.
        return "completed", None
    return "active", None


def _day(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "date unknown"


def plan_end_note(plan: PlanRow) -> str:
    """The note a completed or cancelled plan leaves on the customer's record."""
    product = f"\u201c{plan.product}\u201d" if plan.product else "a product"
    if plan.status == "completed":
        ended = (
            f"the funnel ended subscription {plan.subscription_id} ({_day(plan.canceled_at)})"
            if plan.canceled_at
            else f"the funnel has yet to end subscription {plan.subscription_id}"
        )
        return (
            f"Payment plan {product} completed: {plan.installments_paid} of {plan.installments_total} "
            f"payments made; {ended}. Access continues."
        )
    if plan.unpaid_invoices:
        why = f"{plan.unpaid_invoices} unpaid invoice(s): access ends at once ({_day(plan.access_ends_at)})"
    else:
        why = f"paid up: access runs to the end of the paid period ({_day(plan.access_ends_at)})"
    return f"Subscription {plan.subscription_id} ({product}) cancelled {_day(plan.canceled_at)}; {why}."


def load_plans(session, customer_email: str | None = None, status: str | None = None) -> list[PlanRow]:
    """The plans of one customer (or everyone's), past-due ones first, optionally of one status."""
    from handlers.sales_view import load_all_facts, load_customer_facts

    facts = load_customer_facts(session, customer_email) if customer_email else load_all_facts(session)
    plans = [plan for part in facts.by_account() for plan in build_plans(part, part.view())]
    if customer_email:
        plans = [p for p in plans if p.customer_email in (None, customer_email)]
    if status:
        plans = [p for p in plans if p.status == status]
    urgency = {"past_due": 0, "unpaid": 1, "active": 2, "cancelled": 3, "completed": 4}
    return sorted(plans, key=lambda p: (urgency[p.status], p.customer_email or "", p.subscription_id))

"""Finding a customer, their record, and staff's manual notes on it."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from sqlalchemy import func, or_, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from handlers.customers import emails_for_charges
from handlers.funnel import normalise_email
from models import Charge, Customer, CustomerNote, CustomerStripeId, FunnelPurchase, Invoice
from models.types import utcnow
from worker.dashboard import accounts
from worker.dashboard.customer_record import duplicate_window, load_record
from worker.dashboard.web import action, client_address, db_of, page, render, text_field

MAX_RESULTS = 50


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def find_customers(session, query: str) -> list[tuple[str, str | None]]:
    """(email, name) of customers matching an email, a name, or a Stripe or funnel id."""
    query = query.strip()[:320]
    if not query:
        return []
    emails: set[str] = set()
    if query.startswith(("ch_", "py_", "pi_")):
        charges = (
            session.execute(select(Charge.id).where(or_(Charge.id == query, Charge.payment_intent == query)))
            .scalars()
            .all()
        )
        emails |= emails_for_charges(session, [query, *charges])
        emails |= set(
            session.execute(
                select(Invoice.customer_email).where(
                    or_(Invoice.charge_id == query, Invoice.payment_intent_id == query)
                )
            ).scalars()
        )
    if query.startswith("cus_"):
        emails |= set(
            session.execute(
                select(CustomerStripeId.email).where(CustomerStripeId.stripe_customer_id == query)
            ).scalars()
        )
        emails |= set(
            session.execute(select(Charge.customer_email).where(Charge.customer == query)).scalars()
        )
    emails |= set(
        session.execute(
            select(FunnelPurchase.customer_email).where(
                or_(FunnelPurchase.purchase_id == query, FunnelPurchase.charge_id == query)
            )
        ).scalars()
    )
    pattern = _like(query)
    by_text = session.execute(
        select(Customer.email)
        .where(
            or_(
                Customer.email.like(pattern, escape="\\"),
                func.lower(Customer.name).like(pattern, escape="\\"),
            )
        )
        .order_by(Customer.email)
        .limit(MAX_RESULTS)
    ).scalars()
    emails |= set(by_text)
    emails |= set(
        session.execute(
            select(FunnelPurchase.customer_email)
            .where(func.lower(FunnelPurchase.customer_name).like(pattern, escape="\\"))
            .limit(MAX_RESULTS)
        ).scalars()
    )
    emails.discard(None)
    found = sorted(emails)[:MAX_RESULTS]
    names = dict(
        session.execute(select(Customer.email, Customer.name).where(Customer.email.in_(found))).all()
    )
    return [(email, names.get(email)) for email in found]


def customer_url(email: str) -> str:
    return "/app/customers/" + quote(email, safe="@")


@page("viewer")
def search(request: Request, user) -> Response:
    query = request.query_params.get("q", "").strip()
    results = []
    if query:
        with db_of(request).reading() as session:
            results = find_customers(session, query)
        if len(results) == 1:
            return RedirectResponse(customer_url(results[0][0]), status_code=303)
    return render(
        request, "customers.html", user, active="customers", q=query, results=results, url=customer_url
    )


@page("viewer")
def customer(request: Request, user) -> Response:
    email = normalise_email(request.path_params["email"]) or request.path_params["email"][:320]
    with db_of(request).reading() as session:
        record = load_record(session, email, duplicate_window())
    if not record.exists:
        return render(request, "error.html", user, status_code=404, message_key="not_found")
    return render(
        request,
        "customer.html",
        user,
        active="customers",
        record=record,
        url=customer_url(email),
        added=request.query_params.get("added") == "1",
    )


@action("staff")
def add_note(request: Request, user, form) -> Response:
    email = normalise_email(request.path_params["email"]) or ""
    text = text_field(form, "text", 4000)
    if not email or not text:
        return RedirectResponse(customer_url(email or request.path_params["email"]), status_code=303)
    now = utcnow()
    with db_of(request).session() as session:
        session.add(
            CustomerNote(
                key=f"manual:{uuid.uuid4()}",
                email=email,
                kind="manual",
                text=f"{text} ({user.email})",
                created_at=now,
                updated_at=now,
            )
        )
        accounts.audit(session, user.email, "note", email, text[:500], client_address(request))
    return RedirectResponse(customer_url(email) + "?added=1#timeline", status_code=303)


routes = [
    Route("/customers", search, methods=["GET"]),
    Route("/customers/{email}", customer, methods=["GET"]),
    Route("/customers/{email}/notes", add_note, methods=["POST"]),
]

"""The complete sales view (`sales`, `sales rebuild`), plans (`plans`) and funnel sales exports
(`import-sales`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.ops.cli import output
from worker.ops.cli.errors import ExitCode, usage
from worker.ops.cli.options import CUSTOMER_HELP, Json, boot, customer_email, database

Customer = Annotated[
    str | None, typer.Option("--customer", metavar="EMAIL", help=CUSTOMER_HELP, show_default=False)
]

SALES_COLUMNS = [
    "paid_at",
    "customer_email",
    "product",
    "amount",
    "kind",
    "installment",
    "refunded",
    "status",
    "source",
    "found_by",
    "charge_id",
]
PLAN_COLUMNS = [
    "status",
    "customer_email",
    "product",
    "kind",
    "paid",
    "failed_payments",
    "next_payment_attempt",
    "access_ends_at",
    "subscription_id",
]


class PlanStatus(StrEnum):
    active = "active"
    past_due = "past_due"
    unpaid = "unpaid"
    completed = "completed"
    cancelled = "cancelled"


sales_app = typer.Typer(
    invoke_without_command=True,
    help="The complete sales view; `sales rebuild` rebuilds the dashboard's copy of it.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(sales_app, name="sales", rich_help_panel="Sales")
    app.command("plans", rich_help_panel="Sales")(plans)
    app.command("import-sales", rich_help_panel="Sales")(import_sales)


@sales_app.callback()
def sales(
    ctx: typer.Context,
    customer: Customer = None,
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            metavar="FILE",
            help="Also write the rows to this CSV file (the --json fields).",
            show_default=False,
        ),
    ] = None,
    json_output: Json = False,
) -> None:
    """The complete sales view: every payment Stripe took, tied to its funnel purchase, with installments."""
    if ctx.invoked_subcommand is not None:
        return
    from handlers.sales_view import load_sales_view

    email = customer_email(customer)
    boot()
    with database().session() as session:
        rows = load_sales_view(session, email)
    documents = [row.as_json() for row in rows]
    if csv_file is not None:
        from worker.ops.exports import write_sales_csv

        try:
            written = write_sales_csv(csv_file, documents)
        except OSError as exc:
            raise usage(f"--csv: cannot write {csv_file} ({exc.strerror or exc})") from None
        output.message(f"wrote {written} row(s) to {csv_file}")
    if output.json_mode():
        output.emit(documents)
    elif csv_file is None:
        output.table(
            [_sales_table_row(r) for r in rows], SALES_COLUMNS, styles={"status": output.STATUS_STYLES}
        )
        for total in sales_totals(rows):
            output.line(total)


@sales_app.command("rebuild")
def rebuild(json_output: Json = False) -> None:
    """Rebuild the dashboard's copies of the sales view and plans (sales_rows, plan_rows) from every
    stored fact.

    Needed once after upgrading a database that already holds sales; customer refreshes keep both
    current from then on.
    """
    import time

    from handlers.sales_rows import rebuild_sales_rows

    boot()
    started = time.monotonic()
    with database().session() as session:
        rows = rebuild_sales_rows(session)
    seconds = round(time.monotonic() - started, 3)
    if output.json_mode():
        output.emit({"rows": rows, "seconds": seconds})
    else:
        output.line(f"rebuilt sales_rows: {rows} row(s) in {seconds:.1f}s")


def _sales_table_row(row) -> dict[str, Any]:
    from handlers.money import format_amount

    return {
        "paid_at": (row.paid_at.strftime("%Y-%m-%d %H:%M") if row.paid_at else ""),
        "customer_email": row.customer_email,
        "product": row.product,
        "amount": format_amount(row.amount, row.currency),
        "kind": row.kind,
        "installment": f"{row.installment} of {row.installments_total or '?'}"
        if row.kind == "installment"
        else (row.installment or ""),
        "refunded": format_amount(row.refunded_amount, row.currency) if row.refunded_amount else "",
        "status": row.status,
        "source": row.source,
        "found_by": row.found_by,
        "charge_id": row.charge_id or row.payment_intent_id,
    }


def sales_totals(rows) -> list[str]:
    """Per currency: gross (every payment that took money), refunded, lost to disputes, and net."""
    from handlers.money import format_amount

    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        if not row.took_money:
            continue
        total = totals.setdefault(row.currency, {"gross": 0, "refunded": 0, "dispute_lost": 0})
        total["gross"] += row.amount
        total["refunded"] += row.refunded_amount
        if row.status == "dispute_lost":
            total["dispute_lost"] += row.amount - row.refunded_amount
    lines = []
    for currency, total in sorted(totals.items()):
        net = total["gross"] - total["refunded"] - total["dispute_lost"]
        shown = {name: format_amount(value, currency) for name, value in {**total, "net": net}.items()}
        lines.append(
            f"{currency.upper()}: gross {shown['gross']}, refunded {shown['refunded']}, "
            f"lost to disputes {shown['dispute_lost']}, net {shown['net']}"
        )
    return lines


def plans(
    customer: Customer = None,
    status: Annotated[
        PlanStatus | None, typer.Option("--status", help="Only plans in this status.", show_default=False)
    ] = None,
    json_output: Json = False,
) -> None:
    """Payment plans and subscriptions: paid k of N, failed payments, status; past-due ones first."""
    from handlers.plans import load_plans

    email = customer_email(customer)
    boot()
    with database().session() as session:
        found = [p.as_json() for p in load_plans(session, email, status.value if status else None)]
    if output.json_mode():
        output.emit(found)
        return
    for plan in found:
        total = plan["installments_total"]
        plan["paid"] = f"{plan['installments_paid']} of {total}" if total else str(plan["installments_paid"])
    output.table(found, PLAN_COLUMNS, styles={"status": output.STATUS_STYLES})


def import_sales(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.csv",
            help="A funnel sales export: CSV or TSV, UTF-8 or Shift_JIS.",
            show_default=False,
        ),
    ],
    currency: Annotated[
        str | None,
        typer.Option(
            "--currency",
            metavar="CODE",
            help="Currency of rows without one (e.g. USD, JPY).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Read the file and report what would be imported; change nothing."),
    ] = False,
    json_output: Json = False,
) -> None:
    """Import a funnel sales export; importing the same file again changes nothing.

    Bad rows are reported by line and skipped, good rows imported: exit status 1 when any row was skipped.
    """
    import io

    from handlers.purchases import store_purchases
    from handlers.sales_import import decode_sales_file, read_sales_csv

    if not file.is_file():
        raise usage(f"no such file: {file}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise usage(f"cannot read {file} ({exc.strerror or exc})") from None
    try:
        result = read_sales_csv(io.StringIO(decode_sales_file(data)), default_currency=currency)
    except ValueError as exc:
        raise usage(
            f"--currency: {currency!r} is not a three-letter currency code" if currency else str(exc)
        ) from None
    boot()
    report: dict[str, Any] = {
        "file": str(file),
        "imported": 0 if dry_run else len(result.rows),
        "errors": [{"line": e.line, "message": e.message} for e in result.errors],
        "warnings": [{"line": w.line, "message": w.message} for w in result.warnings],
        "columns": result.columns,
    }
    if dry_run:
        present = _already_stored(database(), result.rows)
        report.update(
            dry_run=True,
            would_import=len(result.rows),
            new=len(result.rows) - present,
            already_present=present,
        )
    elif result.rows:
        from handlers.customers import refresh_customers

        with database().session() as session:
            store_purchases(session, result.rows)
            # An exported purchase can complete what its webhook would have: a sale's product, an
            # access alert's kept purchase. Alerts it changes are sent by the clock's delivery sweep.
            refresh_customers(session, {row["customer_email"] for row in result.rows})
    if output.json_mode():
        output.emit(report)
    else:
        for problem in result.errors:
            output.warning(f"{file}:{problem.line}: skipped: {problem.message}")
        for warning in result.warnings:
            output.message(f"{file}:{warning.line}: warning: {warning.message}")
        skipped = f"{len(result.errors)} line(s) skipped"
        if dry_run:
            output.line(
                f"would import {len(result.rows)} purchase row(s) ({report['new']} new,"
                f" {report['already_present']} already present); {skipped} (dry run; nothing changed)"
            )
        else:
            output.line(f"imported {len(result.rows)} purchase row(s); {skipped}")
    if result.errors:
        raise typer.Exit(ExitCode.PROBLEMS)


def _already_stored(db, rows: list[dict]) -> int:
    """How many of these purchase rows (purchase id and product) are stored already."""
    from sqlalchemy import tuple_
    from sqlmodel import select

    from models import FunnelPurchase

    keys = sorted({(row["purchase_id"], row["product_key"]) for row in rows})
    present = 0
    with db.session() as session:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = select(FunnelPurchase.purchase_id, FunnelPurchase.product_key).where(
                tuple_(FunnelPurchase.purchase_id, FunnelPurchase.product_key).in_(chunk)
            )
            present += len(session.exec(query).all())
    return present

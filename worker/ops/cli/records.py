"""Customer records: refund notes (`notes`) and alerts (`alerts`, `alerts ack`, `alerts resolve`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from worker.ops.cli import output
from worker.ops.cli.errors import CliError, ExitCode, usage
from worker.ops.cli.options import CUSTOMER_HELP, Json, boot, customer_email, database

ALERT_COLUMNS = ["id", "kind", "status", "created_at", "customer_email", "charge_id", "message"]
# What `alerts` lists without --status: what still needs a person.
UNRESOLVED = ("open", "acknowledged")


class AlertStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"
    all = "all"


alerts_app = typer.Typer(
    invoke_without_command=True,
    help="Alerts that need a person (open and acknowledged); `alerts ack ID --by NAME`,"
    " `alerts resolve ID --by NAME`.",
)

AlertId = Annotated[
    int, typer.Argument(metavar="ID", help="The alert's id (the ID column of `alerts`).", show_default=False)
]
By = Annotated[
    str,
    typer.Option("--by", metavar="NAME", help="Who is handling it (kept on the alert).", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.command("notes", rich_help_panel="Customers")(notes)
    app.add_typer(alerts_app, name="alerts", rich_help_panel="Customers")


def notes(
    email: Annotated[
        str | None,
        typer.Argument(
            metavar="EMAIL",
            help="The customer's email (the same as --customer; kept for old scripts).",
            show_default=False,
        ),
    ] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", metavar="EMAIL", help=CUSTOMER_HELP, show_default=False)
    ] = None,
    json_output: Json = False,
) -> None:
    """The refund history on a customer's record: one note per refund, full or partial."""
    from worker.ops import records

    if not (email or customer):
        raise usage("notes needs a customer: notes --customer EMAIL")
    address = customer_email(customer) or customer_email(email, "EMAIL")
    if email and customer and customer_email(email, "EMAIL") != address:
        raise usage(f"two different customers: {email!r} and --customer {customer!r}; give one")
    boot()
    found = records.notes_for(database(), address)
    if output.json_mode():
        output.emit(found)
    elif not found:
        output.line(f"no notes for {address}", "dim")
    else:
        ids = ", ".join(found[0]["stripe_customer_ids"]) or "none seen"
        output.line(f"{address} (Stripe customers: {ids})", "bold")
        for note in found:
            output.line(f"- {note['text']}")


@alerts_app.callback()
def alerts(
    ctx: typer.Context,
    status: Annotated[
        AlertStatus | None,
        typer.Option(
            "--status",
            help="Only alerts in this status; `all` for every alert. Default: open and acknowledged.",
            show_default=False,
        ),
    ] = None,
    json_output: Json = False,
) -> None:
    """Alerts that need a person: open and acknowledged ones (--status all for every alert)."""
    if ctx.invoked_subcommand is not None:
        return
    from worker.ops import records

    boot()
    if status is None:
        found = [a for a in records.list_alerts(database()) if a["status"] in UNRESOLVED]
    else:
        found = records.list_alerts(database(), None if status is AlertStatus.all else status.value)
    if output.json_mode():
        output.emit(found)
    else:
        output.table(found, ALERT_COLUMNS, styles={"status": output.STATUS_STYLES})


@alerts_app.command("ack")
def acknowledge(alert_id: AlertId, by: By, json_output: Json = False) -> None:
    """Say you are handling an alert (a resolved alert stays resolved)."""
    from worker.ops import records

    _act(lambda db: records.acknowledge(db, alert_id, by))


@alerts_app.command("resolve")
def resolve(
    alert_id: AlertId,
    by: By,
    note: Annotated[
        str | None,
        typer.Option("--note", metavar="TEXT", help="What was done (kept on the alert).", show_default=False),
    ] = None,
    json_output: Json = False,
) -> None:
    """Close an alert, with what was done."""
    from worker.ops import records

    _act(lambda db: records.resolve(db, alert_id, by, note))


def _act(action) -> None:
    from worker.ops import records

    boot()
    try:
        alert = action(database())
    except records.AlertNotFound as exc:
        raise CliError(
            f"{exc} (`python -m worker alerts --status all` lists them)", ExitCode.NOT_FOUND
        ) from None
    if output.json_mode():
        output.emit(alert)
    else:
        output.line(f"alert {alert['id']} is {alert['status']}")


def deliver_pending_alerts() -> int:
    """The clock's re-delivery of alerts the sink has not taken yet."""
    from worker import runtime
    from worker.jobs import actors, alert_sink

    pending = alert_sink.undelivered(runtime.database())
    actors.send_alerts(pending)
    return len(pending)

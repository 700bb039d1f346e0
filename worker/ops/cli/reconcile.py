"""`reconcile`: the nightly run on demand, its progress on a terminal, and its report."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from worker.ops.cli import output
from worker.ops.cli.errors import CliError, ExitCode
from worker.ops.cli.options import Json, actors, boot, database, iso_option


class CannotReconcile(CliError, RuntimeError):
    """The run cannot start: what is missing or wrong, in one line, with its exit code."""


def register(app: typer.Typer) -> None:
    app.command("reconcile", rich_help_panel="Sales")(reconcile_command)


def reconcile_command(
    since: Annotated[
        datetime | None,
        iso_option("Start of the window (ISO 8601); default: the last run's end less 48 h.", "--since"),
    ] = None,
    until: Annotated[
        datetime | None, iso_option("End of the window (ISO 8601); default: now.", "--until")
    ] = None,
    json_output: Json = False,
) -> None:
    """The nightly run: add what no webhook delivered, name the payments found, report the gaps.

    Lists payments, refunds, disputes and subscriptions of each account in RECONCILE_ACCOUNTS (or the
    platform account) created in the window.
    """
    boot()
    with ReconcileProgress(output.current().err) as progress:
        report = run_reconcile(since, until, progress=progress if progress.enabled else None)
    if output.json_mode():
        output.emit(report)
    else:
        _print_reconcile_report(report)


def run_reconcile(since: datetime | None, until: datetime | None, progress=None) -> dict[str, Any]:
    from handlers.reconcile import default_window, reconcile
    from models.types import utcnow
    from worker import runtime
    from worker.settings import get_settings

    settings = get_settings()
    reader = runtime.stripe_reader()
    if reader is None:
        raise CannotReconcile(
            "STRIPE_API_KEY is not set; the nightly run lists charges from Stripe: set it to a secret or"
            " restricted key (sk_… or rk_…)",
            ExitCode.CONFIG,
        )
    try:
        accounts = settings.reconcile_account_ids()
    except ValueError as exc:
        raise CannotReconcile(str(exc), ExitCode.CONFIG) from None
    db = database()
    start, end = default_window(db, utcnow(), settings.reconcile_initial_days)
    start, end = since or start, until or end
    if start >= end:
        raise CannotReconcile(
            f"empty window: --since {start.isoformat()} is not before --until {end.isoformat()}",
            ExitCode.USAGE,
        )
    send_alerts = actors().send_alerts
    return reconcile(db, reader, start, end, accounts=accounts, progress=progress, on_alerts=send_alerts)


class ReconcileProgress:
    """A Rich progress display on stderr, one line per list, when stderr is a terminal; else nothing.

    Log lines written while it runs go above it instead of through it.
    """

    def __init__(self, console) -> None:
        self.enabled = console.is_terminal
        self._tasks: dict[str, Any] = {}
        self._seen: dict[Any, int] = {}
        self._last = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        if self.enabled:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(finished_text="[green]✓"),
                TextColumn("reconciling {task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f} seen"),
                TimeElapsedColumn(),
                console=console,
                redirect_stdout=False,  # the report goes to stdout afterwards; only log lines move
            )

    def __enter__(self) -> ReconcileProgress:
        if self.enabled:
            before = sys.stderr
            self._progress.start()  # replaces sys.stderr with a proxy that prints above the display
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is before:
                    self._handlers.append((handler, handler.setStream(sys.stderr)))
        return self

    def __call__(self, resource: str, seen: int) -> None:
        task = self._tasks.get(resource)
        if task is None:
            self._finish_last()
            task = self._tasks[resource] = self._progress.add_task(resource, total=None)
        self._progress.update(task, completed=seen)
        self._seen[task], self._last = seen, task

    def _finish_last(self) -> None:
        if self._last is not None:
            done = max(self._seen.get(self._last, 0), 1)
            self._progress.update(self._last, total=done, completed=done)

    def __exit__(self, *_exc) -> None:
        if self.enabled:
            self._finish_last()
            self._progress.stop()
            for handler, stream in self._handlers:
                handler.setStream(stream)


def _more(count: int, shown: int, how: str) -> str:
    return f"    ... and {count - shown:,} more ({how})" if count > shown else ""


def _print_reconcile_report(report: dict[str, Any]) -> None:
    """The report as on-call staff read it (stdout)."""
    from handlers.money import format_amount

    counts, window = report["counts"], report["window"]
    output.line(f"Reconciled {window['since']} .. {window['until']} (run {report['run_id']})", "bold")
    output.line(
        f"  seen {counts['seen']:,}  added {counts['added']:,}  already present {counts['already_present']:,}"
        f"  missed webhooks {counts['missed_webhooks']:,}  API calls {report['api_calls']:,}"
    )
    rows = [
        {"currency": c.upper(), **{k: format_amount(v, c) for k, v in t.items()}}
        for c, t in report["totals"].items()
    ]
    output.table(rows, ["currency", "stripe_gross", "refunded", "net", "funnel_view", "added"])
    gaps = report["discrepancies"]
    output.line("Discrepancies:", "bold")
    missing = gaps["funnel_sales_without_stripe_payment"]
    output.line(f"  funnel sales with no Stripe payment: {missing['count']:,}")
    for purchase_id in missing["sample"]:
        output.line(f"    {purchase_id}")
    if more := _more(missing["count"], len(missing["sample"]), "the count is in reconcile --json"):
        output.line(more)
    mismatches = gaps["amount_mismatches"]
    output.line(f"  amounts that differ: {len(mismatches)}")
    for m in mismatches:
        output.line(
            f"    funnel {m['funnel_purchase_id']}: {format_amount(m['funnel_amount'], m['funnel_currency'])}"
            f" vs Stripe {m['charge_id']}: {format_amount(m['stripe_amount'], m['stripe_currency'])}"
        )
    if len(mismatches) >= 20:
        output.line("    (the report lists the first 20; there may be more)")
    unlinked = gaps["stripe_payments_without_funnel_purchase"]
    output.line(f"  Stripe payments tied to no funnel purchase: {unlinked['count']:,}")
    for charge_id in unlinked["sample"]:
        output.line(f"    {charge_id}")
    if more := _more(unlinked["count"], len(unlinked["sample"]), "the count is in reconcile --json"):
        output.line(more)
    accounts = report.get("accounts") or {}
    connect = bool(set(accounts) - {"platform"})
    if connect:
        output.line("Per account:", "bold")
        for name, tally in accounts.items():
            output.line(
                f"  {name}: seen {tally['seen']:,}  added {tally['added']:,}"
                f"  missed webhooks {tally['missed_webhooks']:,}  API calls {tally['api_calls']:,}"
            )

    def named(payment: dict[str, Any]) -> str:
        kind, k, total = payment["kind"], payment["installment"], payment["installments_total"]
        if kind == "installment":
            which = f"installment {k or '?'} of {total or '?'}"
        elif kind == "subscription":
            which = f"subscription payment {k}" if k else "subscription payment"
        else:
            which = "one-time payment"
        details = [which, payment["customer_email"] or "customer not known yet"]
        details.append(format_amount(payment["amount"], payment["currency"]))
        if payment.get("status") == "failed":
            details.append("a failed attempt")
        where = f" on {payment['account']}" if connect else ""
        return f"charge {payment['id']}{where} ({', '.join(details)}): its webhook never arrived"

    found, found_count = report.get("found") or [], report.get("found_count", 0)
    output.line(f"Payments this run added: {found_count}", "bold")
    for payment in found:
        output.line(f"  {named(payment)}")
    if found_count > len(found):
        output.line(
            f"  ... and {found_count - len(found):,} more (reconcile --json lists the first {len(found)})"
        )

"""`python -m worker ...`: the processes (web, worker, clock, run) and the on-call commands.

Human output is a table on stdout; `--json` output is one JSON document on stdout and nothing else
(logs go to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from worker.settings import get_settings

EVENT_STATUSES = ("received", "processing", "done", "ignored", "failed", "dead")


def _iso_datetime(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [
        [("" if row.get(c) is None else str(row.get(c))).replace("\n", " ") for c in columns] for row in rows
    ]
    # Columns are cut at 60 characters to keep rows on one line, except the last (usually an error).
    widths = [min(60, max(len(c), *(len(r[i]) for r in cells))) for i, c in enumerate(columns)]
    widths[-1] = max(len(columns[-1]), *(len(r[-1]) for r in cells))
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


# --- processes -------------------------------------------------------------------------------------


def cmd_web(args: argparse.Namespace) -> int:
    from worker.receiver.serve import run_web

    run_web(get_settings(), args.host, args.port)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "worker.jobs.actors",
        "--processes",
        str(args.processes or settings.worker_processes),
        "--threads",
        str(args.threads or settings.worker_threads),
    ]
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_clock(_: argparse.Namespace) -> int:
    from worker.jobs import clock

    settings = get_settings()
    jobs = [
        clock.Job("sweep", settings.sweep_interval_seconds, lambda: _sweep().enqueued),
        clock.DailyJob("reconcile", settings.reconcile_at, lambda: run_reconcile(None, None)["counts"]),
        clock.Job("deliver alerts", settings.sweep_interval_seconds, _deliver_pending_alerts),
    ]
    clock.run_forever(jobs)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from worker.ops import devstack

    return devstack.run(processes=args.processes, threads=args.threads)


def cmd_demo(_: argparse.Namespace) -> int:
    from worker.ops import demo

    return demo.run()


def cmd_migrate(_: argparse.Namespace) -> int:

    from models.migrate import upgrade
    from worker import runtime

    upgrade(runtime.database())
    print("database schema is up to date", file=sys.stderr)
    return 0


# --- on-call commands ------------------------------------------------------------------------------


def _sweep():
    from worker import runtime
    from worker.jobs import actors, sweeper
    from worker.jobs.broker import queue_depth

    try:
        depth = queue_depth(actors.broker)
    except Exception as exc:
        # Redis is still down: nothing can be enqueued; the next sweep tries again.
        print(f"Redis is unreachable ({type(exc).__name__}); nothing enqueued", file=sys.stderr)
        return sweeper.SweepResult(errors=1)
    return sweeper.sweep(
        runtime.database(),
        lambda event_id, account: actors.process_event.send(event_id, account),
        get_settings(),
        queue_depth=depth,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    result = _sweep()
    if args.json:
        _print_json({"enqueued": result.enqueued, "total": result.total, "errors": result.errors})
    else:
        detail = ", ".join(f"{count} {status}" for status, count in sorted(result.enqueued.items()))
        print(f"enqueued {result.total} stranded event(s)" + (f" ({detail})" if detail else ""))
        if result.errors:
            print("Redis refused the enqueue; run the sweep again once it is back", file=sys.stderr)
    return 1 if result.errors else 0


def cmd_events(args: argparse.Namespace) -> int:
    from worker import runtime
    from worker.ops.eventlog import event_detail, event_summary, find_by_id, find_events

    db = runtime.database()
    if args.events_command == "show":
        rows = find_by_id(db, args.event_id)
        if not rows:
            print(f"event {args.event_id} is not in the event log", file=sys.stderr)
            return 1
        details = [event_detail(e) for e in rows]
        if args.json:
            _print_json(details[0] if len(details) == 1 else details)
        else:
            for detail in details:
                print(json.dumps(detail, indent=2, default=str))
        return 0
    events = find_events(
        db,
        statuses=[args.status] if args.status else [],
        event_type=args.type,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    rows = [event_summary(e) for e in events]
    if args.json:
        _print_json(rows)
    else:
        _print_table(rows, ["received_at", "id", "type", "status", "attempts", "last_error"])
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from worker import runtime, stripe_api
    from worker.jobs import replay
    from worker.ops.eventlog import find_events

    settings = get_settings()
    db = runtime.database()
    selectors = sum(bool(x) for x in (args.event_ids, args.failed, args.since or args.until))
    if selectors != 1:
        print("replay needs exactly one of: EVENT_ID..., --failed, --since/--until", file=sys.stderr)
        return 2
    if args.event_ids:
        if args.dry_run:
            print("--dry-run applies to --failed and --since/--until", file=sys.stderr)
            return 2
        fetch = None
        if settings.stripe_api_key is not None:

            def fetch(event_id: str, account: str) -> str:
                return stripe_api.retrieve_event(settings, runtime.stripe_client(), event_id, account)

        results = replay.replay_ids(
            db,
            args.event_ids,
            fetch=fetch,
            account=args.account or "",
            max_attempts=settings.event_max_attempts,
        )
    else:
        statuses = ["failed", "dead"] if args.failed else []
        events = find_events(
            db, statuses=statuses, event_type=args.type, since=args.since, until=args.until, limit=args.limit
        )
        if args.dry_run:
            from worker.ops.eventlog import event_summary

            rows = [event_summary(e) for e in events]
            if args.json:
                _print_json({"dry_run": True, "would_replay": rows})
            else:
                _print_table(rows, ["received_at", "id", "type", "status", "attempts"])
                print(f"{len(rows)} event(s) would be replayed (dry run; nothing changed)")
            return 0
        results = replay.replay_events(db, events, max_attempts=settings.event_max_attempts)

    rows = [r.as_dict() for r in results]
    if args.json:
        _print_json(rows)
    else:
        _print_table(rows, ["id", "type", "status_before", "status_after", "fetched_from_stripe", "error"])
        failed = sum(1 for r in results if r.error)
        print(f"replayed {len(results)} event(s), {failed} failed")
    return 1 if any(r.error for r in results) else 0


# --- the sales view and the nightly run -----------------------------------------------------------


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


def cmd_sales(args: argparse.Namespace) -> int:
    from handlers.funnel import normalise_email
    from handlers.sales_view import load_sales_view
    from worker import runtime

    email = None
    if args.customer:
        email = normalise_email(args.customer)
        if email is None:
            print(f"not an email address: {args.customer!r}", file=sys.stderr)
            return 2
    with runtime.database().session() as session:
        rows = load_sales_view(session, email)
    documents = [row.as_json() for row in rows]
    if args.csv:
        from worker.ops.exports import write_sales_csv

        written = write_sales_csv(args.csv, documents)
        print(f"wrote {written} row(s) to {args.csv}", file=sys.stderr)
    if args.json:
        _print_json(documents)
    elif not args.csv:
        _print_table(
            [_sales_table_row(r) for r in rows],
            [
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
            ],
        )
        _print_sales_totals(rows)
    return 0


def _print_sales_totals(rows) -> None:
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
    for currency, total in sorted(totals.items()):
        net = total["gross"] - total["refunded"] - total["dispute_lost"]
        shown = {name: format_amount(value, currency) for name, value in {**total, "net": net}.items()}
        print(
            f"{currency.upper()}: gross {shown['gross']}, refunded {shown['refunded']}, "
            f"lost to disputes {shown['dispute_lost']}, net {shown['net']}"
        )


def cmd_plans(args: argparse.Namespace) -> int:
    from handlers.funnel import normalise_email
    from handlers.plans import load_plans
    from worker import runtime

    email = None
    if args.customer:
        email = normalise_email(args.customer)
        if email is None:
            print(f"not an email address: {args.customer!r}", file=sys.stderr)
            return 2
    with runtime.database().session() as session:
        plans = [p.as_json() for p in load_plans(session, email, args.status)]
    if args.json:
        _print_json(plans)
        return 0
    for plan in plans:
        total = plan["installments_total"]
        plan["paid"] = f"{plan['installments_paid']} of {total}" if total else str(plan["installments_paid"])
    _print_table(
        plans,
        [
            "status",
            "customer_email",
            "product",
            "kind",
            "paid",
            "failed_payments",
            "next_payment_attempt",
            "access_ends_at",
            "subscription_id",
        ],
    )
    return 0


def cmd_import_sales(args: argparse.Namespace) -> int:
    import io
    from pathlib import Path

    from handlers.purchases import store_purchases
    from handlers.sales_import import decode_sales_file, read_sales_csv
    from worker import runtime

    path = Path(args.file)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    try:
        result = read_sales_csv(
            io.StringIO(decode_sales_file(path.read_bytes())), default_currency=args.currency
        )
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if result.rows:
        from handlers.customers import refresh_customers

        with runtime.database().session() as session:
            store_purchases(session, result.rows)
            # An exported purchase can complete what its webhook would have: a sale's product, an
            # access alert's kept purchase. Alerts it changes are sent by the clock's delivery sweep.
            refresh_customers(session, {row["customer_email"] for row in result.rows})
    report = {
        "file": str(path),
        "imported": len(result.rows),
        "errors": [{"line": e.line, "message": e.message} for e in result.errors],
        "warnings": [{"line": w.line, "message": w.message} for w in result.warnings],
        "columns": result.columns,
    }
    if args.json:
        _print_json(report)
    else:
        for problem in result.errors:
            print(f"{path}:{problem.line}: skipped: {problem.message}", file=sys.stderr)
        for warning in result.warnings:
            print(f"{path}:{warning.line}: warning: {warning.message}", file=sys.stderr)
        print(f"imported {len(result.rows)} purchase row(s); {len(result.errors)} line(s) skipped")
    return 1 if result.errors else 0


class _Progress:
    """A one-line progress display on a terminal; silent when stderr is not one."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, resource: str, seen: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r  reconciling {resource}: {seen:,} seen   ")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _print_reconcile_report(report: dict[str, Any]) -> None:
    from handlers.money import format_amount

    counts, window = report["counts"], report["window"]
    print(f"Reconciled {window['since']} .. {window['until']} (run {report['run_id']})")
    print(
        f"  seen {counts['seen']:,}  added {counts['added']:,}  already present {counts['already_present']:,}"
        f"  missed webhooks {counts['missed_webhooks']:,}  API calls {report['api_calls']:,}"
    )
    rows = [
        {"currency": c.upper(), **{k: format_amount(v, c) for k, v in t.items()}}
        for c, t in report["totals"].items()
    ]
    _print_table(rows, ["currency", "stripe_gross", "refunded", "net", "funnel_view", "added"])
    gaps = report["discrepancies"]
    print("Discrepancies:")
    print(
        f"  funnel sales with no Stripe payment: {gaps['funnel_sales_without_stripe_payment']['count']}"
        + "".join(f"\n    {i}" for i in gaps["funnel_sales_without_stripe_payment"]["sample"])
    )
    print(f"  amounts that differ: {len(gaps['amount_mismatches'])}")
    for m in gaps["amount_mismatches"]:
        print(
            f"    funnel {m['funnel_purchase_id']}: {format_amount(m['funnel_amount'], m['funnel_currency'])}"
            f" vs Stripe {m['charge_id']}: {format_amount(m['stripe_amount'], m['stripe_currency'])}"
        )
    unlinked = gaps["stripe_payments_without_funnel_purchase"]
    print(
        f"  Stripe payments tied to no funnel purchase: {unlinked['count']}"
        + "".join(f"\n    {i}" for i in unlinked["sample"])
    )
    accounts = report.get("accounts") or {}
    connect = bool(set(accounts) - {"platform"})
    if connect:
        print("Per account:")
        for name, tally in accounts.items():
            print(
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
    print(f"Payments this run added: {found_count}")
    for payment in found:
        print(f"  {named(payment)}")
    if found_count > len(found):
        print(f"  ... and {found_count - len(found):,} more (reconcile --json lists the first {len(found)})")


class CannotReconcile(RuntimeError):
    pass


def run_reconcile(since: datetime | None, until: datetime | None, progress=None) -> dict[str, Any]:
    from handlers.reconcile import default_window, reconcile
    from models.types import utcnow
    from worker import runtime

    settings = get_settings()
    reader = runtime.stripe_reader()
    if reader is None:
        raise CannotReconcile("STRIPE_API_KEY is not set; the nightly run lists charges from Stripe")
    try:
        accounts = settings.reconcile_account_ids()
    except ValueError as exc:
        raise CannotReconcile(str(exc)) from None
    db = runtime.database()
    start, end = default_window(db, utcnow(), settings.reconcile_initial_days)
    start, end = since or start, until or end
    if start >= end:
        raise CannotReconcile(
            f"empty window: --since {start.isoformat()} is not before --until {end.isoformat()}"
        )
    from worker.jobs.actors import send_alerts

    return reconcile(db, reader, start, end, accounts=accounts, progress=progress, on_alerts=send_alerts)


def cmd_reconcile(args: argparse.Namespace) -> int:
    progress = _Progress()
    try:
        report = run_reconcile(args.since, args.until, progress=None if args.json else progress)
    except CannotReconcile as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        progress.done()
    if args.json:
        _print_json(report)
    else:
        _print_reconcile_report(report)
    return 0


# --- customer records ------------------------------------------------------------------------------


def cmd_notes(args: argparse.Namespace) -> int:
    from handlers.funnel import normalise_email
    from worker import runtime
    from worker.ops import records

    email = normalise_email(args.email)
    if email is None:
        print(f"not an email address: {args.email!r}", file=sys.stderr)
        return 2
    notes = records.notes_for(runtime.database(), email)
    if args.json:
        _print_json(notes)
    elif not notes:
        print(f"no notes for {email}")
    else:
        print(f"{email} (Stripe customers: {', '.join(notes[0]['stripe_customer_ids']) or 'none seen'})")
        for note in notes:
            print(f"- {note['text']}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from worker import runtime
    from worker.ops import records

    db = runtime.database()
    try:
        if args.alerts_command == "ack":
            alert = records.acknowledge(db, args.alert_id, args.by)
        elif args.alerts_command == "resolve":
            alert = records.resolve(db, args.alert_id, args.by, args.note)
        else:
            alerts = records.list_alerts(db, args.status)
            if args.json:
                _print_json(alerts)
            else:
                _print_table(
                    alerts, ["id", "kind", "status", "created_at", "customer_email", "charge_id", "message"]
                )
            return 0
    except records.AlertNotFound as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.json:
        _print_json(alert)
    else:
        print(f"alert {alert['id']} is {alert['status']}")
    return 0


def _deliver_pending_alerts() -> int:
    from worker import runtime
    from worker.jobs import actors, alert_sink

    pending = alert_sink.undelivered(runtime.database())
    actors.send_alerts(pending)
    return len(pending)


# --- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run web + worker + clock on the embedded defaults (SQLite, local Redis)")
    p.add_argument("--processes", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo", help="run a realistic scenario end to end on 127.0.0.1 (no network, no Stripe account)"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("web", help="the HTTP receiver")

    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_web)

    p = sub.add_parser("worker", help="the Dramatiq worker processes")
    p.add_argument("--processes", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_worker)

    sub.add_parser("clock", help="the scheduler (sweeper every minute)").set_defaults(func=cmd_clock)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=cmd_migrate)

    p = sub.add_parser("sweep", help="enqueue events whose queue message was lost")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("events", help="list the event log, or `events show EVENT_ID`")
    p.add_argument("--status", choices=EVENT_STATUSES)
    p.add_argument("--type", help="exact event type, e.g. charge.refunded")
    p.add_argument("--since", type=_iso_datetime, help="received at or after (ISO 8601, UTC if no offset)")
    p.add_argument("--until", type=_iso_datetime, help="received before (ISO 8601)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_events, events_command=None)
    events_sub = p.add_subparsers(dest="events_command", metavar="show")
    show = events_sub.add_parser("show", help="one event with its payload and last error")
    show.add_argument("event_id")
    show.add_argument("--json", action="store_true")

    p = sub.add_parser("replay", help="re-run the handlers of events; never duplicates their effects")
    p.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    p.add_argument("--failed", action="store_true", help="every failed or dead event")
    p.add_argument("--since", type=_iso_datetime, help="received at or after (ISO 8601)")
    p.add_argument("--until", type=_iso_datetime, help="received before (ISO 8601)")
    p.add_argument("--type", help="only events of this type (with --failed or --since/--until)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--account", help="Connect account of the given ids (acct_...)")
    p.add_argument("--dry-run", action="store_true", help="list what would be replayed, change nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("sales", help="the complete sales view: every payment, with installment numbers")
    p.add_argument("--customer", metavar="EMAIL")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", metavar="FILE", help="also write the rows to a CSV file")
    p.set_defaults(func=cmd_sales)

    p = sub.add_parser("plans", help="payment plans and subscriptions: paid k of N, failed, status")
    p.add_argument("--customer", metavar="EMAIL", help="only this customer's plans")
    p.add_argument("--status", choices=("active", "past_due", "unpaid", "completed", "cancelled"))
    p.add_argument("--json", action="store_true", help="one JSON array on stdout")
    p.set_defaults(func=cmd_plans)

    p = sub.add_parser(
        "import-sales", help="import a funnel sales export (CSV); re-importing changes nothing"
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--currency", help="currency of rows without one (e.g. USD, JPY)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import_sales)

    p = sub.add_parser(
        "reconcile",
        help="the nightly run: add what no webhook delivered (payments, refunds, disputes, subscriptions"
        " of each account in RECONCILE_ACCOUNTS), name the payments found, report gaps",
    )
    p.add_argument("--since", type=_iso_datetime, help="default: the last run's end less 48 h")
    p.add_argument("--until", type=_iso_datetime, help="default: now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("doctor", help="check settings, database, Redis and the Stripe key; say what is wrong")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("notes", help="the refund history on a customer's record")

    p.add_argument("email", metavar="EMAIL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_notes)

    p = sub.add_parser(
        "alerts", help="list alerts, or `alerts ack ID --by NAME`, `alerts resolve ID --by NAME`"
    )
    p.add_argument("--status", choices=("open", "acknowledged", "resolved"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_alerts, alerts_command=None)
    alerts_sub = p.add_subparsers(dest="alerts_command", metavar="ack|resolve")
    for name, help_text in (("ack", "say you are handling it"), ("resolve", "close it, with what was done")):
        action = alerts_sub.add_parser(name, help=help_text)
        action.add_argument("alert_id", type=int, metavar="ID")
        action.add_argument("--by", required=True, metavar="NAME")
        if name == "resolve":
            action.add_argument("--note", metavar="TEXT")
        action.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    from worker.ops.logs import configure_logging

    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        # Before the settings are loaded: invalid settings are one of the things it reports.
        from worker.ops import doctor

        return doctor.main(args.json)
    settings = get_settings()

    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    from worker import runtime

    runtime.configure_domain()

    try:
        return args.func(args)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly.
        sys.stderr.close()
        return 0

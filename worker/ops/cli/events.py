"""The event log: `events`, `events show`, `replay` and `sweep`."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from worker.ops.cli import output
from worker.ops.cli.errors import CliError, ExitCode, describe, redis_unreachable, usage
from worker.ops.cli.options import Json, actors, boot, database, iso_option

# A window replay of more events than this asks first (`--yes` answers for scripts).
REPLAY_CONFIRM_OVER = 50

EVENT_COLUMNS = ["received_at", "id", "type", "status", "attempts", "last_error"]


class EventStatus(StrEnum):
    received = "received"
    processing = "processing"
    done = "done"
    ignored = "ignored"
    failed = "failed"
    dead = "dead"


EventType = Annotated[
    str | None,
    typer.Option(
        "--type",
        metavar="TYPE",
        help="Only events of this exact type, e.g. charge.refunded.",
        show_default=False,
    ),
]

events_app = typer.Typer(
    invoke_without_command=True,
    help="The event log, newest first; `events show EVENT_ID` for one event.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events", rich_help_panel="Events")
    app.command("replay", rich_help_panel="Events")(replay)
    app.command("sweep", rich_help_panel="Events")(sweep)


@events_app.callback()
def events(
    ctx: typer.Context,
    status: Annotated[
        EventStatus | None, typer.Option("--status", help="Only events in this status.", show_default=False)
    ] = None,
    event_type: EventType = None,
    since: Annotated[
        datetime | None,
        iso_option("Received at or after this time (ISO 8601; UTC without an offset).", "--since"),
    ] = None,
    until: Annotated[datetime | None, iso_option("Received before this time (ISO 8601).", "--until")] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", metavar="N", min=1, help="The N newest events.", show_default=False),
    ] = None,
    json_output: Json = False,
) -> None:
    """The event log, newest first: received time, id, type, status, attempts, last error."""
    if ctx.invoked_subcommand is not None:
        return
    from worker.ops.eventlog import event_summary, find_events

    boot()
    found = find_events(
        database(),
        statuses=[status.value] if status else [],
        event_type=event_type,
        since=since,
        until=until,
        limit=limit,
        newest_first=True,
    )
    rows = [event_summary(e) for e in found]
    if output.json_mode():
        output.emit(rows)
    else:
        output.table(_shown(rows), EVENT_COLUMNS, styles={"status": output.STATUS_STYLES})


def _shown(rows: list[dict]) -> list[dict]:
    return [{**row, "received_at": output.seconds(row["received_at"])} for row in rows]


@events_app.command("show")
def show(
    event_id: Annotated[str, typer.Argument(metavar="EVENT_ID", help="The event's id (evt_…).")],
    json_output: Json = False,
) -> None:
    """One event with its payload, attempts, last error and traceback."""
    from worker.ops.eventlog import event_detail, find_by_id

    boot()
    rows = find_by_id(database(), event_id)
    if not rows:
        raise CliError(
            f"event {event_id} is not in the event log (`python -m worker replay {event_id}` fetches it"
            " from Stripe)",
            ExitCode.NOT_FOUND,
        )
    details = [event_detail(e) for e in rows]
    if output.json_mode():
        output.emit(details[0] if len(details) == 1 else details)
        return
    for detail in details:
        _show_detail(detail)


def _show_detail(detail: dict) -> None:
    from rich.json import JSON
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in detail.items():
        if name in ("payload", "last_traceback"):
            continue
        text = output.cell(value)
        if name == "status":
            text.stylize(output.STATUS_STYLES.get(text.plain, ""))
        grid.add_row(name, text)
    output.show(grid)
    if detail.get("last_traceback"):
        output.line("last_traceback:", "bold")
        output.show(Text(detail["last_traceback"].rstrip()))
    output.line("payload:", "bold")
    output.show(
        JSON(json.dumps(detail["payload"], default=str), indent=2, highlight=output.current().out.is_terminal)
    )


def replay(
    event_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="EVENT_ID",
            help="Events to re-run, even done ones; an id not in the log is fetched from Stripe.",
            show_default=False,
        ),
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed or dead event.")] = False,
    since: Annotated[
        datetime | None,
        iso_option("Events received at or after this time (ISO 8601; UTC without an offset).", "--since"),
    ] = None,
    until: Annotated[
        datetime | None, iso_option("Events received before this time (ISO 8601).", "--until")
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="With --failed or --since/--until: only events of this type.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            metavar="N",
            min=1,
            help="With --failed or --since/--until: the N oldest.",
            show_default=False,
        ),
    ] = None,
    account: Annotated[
        str | None,
        typer.Option(
            "--account",
            metavar="ACCT",
            help="The Connect account (acct_…) of the given ids.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be replayed; change nothing.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help=f"Replay a --since/--until window of more than {REPLAY_CONFIRM_OVER} events without asking.",
        ),
    ] = False,
    json_output: Json = False,
) -> None:
    """Re-run the handlers of events (in this process); never duplicates their effects.

    Exactly one of: EVENT_ID..., --failed, --since/--until. Exit status 1 when any replayed event failed.
    """
    from worker import runtime, stripe_api
    from worker.jobs import replay as replaying
    from worker.ops.eventlog import event_summary, find_events

    selectors = sum(bool(x) for x in (event_ids, failed, since or until))
    if selectors != 1:
        raise usage("replay needs exactly one of: EVENT_ID..., --failed, --since/--until")
    if event_ids and dry_run:
        raise usage("--dry-run applies to --failed and --since/--until")
    settings = boot()
    db = database()
    if event_ids:
        fetch = None
        if settings.stripe_api_key is not None:

            def fetch(event_id: str, account: str) -> str:
                return stripe_api.retrieve_event(settings, runtime.stripe_client(), event_id, account)

        results = replaying.replay_ids(
            db, event_ids, fetch=fetch, account=account or "", max_attempts=settings.event_max_attempts
        )
    else:
        statuses = ["failed", "dead"] if failed else []
        found = find_events(
            db, statuses=statuses, event_type=event_type, since=since, until=until, limit=limit
        )
        if dry_run:
            rows = [event_summary(e) for e in found]
            if output.json_mode():
                output.emit({"dry_run": True, "would_replay": rows})
            else:
                output.table(
                    _shown(rows),
                    ["received_at", "id", "type", "status", "attempts"],
                    styles={"status": output.STATUS_STYLES},
                )
                output.line(f"{len(rows)} event(s) would be replayed (dry run; nothing changed)")
            return
        if not failed and len(found) > REPLAY_CONFIRM_OVER and not yes:
            _confirm_window(len(found), since, until)
        results = replaying.replay_events(db, found, max_attempts=settings.event_max_attempts)

    rows = [r.as_dict() for r in results]
    failures = sum(1 for r in results if r.error)
    if output.json_mode():
        output.emit(rows)
    else:
        output.table(
            rows,
            ["id", "type", "status_before", "status_after", "fetched_from_stripe", "error"],
            styles={"status_after": output.STATUS_STYLES},
        )
        output.line(f"replayed {len(results)} event(s), {failures} failed", "red" if failures else None)
    if failures:
        raise typer.Exit(ExitCode.PROBLEMS)


def _confirm_window(count: int, since: datetime | None, until: datetime | None) -> None:
    window = [
        f"from {since:%Y-%m-%d %H:%M:%S}" if since else "",
        f"until {until:%Y-%m-%d %H:%M:%S}" if until else "",
    ]
    question = f"Replay {count} events received {' '.join(w for w in window if w)} UTC?"
    if not stdin_is_terminal():
        raise usage(
            f"replay would re-run {count} events (more than {REPLAY_CONFIRM_OVER}) and stdin is not a"
            " terminal to ask; pass --yes to go ahead, or narrow the window (--type, --limit)"
        )
    if not typer.confirm(question, default=False, err=True):
        raise CliError("nothing replayed", ExitCode.PROBLEMS)


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def sweep(json_output: Json = False) -> None:
    """Enqueue events whose queue message was lost (received, stuck processing, failed with no retry).

    Exit status 4 when Redis is unreachable or refused an enqueue.
    """
    boot()
    result, problem = run_sweep()
    report = {"enqueued": result.enqueued, "total": result.total, "errors": result.errors}
    if problem is None and result.errors:
        problem = CliError(
            f"REDIS_URL: Redis refused {result.errors} enqueue(s); run the sweep again once it is back",
            ExitCode.UNAVAILABLE,
        )
    if output.json_mode():
        if problem is not None:
            report.update(error=problem.message, exit_code=problem.code)
        output.emit(report)
    else:
        detail = ", ".join(f"{count} {status}" for status, count in sorted(result.enqueued.items()))
        output.line(f"enqueued {result.total} stranded event(s)" + (f" ({detail})" if detail else ""))
        if problem is not None:
            output.error(problem.message)
    if problem is not None:
        raise typer.Exit(problem.code)


def run_sweep():
    """(the sweep's result, the one-line problem when Redis could not be asked)."""
    jobs = actors()  # first: it reads REDIS_URL
    from worker.jobs import sweeper
    from worker.jobs.broker import queue_depth
    from worker.settings import get_settings

    try:
        depth = queue_depth(jobs.broker)
    except Exception as exc:
        # Redis is down: nothing can be enqueued; the next sweep tries again.
        return sweeper.SweepResult(errors=1), describe(exc) or redis_unreachable(exc)
    result = sweeper.sweep(
        database(),
        lambda event_id, account: jobs.process_event.send(event_id, account),
        get_settings(),
        queue_depth=depth,
    )
    return result, None


def sweep_for_clock():
    """The clock's sweep: a Redis outage is logged and left to the next turn."""
    import logging

    result, problem = run_sweep()
    if problem is not None:
        logging.getLogger("worker.clock").warning("sweep: %s", problem.message)
    return result

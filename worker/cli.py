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
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "worker.web:app_from_settings",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    argv = [
        sys.executable, "-m", "dramatiq", "worker.actors",
        "--processes", str(args.processes or settings.worker_processes),
        "--threads", str(args.threads or settings.worker_threads),
    ]  # fmt: skip
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_clock(_: argparse.Namespace) -> int:
    from worker import clock

    settings = get_settings()
    jobs = [clock.Job("sweep", settings.sweep_interval_seconds, lambda: _sweep().enqueued)]
    clock.run_forever(jobs)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from worker import devstack

    return devstack.run(processes=args.processes, threads=args.threads)


def cmd_migrate(_: argparse.Namespace) -> int:
    from models.migrate import upgrade
    from worker import runtime

    upgrade(runtime.database())
    print("database schema is up to date", file=sys.stderr)
    return 0


# --- on-call commands ------------------------------------------------------------------------------


def _sweep():
    from worker import actors, runtime, sweeper
    from worker.broker import queue_depth

    return sweeper.sweep(
        runtime.database(),
        lambda event_id, account: actors.process_event.send(event_id, account),
        get_settings(),
        queue_depth=queue_depth(actors.broker),
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    result = _sweep()
    if args.json:
        _print_json({"enqueued": result.enqueued, "total": result.total, "errors": result.errors})
    else:
        print(f"enqueued {result.total} stranded event(s)" + (f" {result.enqueued}" if result.total else ""))
        if result.errors:
            print("Redis refused the enqueue; run the sweep again once it is back", file=sys.stderr)
    return 1 if result.errors else 0


def cmd_events(args: argparse.Namespace) -> int:
    from worker import runtime
    from worker.eventlog import event_detail, event_summary, find_by_id, find_events

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
    from worker import replay, runtime, stripe_api
    from worker.eventlog import find_events

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
            from worker.eventlog import event_summary

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


# --- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run web + worker + clock on the embedded defaults (SQLite, local Redis)")
    p.add_argument("--processes", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_run)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    from worker.logs import configure_logging

    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    try:
        return args.func(args)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly.
        sys.stderr.close()
        return 0

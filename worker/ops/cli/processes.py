"""The Procfile's processes (web, worker, clock), `run`, `demo`, `migrate` and `doctor`."""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stdout
from types import SimpleNamespace
from typing import Annotated

import typer

from worker.ops.cli import output
from worker.ops.cli.errors import CliError, ExitCode
from worker.ops.cli.options import Json, boot, database

Processes = Annotated[
    int | None,
    typer.Option(
        "--processes", min=1, help="Worker processes (default: WORKER_PROCESSES, 2).", show_default=False
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="Threads per worker process (default: WORKER_THREADS, 4).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.command("run", rich_help_panel="Processes")(run)
    app.command("web", rich_help_panel="Processes")(web)
    app.command("worker", rich_help_panel="Processes")(worker)
    app.command("clock", rich_help_panel="Processes")(clock)
    app.command("demo", rich_help_panel="Processes")(demo)
    app.command("migrate", rich_help_panel="Processes")(migrate)
    app.command("doctor", rich_help_panel="Checks")(doctor)


def run(processes: Processes = None, threads: Threads = None) -> None:
    """Run web + worker + clock on the embedded defaults (SQLite, a local Redis)."""
    from worker.ops import devstack

    boot(on_call=False)
    raise typer.Exit(devstack.run(processes=processes, threads=threads))


def web(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default: HOST, 127.0.0.1).", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", min=1, max=65535, help="Port to listen on (default: PORT, 8000).", show_default=False
        ),
    ] = None,
) -> None:
    """The HTTP receiver: POST /webhooks/stripe, /webhooks/funnel/TOKEN, /healthz, /readyz, /metrics."""
    from worker.ops import cli

    boot(on_call=False)
    cli.cmd_web(SimpleNamespace(host=host, port=port))


def worker(processes: Processes = None, threads: Threads = None) -> None:
    """The Dramatiq worker processes that apply events."""
    settings = boot(on_call=False)
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "worker.jobs.actors",
        "--processes",
        str(processes or settings.worker_processes),
        "--threads",
        str(threads or settings.worker_threads),
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def clock() -> None:
    """The scheduler: the sweeper and alert re-delivery every minute, the nightly run at RECONCILE_AT."""
    from worker.jobs import clock as scheduler
    from worker.ops.cli.events import sweep_for_clock
    from worker.ops.cli.reconcile import run_reconcile
    from worker.ops.cli.records import deliver_pending_alerts

    settings = boot(on_call=False)
    jobs = [
        scheduler.Job("sweep", settings.sweep_interval_seconds, lambda: sweep_for_clock().enqueued),
        scheduler.DailyJob("reconcile", settings.reconcile_at, lambda: run_reconcile(None, None)["counts"]),
        scheduler.Job("deliver alerts", settings.sweep_interval_seconds, deliver_pending_alerts),
    ]
    scheduler.run_forever(jobs)


def demo(
    exit_after: Annotated[
        bool, typer.Option("--exit", help="Stop once the story is printed, instead of serving the dashboard.")
    ] = False,
) -> None:
    """A realistic scenario end to end on 127.0.0.1 (no network, no Stripe account; about 30 s), then
    the staff dashboard with a demo admin account, until Ctrl-C."""
    from worker.ops import demo as scenario

    boot(on_call=False)
    raise typer.Exit(scenario.run(keep_running=not exit_after))


def migrate() -> None:
    """Bring the database schema up to date (Alembic; safe on every deploy)."""
    from models.migrate import upgrade

    boot()
    upgrade(database())
    output.message("database schema is up to date", "green")


def doctor(json_output: Json = False) -> None:
    """Check the settings, the database and its migrations, Redis and the Stripe key; say what is wrong.

    Exit status 1 when a check fails.
    """
    from worker.ops import doctor as checks

    # No boot: invalid settings are one of the things the doctor reports.
    if not output.json_mode():
        raise typer.Exit(checks.main(False))
    printed = io.StringIO()
    with redirect_stdout(printed):
        code = checks.main(True)
    try:
        output.emit(json.loads(printed.getvalue()))
    except ValueError:
        raise CliError("doctor printed something that is not JSON", ExitCode.PROBLEMS) from None
    raise typer.Exit(code)

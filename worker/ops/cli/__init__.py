"""`python -m worker ...` (and the `stripe-refund-worker` console script): the processes (web, worker,
clock, run) and the on-call commands, on Typer and Rich.

Human output is a Rich table on stdout, with messages and progress on stderr; `--json` output is
exactly one JSON document on stdout and nothing else, errors included. Exit codes: `ExitCode`.

Modules: `app` (the application and `main`), `errors` (exit codes, one-line errors), `output`,
`options`, and one module per group of commands: `processes`, `events`, `sales`, `reconcile`,
`records`.
"""

from __future__ import annotations

from worker.ops.cli.app import app, main
from worker.ops.cli.errors import CliError, ExitCode
from worker.ops.cli.events import run_sweep
from worker.ops.cli.reconcile import CannotReconcile, _print_reconcile_report, run_reconcile
from worker.ops.cli.records import deliver_pending_alerts
from worker.settings import get_settings

__all__ = [
    "CannotReconcile",
    "CliError",
    "ExitCode",
    "_print_reconcile_report",
    "app",
    "cmd_web",
    "deliver_pending_alerts",
    "get_settings",
    "main",
    "run_reconcile",
    "run_sweep",
]


def cmd_web(args) -> int:
    """Serve the receiver on `args.host`/`args.port` (None: the settings'); what `web` runs."""
    from worker.receiver.serve import run_web

    run_web(get_settings(), args.host, args.port)
    return 0

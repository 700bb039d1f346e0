"""The Typer application behind `python -m worker` and `stripe-refund-worker`, and its entry point.

`main()` runs one command and returns its exit status (see `ExitCode`): it turns usage errors,
configuration and dependency failures into one line (one JSON document under `--json`) and keeps
tracebacks for genuine bugs.
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from collections.abc import Sequence
from contextlib import nullcontext, redirect_stdout
from typing import Any

import typer
from typer._click.exceptions import ClickException, UsageError
from typer.core import TyperGroup

from worker.ops.cli import events, output, processes, reconcile, records, sales, users
from worker.ops.cli.errors import CliError, ExitCode, describe, first_line, scrub
from worker.ops.cli.options import Json

HELP = "\n\n".join(
    (
        "Stripe refund and reconciliation worker: the processes (web, worker, clock, run) and the on-call"
        " commands.",
        "Human output is a table on stdout (messages and progress on stderr); with --json, stdout is exactly"
        " one JSON document, errors included.",
        "Exit codes: 0 ok; 1 problems found or some items failed; 2 usage error; 3 configuration error (a"
        " setting missing or invalid, the database not migrated); 4 a dependency unreachable (database,"
        " Redis, Stripe); 5 not found; 130 interrupted.",
    )
)


class WorkerGroup(TyperGroup):
    """The root command: every invocation, from the console script, `python -m worker` or a test's
    CliRunner, goes through `run_command`, so exit codes and error output are the same everywhere."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        code = run_command(self, argv, prog_name or program_name(), extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Output piped into `head` and the like: stop quietly.
            _silence_stdout()
            raise typer.Exit(ExitCode.OK) from None


app = typer.Typer(
    cls=WorkerGroup,
    name="python -m worker",
    help=HELP,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(json_output: Json = False) -> None:
    """Stripe refund and reconciliation worker."""


processes.register(app)
events.register(app)
sales.register(app)
reconcile.register(app)
records.register(app)
users.register(app)


def program_name() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name == "stripe-refund-worker" else "python -m worker"


def wants_json(argv: Sequence[str]) -> bool:
    """`--json` anywhere before a `--` (and not asking for help)."""
    words = list(argv)
    if "--" in words:
        words = words[: words.index("--")]
    return "--json" in words and not ({"--help", "-h"} & set(words))


def run_command(command: TyperGroup, argv: list[str], prog_name: str, extra: dict[str, Any]) -> int:
    """Run one command line; print its result or its error; return the exit status."""
    out = output.Output(json=wants_json(argv))
    previous = output.activate(out)
    stray = io.StringIO()
    try:
        # Under --json nothing but the one document reaches stdout: anything else printed on the way
        # (by a library, say) is passed on to stderr.
        with redirect_stdout(stray) if out.json else nullcontext():
            code, problem = _invoke(command, argv, prog_name, extra)
    finally:
        output.activate(previous)
    if stray.getvalue():
        out.stderr.write(stray.getvalue())
    if problem is None and code == ExitCode.INTERRUPTED and not out.has_document:
        problem = CliError("interrupted", ExitCode.INTERRUPTED)
    try:
        if out.json:
            if problem is not None:
                document: Any = {"error": problem.message, "exit_code": problem.code}
            elif out.has_document:
                document = out.document
            else:  # a command with no JSON result of its own (migrate, say)
                document = {"ok": code == ExitCode.OK, "exit_code": code}
            out.stdout.write(output.dumps(document))
            out.stdout.flush()
        elif problem is not None:
            output.activate(out)
            try:
                output.error(problem.message)
            finally:
                output.activate(previous)
    except BrokenPipeError:
        _silence_stdout()
    return code


def _invoke(
    command: TyperGroup, argv: list[str], prog_name: str, extra: dict[str, Any]
) -> tuple[int, CliError | None]:
    try:
        result = TyperGroup.main(command, args=argv, prog_name=prog_name, standalone_mode=False, **extra)
        return (result if isinstance(result, int) else ExitCode.OK), None
    except CliError as exc:
        return exc.code, exc
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else prog_name
        return ExitCode.USAGE, CliError(f"{exc.format_message()} (see `{where} --help`)", ExitCode.USAGE)
    except ClickException as exc:
        return exc.exit_code, CliError(exc.format_message(), exc.exit_code)
    except typer.Abort:
        return ExitCode.INTERRUPTED, CliError("aborted", ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED, CliError("interrupted", ExitCode.INTERRUPTED)
    except SystemExit as exc:
        # A helper that stops with a message (`raise SystemExit("...")`) or a status.
        if isinstance(exc.code, str):
            return ExitCode.PROBLEMS, CliError(scrub(exc.code), ExitCode.PROBLEMS)
        return int(exc.code or 0), None
    except Exception as exc:
        known = describe(exc)
        if known is not None:
            return known.code, known
        # A bug: its traceback (scrubbed of secrets) is what a bug report needs.
        sys.stderr.write(scrub("".join(traceback.format_exception(exc))))
        return ExitCode.PROBLEMS, CliError(
            f"internal error: {type(exc).__name__}: {first_line(exc)} (the traceback is above)",
            ExitCode.PROBLEMS,
        )


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's last flush is quiet too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """The console script and `python -m worker`: run one command line, return its exit status."""
    return typer.main.get_command(app).main(args=argv, prog_name=program_name(), standalone_mode=False)

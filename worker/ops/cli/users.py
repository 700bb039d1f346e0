"""Staff accounts for the dashboard: `users add`, `users list`, `users disable`, `users enable`,
`users set-password`, `users role`.

Passwords are never taken from the command line (it is visible in `ps` and shell history): they are
prompted for twice on a terminal, or read as the first line of stdin otherwise (for scripts).
"""

from __future__ import annotations

import getpass
import os
import sys
from enum import StrEnum
from typing import Annotated

import typer

from worker.ops.cli import output
from worker.ops.cli.errors import CliError, ExitCode
from worker.ops.cli.options import Json, boot, database

users_app = typer.Typer(
    invoke_without_command=True,
    help="Staff accounts for the dashboard (/app/): add, list, disable, enable, set-password, role.",
)

Email = Annotated[str, typer.Argument(metavar="EMAIL", help="The staff member's email.", show_default=False)]


class Role(StrEnum):
    viewer = "viewer"
    staff = "staff"
    admin = "admin"


RoleOption = Annotated[
    Role,
    typer.Option(
        "--role",
        help="viewer reads; staff also acknowledge and resolve alerts and add notes; admin also replays"
        " events and manages users.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users", rich_help_panel="Dashboard")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid {os.getuid()}"


def read_password() -> str:
    """Twice at a terminal prompt, or the first line of stdin when it is not a terminal."""
    if sys.stdin is None or not sys.stdin.isatty():
        line = sys.stdin.readline() if sys.stdin else ""
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("no password on stdin: pipe it in (one line) or run at a terminal", ExitCode.USAGE)
        return password
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise CliError("the two passwords differ; nothing was changed", ExitCode.USAGE)
    return first


def _account_call(call, *args, **kwargs):
    from worker.dashboard.accounts import AccountError

    try:
        return call(*args, **kwargs)
    except AccountError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    except LookupError as exc:
        raise CliError(f"{exc}; `users list` shows the accounts", ExitCode.NOT_FOUND) from None


def _row(user) -> dict:
    from models.types import iso

    return {
        "email": user.email,
        "role": user.role,
        "disabled": user.disabled,
        "locked_until": iso(user.locked_until),
        "last_sign_in_at": iso(user.last_sign_in_at),
        "created_at": iso(user.created_at),
    }


def _done(user, text: str) -> None:
    if output.json_mode():
        output.emit(_row(user))
    else:
        output.line(text)


@users_app.callback()
def users_list_default(ctx: typer.Context, json_output: Json = False) -> None:
    """Without a subcommand: the same as `users list`."""
    if ctx.invoked_subcommand is None:
        users_list(json_output)


@users_app.command("list")
def users_list(json_output: Json = False) -> None:
    """Every staff account, with its role and whether it is disabled or locked."""
    from worker.dashboard import accounts

    boot()
    rows = [_row(user) for user in accounts.list_users(database())]
    if output.json_mode():
        output.emit(rows)
    elif not rows:
        output.line("no staff accounts yet: python -m worker users add EMAIL --role admin", "dim")
    else:
        output.table(rows, ["email", "role", "disabled", "locked_until", "last_sign_in_at", "created_at"])


@users_app.command("add")
def users_add(email: Email, role: RoleOption = Role.viewer, json_output: Json = False) -> None:
    """Create an account; the password is prompted for, or read from stdin (at least 12 characters)."""
    from worker.dashboard import accounts

    boot()
    db = database()
    password = read_password()
    user = _account_call(accounts.add_user, db, email, role.value, password, actor=_actor())
    _done(user, f"added {user.email} as {user.role}")


@users_app.command("set-password")
def users_set_password(email: Email, json_output: Json = False) -> None:
    """A new password (prompted for, or read from stdin); the account's open sessions end."""
    from worker.dashboard import accounts

    boot()
    db = database()
    password = read_password()
    user = _account_call(accounts.set_password, db, email, password, actor=_actor())
    _done(user, f"new password set for {user.email}; their open sessions are signed out")


@users_app.command("disable")
def users_disable(email: Email, json_output: Json = False) -> None:
    """No more sign-ins; open sessions end at their next request. Kept for the audit log."""
    from worker.dashboard import accounts

    boot()
    user = _account_call(accounts.disable_user, database(), email, actor=_actor())
    _done(user, f"disabled {user.email}")


@users_app.command("enable")
def users_enable(email: Email, json_output: Json = False) -> None:
    """Allow a disabled account to sign in again (and lift a lockout)."""
    from worker.dashboard import accounts

    boot()
    user = _account_call(accounts.enable_user, database(), email, actor=_actor())
    _done(user, f"enabled {user.email}")


@users_app.command("role")
def users_role(
    email: Email,
    role: Annotated[Role, typer.Argument(metavar="ROLE", help="viewer, staff or admin.", show_default=False)],
    json_output: Json = False,
) -> None:
    """Change an account's role (viewer, staff or admin)."""
    from worker.dashboard import accounts

    boot()
    user = _account_call(accounts.set_role, database(), email, role.value, actor=_actor())
    _done(user, f"{user.email} is now {user.role}")

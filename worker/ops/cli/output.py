"""Where the CLI's output goes.

Human output: Rich tables and result lines on stdout; progress, warnings and errors on stderr. With
`--json`, stdout carries exactly one JSON document (the result, or `{"error": ..., "exit_code": N}`)
and nothing else: no Rich markup, no colour, no stray line.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

# Off a terminal (a pipe, a file, a test) lines are never wrapped: one row is one line, for grep.
UNWRAPPED_WIDTH = 10_000
# Free text: the columns that wrap on a narrow terminal. The others (ids, types, statuses, times,
# amounts) are never wrapped, so they can be read and copied whole.
WRAPPED = frozenset({"last_error", "error", "message", "product", "customer_email", "text"})
_FRACTION = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+(Z|[+-]\d\d:\d\d)?$")

_NOTHING = object()


def make_console(stream: TextIO) -> Console:
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return Console(
        file=stream,
        markup=False,  # data (product names, error text such as "[redacted]") is never read as markup
        highlight=False,
        emoji=False,
        width=None if terminal else UNWRAPPED_WIDTH,
    )


@dataclass
class Output:
    """One invocation's output: its mode, its consoles and (with --json) the document to print."""

    json: bool = False
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    document: Any = _NOTHING

    def __post_init__(self) -> None:
        self.out = make_console(self.stdout)
        self.err = make_console(self.stderr)

    @property
    def has_document(self) -> bool:
        return self.document is not _NOTHING


_current: Output | None = None


def current() -> Output:
    """The running invocation's output; outside one (a test calling a printer), plain stdout/stderr."""
    return _current if _current is not None else Output()


def activate(output: Output | None) -> Output | None:
    global _current
    previous, _current = _current, output
    return previous


def json_mode() -> bool:
    return current().json


def emit(document: Any) -> None:
    """The command's result under --json; printed once the command has finished."""
    current().document = document


def dumps(document: Any) -> str:
    return json.dumps(document, indent=2, default=str) + "\n"


# --- human output ----------------------------------------------------------------------------------


def show(
    renderable: RenderableType, *, err: bool = False, narrowest: int | None = None, widest: int | None = None
) -> None:
    """Print a Rich renderable; off a terminal, without the padding Rich leaves at the end of lines.

    `narrowest`: the least width the renderable needs without cutting anything short; on a terminal
    narrower than that it is printed `widest` wide and the terminal folds its lines.
    """
    console = current().err if err else current().out
    if console.is_terminal:
        if narrowest is not None and widest is not None and narrowest > console.width:
            wide = Console(
                file=console.file,
                width=widest,
                force_terminal=True,
                color_system=console.color_system,
                markup=False,
                highlight=False,
                emoji=False,
            )
            wide.print(renderable, crop=False)
        else:
            console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    console.file.flush()


def line(text: str | Text = "", style: str | None = None) -> None:
    """One result line on stdout (never under --json)."""
    current().out.print(Text(text, style=style or "") if isinstance(text, str) else text, soft_wrap=True)


def message(text: str, style: str | None = None) -> None:
    """A line for the person running the command, on stderr."""
    current().err.print(Text(text, style=style or ""), soft_wrap=True)


def warning(text: str) -> None:
    message(text, "yellow")


def error(text: str) -> None:
    message(text, "bold red")


def cell(value: Any) -> Text:
    return Text("" if value is None else str(value).replace("\n", " "))


def seconds(value: str | None) -> str | None:
    """An ISO time as tables show it: to the second (JSON keeps the fraction)."""
    if value is None:
        return None
    match = _FRACTION.match(value)
    return f"{match.group(1)}{match.group(2) or ''}" if match else value


def table(
    rows: Sequence[dict[str, Any]],
    columns: Iterable[str],
    *,
    empty: str = "(none)",
    styles: dict[str, dict[str, str]] | None = None,
) -> None:
    """Rows as a table on stdout: one column per key, headed by the key in capitals (as in --json)."""
    columns = list(columns)
    if not rows:
        line(empty, "dim")
        return
    grid = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
    narrowest = widest = 2 * (len(columns) - 1)
    for name in columns:
        texts = [name.upper(), *(cell(row.get(name)).plain for row in rows)]
        words = [word for text in texts for word in (text.split() if name in WRAPPED else [text])]
        narrowest += max(cell_len(word) for word in words)
        widest += max(cell_len(text) for text in texts)
        grid.add_column(
            name.upper(), no_wrap=name not in WRAPPED, overflow="fold" if name in WRAPPED else "ellipsis"
        )
    for row in rows:
        cells = []
        for name in columns:
            text = cell(row.get(name))
            style = (styles or {}).get(name, {}).get(text.plain)
            if style:
                text.stylize(style)
            cells.append(text)
        grid.add_row(*cells)
    show(grid, narrowest=narrowest, widest=widest)


STATUS_STYLES = {
    "done": "green",
    "paid": "green",
    "active": "green",
    "completed": "green",
    "resolved": "green",
    "ignored": "dim",
    "received": "cyan",
    "processing": "cyan",
    "acknowledged": "yellow",
    "failed": "red",
    "past_due": "red",
    "unpaid": "red",
    "open": "red",
    "dead": "bold red",
    "disputed": "red",
    "dispute_lost": "bold red",
    "refunded": "yellow",
    "partially_refunded": "yellow",
}

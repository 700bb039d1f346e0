"""Files the CLI writes for staff (the sales view as CSV).

A sales export is opened in a spreadsheet, and some of its text comes from outside: emails and
product names from the funnel's webhook or an imported sales file. A cell that starts with `=`, `+`,
`-`, `@`, a tab, a carriage return or NUL would be run as a formula (OWASP's "CSV injection"; ASVS
1.2.10 adds NUL), so such text gets a leading single quote and is always written in double quotes
(a separator inside it cannot start a new cell). Numbers are never changed and never quoted: an
amount of -500 stays the number -500. The file holds customer emails, so it is made 0600.
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.db import open_private

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0")


def spreadsheet_cell(value: Any) -> Any:
    """`value` as a spreadsheet must show it: text that would start a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def write_sales_csv(path: str | Path, documents: Sequence[dict[str, Any]]) -> int:
    """Write the sales view's JSON rows to `path` as CSV; returns how many rows were written."""
    fd = open_private(path, os.O_WRONLY)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)  # after it was tightened: an older export is never left readable
        handle = os.fdopen(fd, "w", newline="", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=list(documents[0]) if documents else ["charge_id"],
            quoting=csv.QUOTE_NONNUMERIC,
        )
        writer.writeheader()
        writer.writerows({key: spreadsheet_cell(value) for key, value in row.items()} for row in documents)
    return len(documents)

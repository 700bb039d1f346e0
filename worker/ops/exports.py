"""Files the CLI writes for staff (the sales view as CSV)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_sales_csv(path: str | Path, documents: Sequence[dict[str, Any]]) -> int:
    """Write the sales view's JSON rows to `path` as CSV; returns how many rows were written."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(documents[0]) if documents else ["charge_id"])
        writer.writeheader()
        writer.writerows(documents)
    return len(documents)

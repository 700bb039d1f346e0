"""`python -m worker doctor`: what is misconfigured or unreachable, one line per check, with a hint.

Nothing secret is printed: a key shows as "set (test mode)", URLs lose their user, password and query,
and error text is scrubbed of the configured secrets and of anything shaped like a key. A check that
cannot run because an earlier one failed (migrations without a database, the Stripe call without a
usable key) is left out: the failure above it already says what to fix.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

from pydantic import ValidationError

from worker.ops.checks import FAIL, WARN, Check
from worker.ops.service_checks import service_checks
from worker.ops.settings_checks import settings_checks
from worker.settings import Settings, get_settings


def run_doctor(settings: Settings) -> list[Check]:
    """Every check, in the order a person would fix things: settings, database, Redis, Stripe."""
    return settings_checks(settings) + service_checks(settings)


def exit_code(checks: list[Check]) -> int:
    return 1 if any(check.status == FAIL for check in checks) else 0


def format_checks(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        hint = f" -> {check.hint}" if check.hint else ""
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {check.detail}{hint}")
    failed = sum(check.status == FAIL for check in checks)
    warned = sum(check.status == WARN for check in checks)
    lines.append(f"{failed} failed, {warned} warning(s)" if failed or warned else "all checks passed")
    return "\n".join(lines)


def main(json_output: bool = False) -> int:
    """Run every check and print them; 1 when any failed, 0 when all are OK or WARN."""
    with _quiet("alembic.runtime.migration", "stripe"):
        try:
            checks = run_doctor(get_settings())
        except ValidationError as exc:
            # Name each bad variable and why, never the value it holds (it may be a secret).
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            checks = [Check("settings", FAIL, f"invalid: {problems}", "fix these environment variables")]
    if json_output:
        document = {"ok": exit_code(checks) == 0, "checks": [asdict(check) for check in checks]}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        print(format_checks(checks))
    return exit_code(checks)


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Alembic announces its dialect and stripe-python every request at INFO: noise between the lines
    here, and Stripe's error text quotes the end of a rejected key."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

"""Structured logging that can never print a secret, and that names the event being processed.

Every record, whatever library wrote it (ours, Dramatiq's, the `stripe` client's, a structlog logger),
goes through one formatter that:

- adds the log context of the thread or task: while an event is processed (`event_context`, opened by
  the worker's middleware and by `processing.process_event`), its `event_id`, `event_type`, `account`
  and `attempt` are on every line;
- passes every value, and then the whole line, through `redact`, which removes the configured secrets
  and anything shaped like a Stripe key or webhook secret, whole or masked as Stripe prints it, so a
  traceback that happens to include one is still safe to ship.

`LOG_FORMAT=json` writes one JSON object a line (`ts`, `level`, `logger`, `msg`, the context, `exc`);
`text` writes `time LEVEL logger: message key=value ...`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, get_contextvars, merge_contextvars, unbind_contextvars

# A Stripe API key (secret `sk_` or restricted `rk_`), whole or as Stripe's answers print a rejected one:
# the first 8 characters, asterisks, the last 4 ("Invalid API Key provided: sk_live_********y999"; a key
# pasted with a stray quote shows as `"sk_test****...`), or shortened with dots ("sk_live_...y999").
_KEY = r"\b(?:sk|rk)_(?:live|test)(?:_|(?=\*))(?:[A-Za-z0-9*\u2026]|\.+(?=[A-Za-z0-9*\u2026]))+"
_WEBHOOK_SECRET = r"\bwhsec_[A-Za-z0-9+/=*]+"
# What is left of a masked secret without its prefix: a run of asterisks and the visible tail.
_MASKED_TAIL = r"(?<!\*)\*{8,}+[A-Za-z0-9]{1,4}\b"  # from the run's start only: linear time
_SECRET_PATTERN = re.compile(f"{_KEY}|{_WEBHOOK_SECRET}|{_MASKED_TAIL}")
# Stripe's "Invalid API Key provided: X" / "Expired API Key provided: X" quote the key given, whatever its
# shape: X goes, but not the punctuation that ends the sentence.
_REJECTED_KEY = re.compile(r"(\bAPI Key provided: )(\S+)", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?\"')]"
_MARKER = "[redacted]"
_extra_secrets: list[str] = []

# The fields that name the event a line is about; on-call staff search by them.
EVENT_FIELDS = ("event_id", "event_type", "account", "attempt")
# Fields a caller may also attach with `extra=` (the explicit value wins over the context's).
_EXTRA_FIELDS = (*EVENT_FIELDS, "status")
_FIRST_KEYS = ("ts", "level", "logger", "msg")


def redact(text: str) -> str:
    """Return `text` with every known secret and secret-shaped token replaced by a marker."""
    for secret in _extra_secrets:
        text = text.replace(secret, _MARKER)
    text = _REJECTED_KEY.sub(_mask_rejected_key, text)
    return _SECRET_PATTERN.sub(_MARKER, text)


def _mask_rejected_key(match: re.Match[str]) -> str:
    token = match.group(2)
    kept = token[len(token.rstrip(_TRAILING_PUNCTUATION)) :]
    return match.group(1) + _MARKER + kept


# --- the event's log context --------------------------------------------------------------------------


@contextmanager
def event_context(event_id: str, account: str = "") -> Iterator[None]:
    """Every line logged inside (in this thread or task) carries `event_id` and `account`, and whatever
    `bind_event` adds (its type and attempt, once known). Afterwards the context is as it was.

    Inside the context of the same event (the worker's middleware opens one per message) it adds
    nothing and leaves the clean-up to the outer one, so Dramatiq's own lines about the message, written
    after the actor returns, still carry the type and attempt.
    """
    current = get_contextvars()
    if current.get("event_id") == event_id and current.get("account", "") == account:
        yield
        return
    saved = {name: current[name] for name in EVENT_FIELDS if name in current}
    unbind_contextvars(*EVENT_FIELDS)
    bind_contextvars(event_id=event_id, account=account)
    try:
        yield
    finally:
        unbind_contextvars(*EVENT_FIELDS)
        bind_contextvars(**saved)


def bind_event(**fields: Any) -> None:
    """Add to the current event's log context (`event_type`, `attempt`...), or open one without a
    `with` block (the worker's middleware, whose before and after hooks are separate calls)."""
    bind_contextvars(**fields)


def clear_event() -> None:
    """Forget the event's log context (the middleware, once its message is finished)."""
    unbind_contextvars(*EVENT_FIELDS)


# --- formatting ---------------------------------------------------------------------------------------


def _add_record_fields(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    record: logging.LogRecord = event_dict["_record"]
    for name in _EXTRA_FIELDS:  # `extra=` of a stdlib call
        if name in record.__dict__:
            event_dict[name] = record.__dict__[name]
    event_dict["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    event_dict["level"] = record.levelname.lower()
    event_dict["logger"] = record.name
    event_dict["msg"] = event_dict.pop("event", "")
    return event_dict


def _format_exception(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict = structlog.processors.format_exc_info(_logger, _method, event_dict)
    if "exception" in event_dict:
        event_dict["exc"] = event_dict.pop("exception")
    if "stack_info" in event_dict:
        event_dict["stack"] = event_dict.pop("stack_info")
    return event_dict


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _redact_values(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _redacted(value)
        for key, value in event_dict.items()
        if not key.startswith("_") and key != "positional_args"
    }


def _ordered(event_dict: dict[str, Any]) -> dict[str, Any]:
    """ts, level, logger, msg, the event, the rest of the context, then the traceback."""
    entry = {key: event_dict[key] for key in (*_FIRST_KEYS, *EVENT_FIELDS) if key in event_dict}
    entry.update((k, v) for k, v in event_dict.items() if k not in entry and k not in ("exc", "stack"))
    entry.update((k, event_dict[k]) for k in ("exc", "stack") if k in event_dict)
    return entry


def _render_json(_logger: Any, _method: str, event_dict: dict[str, Any]) -> str:
    return json.dumps(_ordered(event_dict), default=str)


def _render_text(_logger: Any, _method: str, event_dict: dict[str, Any]) -> str:
    entry = _ordered(event_dict)
    stamp = datetime.fromisoformat(entry.pop("ts")).astimezone().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    line = f"{stamp} {entry.pop('level').upper()} {entry.pop('logger')}: {entry.pop('msg')}"
    trailer = [entry.pop(key) for key in ("exc", "stack") if key in entry]
    context = " ".join(f"{key}={value}" for key, value in entry.items() if value not in ("", None))
    return "\n".join([f"{line} {context}" if context else line, *trailer])


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter for stdlib records, with the finished line scrubbed once more."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _formatter(fmt: str) -> logging.Formatter:
    return _RedactingFormatter(
        processors=[
            merge_contextvars,
            _add_record_fields,
            _format_exception,
            _redact_values,
            _render_json if fmt == "json" else _render_text,
        ],
    )


def configure_logging(level: str = "INFO", fmt: str = "json", secrets: list[str] | None = None) -> None:
    """Send logs to stderr (stdout stays clean for `--json` output), scrubbed of `secrets`."""
    _extra_secrets[:] = sorted((s for s in secrets or [] if s), key=len, reverse=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # A structlog logger (structlog.get_logger()) goes through the same handler, context and redactor;
    # unconfigured, structlog would print to stdout, unscrubbed.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    # Alembic announces each of its plugins at INFO on every start; only its migrations matter.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; a funnel webhook URL carries its token, so never those.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

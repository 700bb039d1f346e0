"""Stripe's `Idempotency-Key` on POST: the first result is saved and replayed for the same key.

As documented by Stripe: a replay carries `Idempotent-Replayed: true`; reusing a key with other
parameters, or on another endpoint, is a 400 `idempotency_error`; keys are scoped to the API key and
kept 24 hours. Only successful results are saved: a failed validation, a missing object or an injected
fault is not, so the client may retry with the same key (Stripe also saves 500s from requests that
failed mid-way; here those would only be the stand-in's own bugs). stripe-python sends a fresh key
with every POST, so the cache also drops its oldest keys past `max_keys`, keeping a long benchmark's
memory flat.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from stripe_standin.errors import StripeAPIError

KEEP_SECONDS = 24 * 60 * 60
MAX_KEYS = 100_000


@dataclass(frozen=True)
class Saved:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: bytes
    request_id: str
    saved_at: float


def _idempotency_error(message: str) -> StripeAPIError:
    return StripeAPIError(400, message, type="idempotency_error")


class IdempotencyCache:
    def __init__(self, keep_seconds: float = KEEP_SECONDS, max_keys: int = MAX_KEYS) -> None:
        self._lock = threading.Lock()
        self._saved: OrderedDict[tuple[str, str], Saved] = OrderedDict()
        self._keep = keep_seconds
        self._max_keys = max_keys

    def replay(self, api_key: str, key: str, method: str, path: str, params: dict[str, Any]) -> Saved | None:
        """The saved result to send again, None for a new key; raises for a key reused differently."""
        with self._lock:
            saved = self._saved.get((api_key, key))
            if saved is not None and time.time() - saved.saved_at > self._keep:
                del self._saved[(api_key, key)]
                saved = None
        if saved is None:
            return None
        if (saved.method, saved.path) != (method, path):
            raise _idempotency_error(
                "Keys for idempotent requests can only be used for the same endpoint they were first used "
                f"for ('{saved.method} {saved.path}' vs '{method} {path}'). "
                f"Try using a key other than '{key}' if you meant to execute a different request."
            )
        if saved.params != params:
            raise _idempotency_error(
                "Keys for idempotent requests can only be used with the same parameters they were first used "
                f"with. Try using a key other than '{key}' if you meant to execute a different request."
            )
        return saved

    def save(self, api_key: str, key: str, saved: Saved) -> None:
        with self._lock:
            self._saved[(api_key, key)] = saved
            while len(self._saved) > self._max_keys:
                self._saved.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._saved.clear()

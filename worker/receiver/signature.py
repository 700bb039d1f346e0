"""Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`.

Written out rather than taken from stripe-python because its check accepts timestamps from any point in
the future and turns itself off when the tolerance is None; ours rejects both directions and cannot be
switched off.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class SignatureError(ValueError):
    """The request does not carry a valid signature for any configured secret."""


class StaleTimestamp(SignatureError):
    """The signature's timestamp is outside the tolerance window (a replay, or a clock that is off)."""


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value, exactly as Stripe builds it (tests, benchmarks and the demo)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={compute_signature(payload, secret, timestamp)}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            # isascii(): "²" is a digit to str.isdigit() but not to int().
            if timestamp is not None or not (value.isascii() and value.isdigit()) or len(value) > 12:
                raise SignatureError("malformed Stripe-Signature header")
            timestamp = int(value)
        elif key == "v1" and _HEX_SIGNATURE.fullmatch(value):
            # Anything but 64 hex digits cannot match, and compare_digest refuses non-ASCII text.
            signatures.append(value)

    if timestamp is None or not signatures:
        raise SignatureError("malformed Stripe-Signature header")
    return timestamp, signatures


def verify(
    payload: bytes,
    header: str | None,
    secrets: list[str],
    *,
    tolerance_seconds: int,
    now: float | None = None,
) -> int:
    """Check `header` against every secret (several during a rotation); return the signed timestamp."""
    if not secrets:
        raise SignatureError("no webhook secret configured")
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp, signatures = _parse_header(header)
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        raise StaleTimestamp("timestamp outside the tolerance window")
    for secret in secrets:
        expected = compute_signature(payload, secret, timestamp)
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return timestamp
    raise SignatureError("no signature matches")

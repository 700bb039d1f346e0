"""What one `doctor` check found, and the helpers that keep secrets out of what it says."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from worker.ops.logs import redact
from worker.settings import Settings

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# The shape of a usable API key; its mode is shown, the key never is. After its prefix a key is opaque:
# Stripe keeps the right to change its length (up to 255 characters) and characters, and working keys
# carry underscores ("sk_test_51Abc_def..."). Whether the key works is the Stripe API check's to say.
API_KEY = re.compile(r"^(sk|rk)_(test|live)_[!-~]{1,247}$")
# Stripe masks a rejected key as "sk_test_****1234"; even that tail is not ours to print.
_KEY_LIKE = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_*]*")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    hint: str = ""


def scrub(settings: Settings, error: BaseException | str) -> str:
    """Error text safe to print: no configured secret, nothing shaped like a key, not too long."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    for secret in settings.secret_values():
        text = text.replace(secret, "[redacted]")
    # Key shapes first: the log redactor may take a key's head and leave what follows an underscore.
    return redact(_KEY_LIKE.sub("[redacted]", text))[:300]


def reason(settings: Settings, exc: BaseException) -> str:
    """The first line of what the driver said ("Connection refused", "password authentication failed")."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    lines = str(cause).strip().splitlines()
    return scrub(settings, f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__)


def safe_url(url: str) -> str:
    """scheme://host:port/path: no user, password or query (which can carry a password too)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"

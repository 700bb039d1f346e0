"""Where the receiver's webhook secrets come from, including the dev/demo mode's generated one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from worker.settings import Settings

DEV_SECRET_FILE = Path("var/dev-webhook-secret")


def dev_webhook_secret(path: Path = DEV_SECRET_FILE) -> str:
    """A local signing secret for DEV_MODE, made once and kept readable by the owner only."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = "whsec_dev" + secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def webhook_secrets(settings: Settings) -> list[str]:
    """The configured secrets; in DEV_MODE without one, the generated local secret. Never none."""
    configured = settings.webhook_secrets()
    if configured or not settings.dev_mode:
        return configured
    return [dev_webhook_secret()]

"""Where the receiver's webhook secrets come from, including the dev/demo mode's generated one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from models.db import PRIVATE_FILE_MODE, make_private_dirs, tighten_existing
from worker.settings import Settings

DEV_SECRET_FILE = Path("var/dev-webhook-secret")


def dev_webhook_secret(path: Path = DEV_SECRET_FILE) -> str:
    """A local signing secret for DEV_MODE, made once and kept readable by the owner only."""
    return generated_secret(path, lambda: "whsec_dev" + secrets.token_hex(24))


def generated_secret(path: Path, make) -> str:
    """The secret kept in `path`, made by `make()` the first time.

    The file is 0600 and a folder made for it 0700, whatever the umask; a file others can read is
    tightened when it is read (a log line says so).
    """
    if path.exists():
        tighten_existing(path)
        return path.read_text().strip()
    make_private_dirs(path.parent)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # open()'s mode is cut by the umask
        handle.write(value + "\n")
    return value


def webhook_secrets(settings: Settings) -> list[str]:
    """The configured secrets; in DEV_MODE without one, the generated local secret. Never none."""
    configured = settings.webhook_secrets()
    if configured or not settings.dev_mode:
        return configured
    return [dev_webhook_secret()]

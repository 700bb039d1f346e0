"""`doctor` checks that read only the settings: secrets present and well shaped, never shown."""

from __future__ import annotations

import re
import stat
from urllib.parse import urlsplit

from worker.ops.checks import API_KEY, FAIL, OK, WARN, Check
from worker.receiver.devsecret import DEV_SECRET_FILE
from worker.settings import Settings

_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
_MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def settings_checks(settings: Settings) -> list[Check]:
    return [
        webhook_secret(settings),
        api_key(settings),
        alert_webhook(settings),
        funnel_token(settings),
        dashboard_cookies(settings),
    ]


def dashboard_cookies(settings: Settings) -> Check:
    """The staff dashboard's session cookie: only over HTTPS once anyone beyond this machine can reach it."""
    name = "dashboard"
    local = settings.host in ("127.0.0.1", "localhost", "::1")
    if settings.dashboard_secure_cookies:
        return Check(name, OK, "session cookies are sent over HTTPS only")
    if local:
        return Check(name, OK, f"served on {settings.host} only (plain HTTP is fine on this machine)")
    return Check(
        name,
        WARN,
        "HOST is not a loopback address: /app/ is reachable beyond this machine, with session cookies"
        " allowed over plain HTTP",
        "serve the web process behind HTTPS and set DASHBOARD_SECURE_COOKIES=true",
    )


def webhook_secret(settings: Settings) -> Check:
    name = "webhook secret"
    secrets = settings.webhook_secrets()
    if not secrets:
        dev_secret = _dev_secret(settings)
        if dev_secret is not None:
            return dev_secret
        return Check(
            name,
            FAIL,
            "STRIPE_WEBHOOK_SECRET is not set: the receiver refuses to start",
            "set it to your endpoint's signing secret (Dashboard > Developers > Webhooks), or DEV_MODE=1",
        )
    if not all(secret.startswith("whsec_") for secret in secrets):
        return Check(
            name,
            WARN,
            "set, but not shaped like a signing secret (whsec_...)",
            "copy the endpoint's signing secret, not an API key, into STRIPE_WEBHOOK_SECRET",
        )
    if len(secrets) > 1:
        return Check(name, OK, f"set ({len(secrets)} secrets: a rotation; drop the old one when it is over)")
    return Check(name, OK, "set")


def _dev_secret(settings: Settings) -> Check | None:
    """Dev mode's generated secret. `make run` (`python -m worker run`) without STRIPE_WEBHOOK_SECRET
    writes DEV_SECRET_FILE and gives only its own processes DEV_MODE=1, so the shell the doctor runs in
    may not say DEV_MODE. None when there is neither."""
    name, path = "webhook secret", DEV_SECRET_FILE
    refused = "Stripe's own deliveries are refused"
    hint = "outside local demos set STRIPE_WEBHOOK_SECRET (whsec_..., or the one `stripe listen` prints)"
    if not path.exists():
        if settings.dev_mode:
            return Check(
                name, WARN, f"not set; DEV_MODE signs with a generated local secret: {refused}", hint
            )
        return None
    remake = f"delete {path}; `make run` makes a new one"
    try:
        held = path.read_text().strip()
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return Check(name, FAIL, f"{path} cannot be read ({exc.strerror})", remake)
    if not held.startswith("whsec_"):
        return Check(name, FAIL, f"{path} holds no signing secret (whsec_...)", remake)
    who = "DEV_MODE signs" if settings.dev_mode else "`make run` runs in dev mode, signing"
    detail = f"not set; {who} with the secret generated in {path}: {refused}"
    if mode & 0o077:
        detail += f"; that file is mode {mode:04o}, others can read it"
        hint = f"chmod 600 {path}; {hint}"
    if not settings.dev_mode:
        hint += "; `python -m worker web` alone needs it, or DEV_MODE=1"
    return Check(name, WARN, detail, hint)


def api_key(settings: Settings) -> Check:
    name = "Stripe API key"
    if settings.stripe_api_key is None:
        return Check(
            name,
            FAIL,
            "STRIPE_API_KEY is not set: handlers that fetch from Stripe, replay of unknown ids "
            "and the nightly reconciliation fail",
            "set it to a secret (sk_...) or restricted (rk_...) key",
        )
    shape = API_KEY.match(settings.stripe_api_key.get_secret_value())
    if shape is None:
        return Check(
            name,
            FAIL,
            "set, but not a secret or restricted key (sk_... / rk_...)",
            "a publishable key (pk_...) cannot read events; copy a secret or restricted key",
        )
    restricted = ", restricted key" if shape.group(1) == "rk" else ""
    return Check(name, OK, f"set ({shape.group(2)} mode{restricted})")


def alert_webhook(settings: Settings) -> Check:
    name = "alert webhook"
    if settings.alert_webhook_url is None:
        return Check(
            name,
            WARN,
            "ALERT_WEBHOOK_URL is not set: alerts are stored but nobody is told",
            "set it to a Slack incoming-webhook URL",
        )
    parts = urlsplit(settings.alert_webhook_url.get_secret_value())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check(name, FAIL, "set, but not an http(s) URL", "use the full https://... webhook URL")
    if parts.scheme == "http":
        return Check(name, WARN, f"set ({parts.hostname}) over plain http", "use its https:// URL")
    return Check(name, OK, f"set ({parts.hostname})")


def funnel_token(settings: Settings) -> Check:
    name = "funnel token"
    if settings.funnel_webhook_token is None:
        return Check(
            name,
            WARN,
            "FUNNEL_WEBHOOK_TOKEN is not set: /webhooks/funnel is off",
            f"to record ClickFunnels purchases, set it to the output of {_MAKE_TOKEN}",
        )
    token = settings.funnel_webhook_token.get_secret_value()
    if len(token) < 16:
        return Check(
            name,
            FAIL,
            f"{len(token)} characters: the receiver refuses to start (16 at least)",
            f"use {_MAKE_TOKEN}",
        )
    if not _URL_SAFE.match(token):
        return Check(name, WARN, "has characters a URL must escape", f"use {_MAKE_TOKEN}")
    if len(token) < 32:
        return Check(
            name, WARN, f"{len(token)} characters; it is the endpoint's only guard", f"use {_MAKE_TOKEN}"
        )
    return Check(name, OK, f"set ({len(token)} characters)")

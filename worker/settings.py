"""Every setting the worker reads, from environment variables (and nothing else reads the environment).

The README's "Configuration" table documents each variable; keep the two in step.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The API version every request we make is pinned to: the one stripe-python 16.1.0 was generated for.
# Webhook payloads still arrive in the version of the seller's endpoint, so handlers read both shapes.
PINNED_STRIPE_API_VERSION = "2026-10-28.endive"

_ACCOUNT_ID = re.compile(r"^acct_[A-Za-z0-9]{1,250}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Storage and queue
    database_url: str = "sqlite:///var/worker.db"
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker: Literal["redis", "stub"] = "redis"

    # Stripe
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    stripe_api_version: str = PINNED_STRIPE_API_VERSION
    stripe_max_attempts: int = Field(default=4, ge=1, le=10)
    stripe_timeout_seconds: float = Field(default=20.0, gt=0)
    stripe_max_backoff_seconds: float = Field(default=30.0, gt=0)

    # ClickFunnels does not sign its webhooks; the URL carries this token instead.
    funnel_webhook_token: SecretStr | None = None

    # Alerts: a Slack-compatible incoming webhook (its URL is a secret: anyone with it can post).
    alert_webhook_url: SecretStr | None = None
    alert_timeout_seconds: float = Field(default=10.0, gt=0)
    duplicate_window_days: int = Field(default=30, ge=1, le=3650)
    # Under Connect, one email can be a customer of several sellers: kept apart unless this is true.
    merge_customers_across_accounts: bool = False

    # Nightly reconciliation
    reconcile_at: str = Field(default="03:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # UTC, HH:MM
    reconcile_initial_days: int = Field(default=30, ge=1, le=3650)
    # Connect accounts the nightly run lists (comma-separated acct_... ids); empty: the platform only.
    # Checked when the run starts (`reconcile_account_ids`), so a typo here stops only the nightly run.
    reconcile_accounts: str = ""

    # Receiver
    host: str = "127.0.0.1"
    port: int = 8000
    webhook_tolerance_seconds: int = Field(default=300, ge=1)
    webhook_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    dev_mode: bool = False
    # When set, GET /metrics needs `Authorization: Bearer <token>` (the figures reveal sales volume).
    metrics_token: SecretStr | None = None

    # Processing
    event_max_attempts: int = Field(default=10, ge=1)
    event_min_backoff_ms: int = Field(default=5_000, ge=0)
    event_max_backoff_ms: int = Field(default=600_000, ge=1)
    worker_processes: int = Field(default=2, ge=1)
    worker_threads: int = Field(default=4, ge=1)

    # Sweeper (clock process)
    sweep_interval_seconds: int = Field(default=60, ge=1)
    sweep_received_grace_seconds: int = Field(default=30, ge=0)
    # Longer than the longest handler run (~3 min with the default Stripe timeout and retries).
    sweep_processing_stale_seconds: int = Field(default=300, ge=1)

    sweep_failed_stale_seconds: int = Field(default=1800, ge=1)

    # Staff dashboard (/app/ on the web process)
    # Signs session cookies. Unset: one is generated into var/dashboard-secret (0600) on first use, which
    # suits one host; set it (32+ random characters) when several hosts serve the dashboard.
    dashboard_secret_key: SecretStr | None = None
    dashboard_session_minutes: int = Field(default=480, ge=1, le=60 * 24 * 30)
    # Mark the session cookie Secure: set true whenever the dashboard is served over HTTPS.
    dashboard_secure_cookies: bool = False
    # Failed sign-ins: an account locks after this many in a row, for sign_in_lockout_minutes;
    # one client address may fail at most sign_in_max_failures_per_address times in that window.
    sign_in_max_failures: int = Field(default=5, ge=1, le=100)
    sign_in_max_failures_per_address: int = Field(default=20, ge=1, le=10_000)
    sign_in_lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # Dates on the dashboard are shown in this IANA time zone (stored times stay UTC).
    display_timezone: str = "UTC"
    # The overview warns when no webhook has arrived for this long.
    webhook_silence_hours: float = Field(default=6.0, gt=0, le=24 * 30)
    # Also write a short refund history into the Stripe customer's metadata.
    mirror_notes_to_stripe: bool = False

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("display_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"DISPLAY_TIMEZONE: {value!r} is not an IANA time zone (e.g. UTC, Asia/Tokyo)"
            ) from None
        return value

    @field_validator("stripe_api_base")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def webhook_secrets(self) -> list[str]:
        """The accepted endpoint secrets; several during a rotation."""
        if self.stripe_webhook_secret is None:
            return []
        raw = self.stripe_webhook_secret.get_secret_value()
        return [part.strip() for part in raw.split(",") if part.strip()]

    def reconcile_account_ids(self) -> list[str]:
        """The accounts the nightly run lists, in order: `[""]` (the platform) when none are set.

        Raises ValueError with a one-line message naming RECONCILE_ACCOUNTS when an id is malformed.
        """
        ids = [part.strip() for part in self.reconcile_accounts.split(",") if part.strip()]
        for position, account in enumerate(ids, start=1):
            if not _ACCOUNT_ID.match(account):
                # Shown only when it is a mistyped id: a key pasted into the wrong variable is not.
                shown = repr(account[:60]) if account.startswith("acct_") else f"entry {position}"
                raise ValueError(
                    f"RECONCILE_ACCOUNTS: {shown} is not a Stripe account id (acct_ followed by letters"
                    " and digits); separate ids with commas, or leave it empty for the platform account"
                )
        return list(dict.fromkeys(ids)) or [""]

    def secret_values(self) -> list[str]:
        """Every configured secret, so log and error output can be scrubbed of them."""
        values = list(self.webhook_secrets())
        for secret in (
            self.stripe_api_key,
            self.funnel_webhook_token,
            self.alert_webhook_url,
            self.metrics_token,
            self.dashboard_secret_key,
        ):
            if secret is not None:
                values.append(secret.get_secret_value())
        return [v for v in values if len(v) >= 6]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""Dramatiq actors. Each takes ids, never objects, and is safe to run twice."""

from __future__ import annotations

import dramatiq

from worker import runtime
from worker.jobs import alert_sink, processing
from worker.jobs.broker import ALERTS_QUEUE, EVENTS_QUEUE, broker  # noqa: F401  (the broker must be set before @actor)
from worker.ops.logs import configure_logging
from worker.settings import get_settings

_settings = get_settings()
# The dramatiq CLI imports this module in each worker process: log there as everywhere else (JSON,
# scrubbed of secrets, with the event id).
configure_logging(_settings.log_level, _settings.log_format, _settings.secret_values())
runtime.configure_domain()


@dramatiq.actor(
    queue_name=EVENTS_QUEUE,
    # The event row's attempt count decides when to give up (it survives lost messages and sweeps);
    # Dramatiq's count only needs to be at least as high.
    max_retries=_settings.event_max_attempts,
    min_backoff=_settings.event_min_backoff_ms,
    max_backoff=_settings.event_max_backoff_ms,
    throws=(processing.EventGaveUp, processing.EventNotFound),
)
def process_event(event_id: str, account: str = "") -> None:
    processing.process_event(
        runtime.database(),
        event_id,
        account,
        max_attempts=get_settings().event_max_attempts,
        stripe=runtime.stripe_reader,
        on_alerts=send_alerts,
    )


@dramatiq.actor(
    queue_name=ALERTS_QUEUE,
    # A few quick retries ride out a blip; a longer outage is left to the clock, which re-sends
    # undelivered alerts every 15 minutes.
    max_retries=5,
    min_backoff=2_000,
    max_backoff=300_000,
)
def deliver_alert(alert_id: int) -> None:
    settings = get_settings()
    url = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else None
    alert_sink.deliver(runtime.database(), alert_id, url, timeout=settings.alert_timeout_seconds)


def send_alerts(alert_ids: list[int]) -> None:
    for alert_id in alert_ids:
        deliver_alert.send(alert_id)

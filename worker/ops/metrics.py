"""`GET /metrics` of the receiver: prometheus_client collectors on a registry of the app's own.

Each app gets its own `CollectorRegistry` (`receiver_registry`), never prometheus_client's global one, so
two apps in one process (the tests build dozens) keep their figures apart. Two sources:

- webhook requests, counted in the web process where they arrive (`WebhookCounter`; one increment
  under a lock per request, nothing else on the hot path);
- processing, read from the event log (`worker.ops.event_stats`) and Redis by custom collectors at
  scrape time, because events are processed in other processes. A database or Redis that is down turns
  its `*_up` gauge to 0; the scrape itself still answers, so the webhook counters stay visible during
  the outage.

The worker processes export Dramatiq's own figures on a port of their own (`worker.jobs.broker`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from models import Database
from worker.ops import event_stats
from worker.ops.logs import redact

log = logging.getLogger(__name__)

# Prometheus' text format, version 0.0.4: what `generate_latest` writes for these (legacy-valid) names.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "stripe_worker_"

# Listed up front so every series exists (at 0) from the first scrape: rate() and increase() then see
# the first rejection instead of a series appearing out of nowhere.
REJECT_REASONS = {
    "stripe": (
        "too_large",
        "bad_signature",
        "stale_timestamp",
        "malformed",
        "not_an_event",
        "db_unavailable",
    ),
    "funnel": ("disabled", "bad_token", "too_large", "malformed", "db_unavailable"),
}
DELAY_QUANTILES = (0.5, 0.9, 0.99, 1.0)

QueueDepths = Callable[[], dict[str, int]]
# The receiver's own view of the database: False once its writes fail (see `EventLogCollector`).
WriteHealth = Callable[[], bool]

WEBHOOKS_HELP = "Webhook requests by endpoint, outcome and reason."
DATABASE_UP_HELP = (
    "1 when the event log could be read for this scrape (and the receiver's writes are healthy, "
    "when it reports them); 0 otherwise."
)
EVENTS_OPEN_HELP = "Events not yet done or ignored (received, processing, failed, dead), by status and type."
RECEIVED_LAST_HOUR_HELP = "Events received in the last hour, by their status now and type."
OLDEST_HELP = "Age of the oldest received, processing or failed event; 0 when none is waiting."
DELAY_HELP = (
    "Received-to-done time of the events received in the last hour, as quantiles over that sliding "
    "window (quantile 1 is the maximum; NaN when none finished). No _sum/_count: the window's count is "
    'events_received_last_hour{status="done"}.'
)
REDIS_UP_HELP = "1 when Redis answered the queue-depth query."
QUEUE_DEPTH_HELP = (
    "Messages in a Dramatiq queue not yet acknowledged: waiting, delayed for a retry or in progress."
)


def _label_number(value: float) -> str:
    """A quantile as a label value: "0.5", "0.99", and "1" (not "1.0")."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class QuantileSummary(SummaryMetricFamily):
    """A summary of precomputed quantiles only.

    prometheus_client's `SummaryMetricFamily` takes only `_count` and `_sum`; a quantile is one more
    sample of the family's own name with a `quantile` label, as Prometheus' text format writes it.
    """

    def add_quantile(self, quantile: float, value: float) -> None:
        self.samples.append(Sample(self.name, {"quantile": _label_number(quantile)}, value))


class WebhookCounter:
    """Webhook requests by endpoint (stripe|funnel), outcome (accepted|duplicate|rejected) and reason.

    A prometheus_client collector: `collect` gives the counts as they stand.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        for endpoint, reasons in REJECT_REASONS.items():
            for outcome in ("accepted", "duplicate"):
                self._counts[(endpoint, outcome, "")] = 0
            for reason in reasons:
                self._counts[(endpoint, "rejected", reason)] = 0

    def inc(self, endpoint: str, outcome: str, reason: str = "") -> None:
        key = (endpoint, outcome, reason)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            PREFIX + "webhooks", WEBHOOKS_HELP, labels=("endpoint", "outcome", "reason")
        )

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = sorted(self._counts.items())
        # An accepted or duplicate request has no reason: reason="" is the same series to Prometheus as
        # no reason label at all (an empty label value is no label).
        family = next(self.describe())
        for labels, value in counts:
            family.add_metric(labels, value)
        yield family


class EventLogCollector:
    """Processing figures read from the event log at scrape time (every worker process, any machine).

    `write_health`, when given, is the receiver's own view of the database (False once its writes
    fail): `database_up` is 1 only when the event log could be read now *and* it says True.
    """

    def __init__(self, db: Database, write_health: WriteHealth | None = None) -> None:
        self.db = db
        self.write_health = write_health

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(PREFIX + "database_up", DATABASE_UP_HELP)
        yield GaugeMetricFamily(PREFIX + "events_open", EVENTS_OPEN_HELP, labels=("status", "type"))
        yield GaugeMetricFamily(
            PREFIX + "events_received_last_hour", RECEIVED_LAST_HOUR_HELP, labels=("status", "type")
        )
        yield GaugeMetricFamily(PREFIX + "oldest_unprocessed_event_age_seconds", OLDEST_HELP)
        yield QuantileSummary(PREFIX + "processing_delay_seconds", DELAY_HELP)

    def collect(self) -> Iterator[Metric]:
        try:
            stats = event_stats.read_stats(self.db)
        except Exception as exc:
            log.warning("metrics: event log unavailable (%s)", type(exc).__name__)
            yield GaugeMetricFamily(PREFIX + "database_up", DATABASE_UP_HELP, value=0)
            return
        yield GaugeMetricFamily(PREFIX + "database_up", DATABASE_UP_HELP, value=int(self._writes_healthy()))
        yield from event_log_families(stats)

    def _writes_healthy(self) -> bool:
        if self.write_health is None:
            return True
        try:
            return bool(self.write_health())
        except Exception as exc:
            log.warning("metrics: the receiver's write health could not be read (%s)", type(exc).__name__)
            return False


def event_log_families(stats: event_stats.EventLogStats) -> list[Metric]:
    """The event log's figures as metric families (without `database_up`)."""
    open_events = GaugeMetricFamily(PREFIX + "events_open", EVENTS_OPEN_HELP, labels=("status", "type"))
    for (status, event_type), count in sorted(stats.open.items()):
        open_events.add_metric((status, event_type), count)
    recent = GaugeMetricFamily(
        PREFIX + "events_received_last_hour", RECEIVED_LAST_HOUR_HELP, labels=("status", "type")
    )
    for (status, event_type), count in sorted(stats.recent.items()):
        recent.add_metric((status, event_type), count)
    oldest = GaugeMetricFamily(
        PREFIX + "oldest_unprocessed_event_age_seconds",
        OLDEST_HELP,
        value=round(stats.oldest_unprocessed_age, 3),
    )
    delay = QuantileSummary(PREFIX + "processing_delay_seconds", DELAY_HELP)
    for quantile in DELAY_QUANTILES:
        value = stats.quantile(quantile)
        # OpenMetrics: "If there are no events in the relevant timeframe, the value for a quantile MUST
        # be NaN."
        delay.add_quantile(quantile, math.nan if value is None else round(value, 3))
    return [open_events, recent, oldest, delay]


class QueueCollector:
    """`redis_up` and the depth of each Dramatiq queue, asked of Redis at scrape time."""

    def __init__(self, queue_depths: QueueDepths) -> None:
        self.queue_depths = queue_depths

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(PREFIX + "redis_up", REDIS_UP_HELP)
        yield GaugeMetricFamily(PREFIX + "queue_depth", QUEUE_DEPTH_HELP, labels=("queue",))

    def collect(self) -> Iterator[Metric]:
        try:
            depths = self.queue_depths()
        except Exception as exc:
            log.warning("metrics: Redis unavailable (%s)", type(exc).__name__)
            yield GaugeMetricFamily(PREFIX + "redis_up", REDIS_UP_HELP, value=0)
            return
        yield GaugeMetricFamily(PREFIX + "redis_up", REDIS_UP_HELP, value=1)
        depth = GaugeMetricFamily(PREFIX + "queue_depth", QUEUE_DEPTH_HELP, labels=("queue",))
        for name, value in sorted(depths.items()):
            depth.add_metric((name,), value)
        yield depth


def receiver_registry(
    webhooks: WebhookCounter,
    db: Database,
    queue_depths: QueueDepths | None = None,
    *,
    write_health: WriteHealth | None = None,
) -> CollectorRegistry:
    """The receiver app's registry: build it once per app, next to its `WebhookCounter`.

    Queue depths (and `redis_up`) are shown only when `queue_depths` is given. `write_health` is the
    hook for the receiver's write health (see `EventLogCollector`).
    """
    registry = CollectorRegistry(auto_describe=False)
    collectors: list[Collector] = [webhooks, EventLogCollector(db, write_health)]
    if queue_depths is not None:
        collectors.append(QueueCollector(queue_depths))
    for collector in collectors:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> str:
    """The /metrics page of `registry`. Blocking (database and Redis): run it in a thread."""
    # No figure holds a configured value, but an event type is outside data: scrub it like a log line.
    return redact(generate_latest(registry).decode("utf-8"))


def scrape(
    webhooks: WebhookCounter,
    db: Database,
    queue_depths: QueueDepths | None = None,
    write_health: WriteHealth | None = None,
) -> str:
    """The whole /metrics page, for a caller that keeps no registry (a registry costs microseconds to
    build, and every figure is collected at scrape time anyway). Prefer `receiver_registry` + `render`."""
    return render(receiver_registry(webhooks, db, queue_depths, write_health=write_health))

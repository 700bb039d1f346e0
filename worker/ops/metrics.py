"""`GET /metrics`: Prometheus' text exposition format (version 0.0.4), written out by hand.

Not prometheus_client: every figure here is a counter or a gauge with a few labels, the format of those
is a few lines, and a counter object per app (no process-wide registry) keeps each test's app apart.
Two sources:

- webhook requests, counted in the web process where they arrive (`WebhookCounter`; one increment
  under a lock per request, nothing else on the hot path);
- processing, read from the event log (`worker.ops.event_stats`) and Redis at scrape time, because events
  are processed in other processes. A database or Redis that is down turns its `*_up` gauge to 0; the
  scrape itself still answers, so the webhook counters stay visible during the outage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from models import Database
from worker.ops import event_stats
from worker.ops.logs import redact

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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


@dataclass
class Family:
    name: str  # without PREFIX
    kind: str  # "counter" or "gauge"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class WebhookCounter:
    """Webhook requests by endpoint (stripe|funnel), outcome (accepted|duplicate|rejected) and reason."""

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

    def family(self) -> Family:
        with self._lock:
            counts = dict(self._counts)
        samples = [
            ({"endpoint": endpoint, "outcome": outcome, "reason": reason}, value)
            for (endpoint, outcome, reason), value in sorted(counts.items())
        ]
        help_text = "Webhook requests by endpoint, outcome and reason."
        return Family("webhooks_total", "counter", help_text, samples)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        name = PREFIX + family.name
        lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in family.samples:
            # An empty label value means "no such label" to Prometheus; leaving it out reads better.
            pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items() if val)
            lines.append(f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _event_log_families(stats: event_stats.EventLogStats) -> list[Family]:
    return [
        Family(
            "events_open",
            "gauge",
            "Events not yet done or ignored (received, processing, failed, dead), by status and type.",
            [({"status": s, "type": t}, n) for (s, t), n in sorted(stats.open.items())],
        ),
        Family(
            "events_received_last_hour",
            "gauge",
            "Events received in the last hour, by their status now and type.",
            [({"status": s, "type": t}, n) for (s, t), n in sorted(stats.recent.items())],
        ),
        Family(
            "oldest_unprocessed_event_age_seconds",
            "gauge",
            "Age of the oldest received, processing or failed event; 0 when none is waiting.",
            [({}, round(stats.oldest_unprocessed_age, 3))],
        ),
        Family(
            "processing_delay_seconds",
            "gauge",
            "Received-to-done time of events received in the last hour (quantile 1 is the maximum).",
            [
                ({"quantile": _number(q)}, round(value, 3))
                for q in DELAY_QUANTILES
                if (value := stats.quantile(q)) is not None
            ],
        ),
    ]


def scrape(webhooks: WebhookCounter, db: Database, queue_depths: QueueDepths | None = None) -> str:
    """The whole /metrics page. Blocking (database and Redis): run it in a thread."""
    families = [webhooks.family()]
    try:
        stats = event_stats.read_stats(db)
    except Exception as exc:
        log.warning("metrics: event log unavailable (%s)", type(exc).__name__)
        families.append(Family("database_up", "gauge", "1 when the event log could be read.", [({}, 0)]))
    else:
        families.append(Family("database_up", "gauge", "1 when the event log could be read.", [({}, 1)]))
        families.extend(_event_log_families(stats))
    if queue_depths is not None:
        families.extend(_queue_families(queue_depths))
    # The output holds no configured value, but an event type is outside data: scrub it like a log line.
    return redact(render(families))


def _queue_families(queue_depths: QueueDepths) -> list[Family]:
    up = Family("redis_up", "gauge", "1 when Redis answered the queue-depth query.")
    try:
        depths = queue_depths()
    except Exception as exc:
        log.warning("metrics: Redis unavailable (%s)", type(exc).__name__)
        up.samples.append(({}, 0))
        return [up]
    up.samples.append(({}, 1))
    depth = Family(
        "queue_depth",
        "gauge",
        "Messages in a Dramatiq queue not yet acknowledged: waiting, delayed for a retry or in progress.",
        [({"queue": name}, value) for name, value in sorted(depths.items())],
    )
    return [up, depth]

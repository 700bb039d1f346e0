"""The Dramatiq broker, set once before any actor is imported.

Real Redis in every deployment and in the integration tests; Dramatiq's StubBroker when BROKER=stub
(unit tests).
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import CurrentMessage

from worker.settings import Settings, get_settings

EVENTS_QUEUE = "events"


def build_broker(settings: Settings) -> dramatiq.Broker:
    if settings.broker == "stub":
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
    else:
        # Short connect timeout: when Redis is down the receiver must still answer Stripe quickly
        # (the event is already committed and the sweeper enqueues it later).
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=1.0, socket_timeout=10.0, health_check_interval=30
        )
        broker = RedisBroker(client=client)
    broker.add_middleware(CurrentMessage())
    return broker


def queue_depth(broker: dramatiq.Broker, queue_name: str = EVENTS_QUEUE) -> int:
    """Messages waiting in the queue, delayed retries included."""
    if isinstance(broker, StubBroker):
        return sum(
            broker.queues[name].qsize() for name in (queue_name, dq_name(queue_name)) if name in broker.queues
        )
    return sum(broker.do_qsize(name) for name in (queue_name, dq_name(queue_name)))


def ping(broker: dramatiq.Broker) -> None:
    if isinstance(broker, RedisBroker):
        broker.client.ping()


broker = build_broker(get_settings())
dramatiq.set_broker(broker)

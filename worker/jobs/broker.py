"""The Dramatiq broker, set once before any actor is imported.

Real Redis in every deployment and in the integration tests; Dramatiq's StubBroker when BROKER=stub
(unit tests).
"""

from __future__ import annotations

from uuid import uuid4

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import CurrentMessage
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.settings import Settings, get_settings

EVENTS_QUEUE = "events"
ALERTS_QUEUE = "alerts"


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


def fail_fast(broker: dramatiq.Broker, timeout_seconds: float = 1.0) -> None:
    """Make this process's Redis calls give up after `timeout_seconds`, without redis-py's retries.

    For the receiver: when Redis hangs, an enqueue must not hold Stripe's request for the default
    10 s. The event is committed before the enqueue, so giving up loses nothing (the sweeper
    enqueues it later).
    """
    if isinstance(broker, RedisBroker):
        pool = broker.client.connection_pool
        pool.connection_kwargs.update(socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds)
        broker.client.set_retry(Retry(NoBackoff(), 0))
        pool.disconnect()


def enqueue_many(broker: dramatiq.Broker, actor: dramatiq.Actor, arg_lists: list[tuple]) -> None:
    """Send one message to `actor` per argument tuple, in one Redis round trip.

    What `actor.send(*args)` does for each, but pipelined: the receiver enqueues a whole committed batch
    at once. This calls the Redis broker's own `dispatch` script the way `RedisBroker.enqueue` does
    (dramatiq 2.2.1, pinned); the integration tests run real workers on what it enqueues.
    """
    if not isinstance(broker, RedisBroker):
        for args in arg_lists:
            actor.send(*args)
        return
    pipeline = broker.client.pipeline(transaction=False)
    dispatch = broker.scripts["dispatch"]
    messages = []
    for args in arg_lists:
        message = actor.message(*args).copy(options={"redis_message_id": str(uuid4())})
        broker.emit_before("enqueue", message, None)
        dispatch(
            keys=[broker.namespace],
            args=[
                "enqueue",
                current_millis(),
                message.queue_name,
                broker.broker_id,
                broker.heartbeat_timeout,
                broker.dead_message_ttl,
                0,
                broker._max_unpack_size(),
                message.options["redis_message_id"],
                message.encode(),
            ],
            client=pipeline,
        )
        messages.append(message)
    pipeline.execute()
    for message in messages:
        broker.emit_after("enqueue", message, None)


def queue_depth(broker: dramatiq.Broker, queue_name: str = EVENTS_QUEUE) -> int:
    """Messages waiting in the queue, delayed retries included (on Redis, also those being worked on:
    a message stays in Redis until it is acknowledged)."""
    if isinstance(broker, StubBroker):
        return sum(
            broker.queues[name].qsize() for name in (queue_name, dq_name(queue_name)) if name in broker.queues
        )
    # Dramatiq's `qsize` script already adds the delay queue's messages: asking for both would count
    # every message twice.
    return broker.do_qsize(queue_name)


def ping(broker: dramatiq.Broker) -> None:
    if isinstance(broker, RedisBroker):
        broker.client.ping()


broker = build_broker(get_settings())
dramatiq.set_broker(broker)

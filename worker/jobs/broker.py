"""The Dramatiq broker, set once before any actor is imported, and its middleware.

Real Redis in every deployment and in the integration tests; Dramatiq's StubBroker when BROKER=stub
(unit tests). Middleware added here:

- `EventLogContext` (every broker): every log line written while a `process_event` message is handled,
  Dramatiq's own included, names the event (`worker.ops.logs`);
- `WorkerMetrics` (Redis only, active only in `dramatiq` worker processes): Dramatiq's Prometheus
  middleware, its figures summed over the worker group and served on 127.0.0.1:9191 by default.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
from typing import Any
from uuid import uuid4

import dramatiq
import orjson
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.encoder import JSONEncoder
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage, MiddlewareError
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.ops import logs
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

EVENTS_QUEUE = "events"
ALERTS_QUEUE = "alerts"

# The worker group's metrics address and files: Dramatiq's own variables, with a safer default host
# (Dramatiq's is 0.0.0.0). A scraper on another machine needs dramatiq_prom_host set to an address it
# can reach, behind a firewall: the page is not protected by METRICS_TOKEN.
METRICS_HOST_VAR = "dramatiq_prom_host"
METRICS_PORT_VAR = "dramatiq_prom_port"
METRICS_DIR_VAR = "dramatiq_prom_db"  # a directory of directories: one per worker group
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9191
_held_locks: list[Any] = []  # the lock of the worker process that serves its group's metrics


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
    # First, so that its context is set before, and cleared after, every other middleware's hooks.
    broker.add_middleware(EventLogContext(), before=type(broker.middleware[0]))
    if isinstance(broker, RedisBroker):
        broker.add_middleware(WorkerMetrics())
    return broker


class EventLogContext(dramatiq.Middleware):
    """Names the event in every log line written while its `process_event` message is handled.

    `processing.process_event` adds the type and attempt once the event is claimed; the context lasts
    until after Dramatiq's own lines about the message ("Failed to process message ...", "Retrying
    message ...") and is cleared when the message is finished.
    """

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if message.actor_name == "process_event" and message.args:
            account = message.args[1] if len(message.args) > 1 else message.kwargs.get("account", "")
            logs.bind_event(event_id=str(message.args[0]), account=str(account))

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *, result=None, exception=None):
        logs.clear_event()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        logs.clear_event()


class WorkerMetrics(dramatiq.Middleware):
    """Dramatiq's Prometheus middleware (dramatiq 2.2.1), run inside this one so it is safe as a service.

    Its figures (`dramatiq_messages_total`, `dramatiq_message_errors_total`,
    `dramatiq_message_retries_total`, `dramatiq_message_rejects_total`, `dramatiq_messages_inprogress`,
    `dramatiq_delayed_messages_inprogress`, `dramatiq_message_duration_milliseconds`, each by
    `queue_name` and `actor_name`) are written by every worker process to prometheus_client's
    multiprocess files and summed when scraped, on one port per worker group (`dramatiq` command).

    What differs from adding the stock middleware:

    - it binds to 127.0.0.1 unless `dramatiq_prom_host` says otherwise (Dramatiq: 0.0.0.0);
    - the page is served by a thread of one of the group's worker processes, not by an extra forked
      process: the group stays one parent and its workers, and when that worker dies Dramatiq stops
      the whole group anyway;
    - each group writes to a directory of its own under `dramatiq_prom_db`, named after the group's
      parent process, and removes those of groups that are gone (Dramatiq 2.2.1 never clears its
      directory, so a restarted group would carry on from the old counts, or read a dead one's);
    - nothing happens outside a booted worker process (the receiver and the CLI enqueue through this
      broker too): Dramatiq's module, whose import creates a directory, is not even imported there.
    """

    def __init__(self) -> None:
        self.metrics: Any = None  # Dramatiq's Prometheus middleware, once this worker process has booted
        self.directory: str | None = None
        self.server: Any = None

    @property
    def ready(self) -> bool:
        return self.metrics is not None

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        directory = _group_directory()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        _use_multiprocess_values()
        # Imported here: importing it creates a directory (dramatiq_prom_db, or /tmp/dramatiq-prometheus).
        from dramatiq.middleware import prometheus as dramatiq_prometheus

        # Dramatiq's module reads its directory from this global (set from dramatiq_prom_db at import).
        dramatiq_prometheus.DB_PATH = directory
        metrics = dramatiq_prometheus.Prometheus()
        metrics.after_process_boot(broker)
        self.metrics, self.directory = metrics, directory
        self.server = _serve_group_metrics(directory)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.metrics is not None:
            self.metrics.after_worker_shutdown(broker, worker)

    # Dramatiq's hooks, passed on once the metrics exist.

    def after_nack(self, broker, message):
        if self.metrics is not None:
            self.metrics.after_nack(broker, message)

    def after_enqueue(self, broker, message, delay):
        if self.metrics is not None:
            self.metrics.after_enqueue(broker, message, delay)

    def before_delay_message(self, broker, message):
        if self.metrics is not None:
            self.metrics.before_delay_message(broker, message)

    def before_process_message(self, broker, message):
        if self.metrics is not None:
            self.metrics.before_process_message(broker, message)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if self.metrics is not None:
            self.metrics.after_process_message(broker, message, result=result, exception=exception)

    def after_skip_message(self, broker, message):
        if self.metrics is not None:
            self.metrics.after_skip_message(broker, message)


def metrics_address() -> tuple[str, int]:
    """Where the worker group serves its metrics: dramatiq_prom_host and dramatiq_prom_port."""
    return (
        os.environ.get(METRICS_HOST_VAR) or DEFAULT_METRICS_HOST,
        int(os.environ.get(METRICS_PORT_VAR) or DEFAULT_METRICS_PORT),
    )


def _process_start(pid: int) -> str:
    """When `pid` started (clock ticks since boot, from /proc), so a reused pid is a different group."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _group_directory() -> str:
    """This worker group's multiprocess directory, `<dramatiq_prom_db>/<parent pid>-<its start>`,
    created; the directories of groups whose parent is gone are removed."""
    base = os.environ.get(METRICS_DIR_VAR) or os.path.join(
        tempfile.gettempdir(), f"stripe-worker-prometheus-{os.getuid()}"
    )
    parent = os.getppid()
    name = f"{parent}-{_process_start(parent)}"
    os.makedirs(os.path.join(base, name), mode=0o700, exist_ok=True)
    for entry in os.scandir(base):
        pid, _, start = entry.name.partition("-")
        if entry.name != name and pid.isdigit() and start.isdigit() and not _group_alive(int(pid), start):
            shutil.rmtree(entry.path, ignore_errors=True)
    return os.path.join(base, name)


def _group_alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    return _process_start(pid) == start


def _use_multiprocess_values() -> None:
    """prometheus_client picks its value class when first imported: if something imported it before
    PROMETHEUS_MULTIPROC_DIR was set, pick again, or the counts would stay in this process's memory."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()


def _serve_group_metrics(directory: str) -> Any:
    """Serve the group's figures from this process if no other process of its group does; None
    otherwise, or when the port is taken (logged: then nobody serves this group's figures).

    The server is whoever holds the lock on `<directory>/serving`: the kernel drops it when that process
    ends (however it ends, and across a `dramatiq` reload, which keeps the directory), so a lock is
    never left behind.
    """
    lock = open(os.path.join(directory, "serving"), "a")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None  # another worker process of this group serves them
    _held_locks.append(lock)

    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    host, port = metrics_address()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else type(exc).__name__
        log.error(
            "worker metrics not served on %s:%d (%s); set %s to a free port",
            host,
            port,
            reason,
            METRICS_PORT_VAR,
        )
        return None
    log.info("worker metrics for this worker group on http://%s:%d/metrics", host, port)
    return server


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


# What Dramatiq 2.2.1's Redis `dispatch` script does for "enqueue" (dramatiq/brokers/redis/dispatch.lua),
# which `enqueue_many` does for a whole batch in one MULTI/EXEC instead of one script call per message.
# tests/unit/test_receiver_fast_path.py fails when the script or the message fields change.
DISPATCH_ENQUEUE_LUA = (
    'redis.call("hset", queue_messages, message_id, message_data)',
    'redis.call("rpush", queue_full_name, message_id)',
)
MESSAGE_FIELDS = (
    "queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp",
)  # fmt: skip


def _overrides(broker: dramatiq.Broker, hook: str) -> list:
    """The bound `hook` of each middleware that does something there (Middleware's own does nothing),
    in the order Dramatiq calls them: before_* in the middleware's order, after_* in reverse."""
    base = getattr(dramatiq.Middleware, hook)
    order = broker.middleware if hook.startswith("before_") else reversed(broker.middleware)
    return [getattr(m, hook) for m in order if getattr(type(m), hook, base) is not base]


def _call_hooks(broker: dramatiq.Broker, hooks: list, message: Message) -> None:
    """Like `Broker.emit_before`/`emit_after`: a failing hook is logged, not raised (but a
    MiddlewareError is, as Dramatiq raises it from a before_ hook)."""
    for hook in hooks:
        try:
            hook(broker, message, None)
        except MiddlewareError:
            raise
        except Exception:
            broker.logger.critical("Unexpected failure in %r.", hook, exc_info=True)


def enqueue_many(broker: dramatiq.Broker, actor: dramatiq.Actor, arg_lists: list[tuple]) -> None:
    """Send one message to `actor` per argument tuple, in one Redis round trip.

    What `actor.send(*args)` does for each, for a whole committed batch of the receiver at once and at
    a fraction of the cost per message: one `Message` each (no copy), the middleware hooks that exist
    (Dramatiq would call every middleware's, most of which do nothing), JSON by orjson when Dramatiq's
    encoder is its JSON one, and the Redis writes of its `dispatch` script's "enqueue" (the heartbeat,
    HSET of the message, RPUSH of its id) for every message in one MULTI/EXEC. Dramatiq 2.2.1 is pinned;
    `DISPATCH_ENQUEUE_LUA` and `MESSAGE_FIELDS` are checked against it by the unit tests, and the
    integration tests run real workers on what this enqueues.
    """
    if not isinstance(broker, RedisBroker):
        for args in arg_lists:
            actor.send(*args)
        return
    before, after = _overrides(broker, "before_enqueue"), _overrides(broker, "after_enqueue")
    encoder = dramatiq.get_encoder()
    fast_json = type(encoder) is JSONEncoder
    queue_name, actor_name = actor.queue_name, actor.actor_name
    now = current_millis()
    encoded: dict[str, bytes] = {}
    messages = []
    for args in arg_lists:
        redis_id = str(uuid4())
        message = Message(
            queue_name=queue_name,
            actor_name=actor_name,
            args=tuple(args),
            kwargs={},
            options={"redis_message_id": redis_id},
            message_timestamp=now,
        )
        if before:
            _call_hooks(broker, before, message)
        if fast_json:
            encoded[redis_id] = orjson.dumps({name: getattr(message, name) for name in MESSAGE_FIELDS})
        else:
            encoded[redis_id] = message.encode()
        messages.append(message)
    if not messages:
        return
    full_name = f"{broker.namespace}:{queue_name}"
    pipeline = broker.client.pipeline(transaction=True)
    pipeline.zadd(f"{broker.namespace}:__heartbeats__", {broker.broker_id: now})
    pipeline.hset(f"{full_name}.msgs", mapping=encoded)
    pipeline.rpush(full_name, *encoded)
    pipeline.execute()
    if after:
        for message in messages:
            _call_hooks(broker, after, message)


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

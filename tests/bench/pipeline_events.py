"""A realistic mix of Stripe events for the load test and the pipeline benchmark, and a concurrent sender.

Shared by tests/integration/test_load.py and tests/bench/pipeline_bench.py:

* `build_mix`: `charge.succeeded` for distinct charges (one customer and email each, so every refund
  can get a note), `refund.created` (pending) then `refund.updated` (succeeded, one second newer) for
  one or two refunds of some of them, and a share of types no handler takes (stored `ignored`). Ids
  carry a run tag, so two runs never collide. Built with tests/stripe_fixtures.py.
* `post_all`: posts bodies to the receiver on `concurrency` keep-alive connections (asyncio), signing
  each one just before it is sent; returns one `Answer` per request.
* `noop_worker`: the no-op actor the benchmark measures the queue's own ceiling with.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tests.stripe_fixtures import charge, event, refund
from worker.receiver.signature import sign

# Types no handler takes (handlers/__init__.py): the receiver stores them `ignored` and enqueues nothing.
UNKNOWN_TYPES = (
    "customer.created",
    "customer.updated",
    "payment_intent.created",
    "payment_intent.succeeded",
    "balance.available",
    "product.updated",
)
_PRODUCTS = (
    (2700, "Funnel Starter Course"),
    (4700, "Email Copy Templates"),
    (9700, "Webinar Replay Bundle"),
    (19700, "Coaching Call (60 min)"),
)


@dataclass
class Mix:
    events: list[dict[str, Any]] = field(default_factory=list)  # unique event documents
    charge_ids: set[str] = field(default_factory=set)
    refund_ids: set[str] = field(default_factory=set)
    refund_status: dict[str, str] = field(default_factory=dict)  # refund id -> its newest status
    handled_ids: set[str] = field(default_factory=set)  # a handler takes them: they must end `done`
    ignored_ids: set[str] = field(default_factory=set)  # no handler: stored `ignored`

    def add(self, document: dict[str, Any], handled: bool) -> None:
        self.events.append(document)
        (self.handled_ids if handled else self.ignored_ids).add(document["id"])


def build_mix(
    run: str,
    *,
    charges: int,
    single_refunds: int,
    double_refunds: int,
    unknown: int,
    seed: int = 20261128,
) -> Mix:
    """`charges` charges; the first `single_refunds` get one full refund, the next `double_refunds` two
    partial ones; each refund is two events (created, updated). Plus `unknown` ignored events."""
    if single_refunds + double_refunds > charges:
        raise ValueError("more refunded charges than charges")
    rng = random.Random(seed)
    mix = Mix()
    base = int(time.time()) - 86_400  # events from the last day; event `created` is not the signature time
    for n in range(charges):
        amount, product = _PRODUCTS[n % len(_PRODUCTS)]
        charge_id = f"ch_{run}{n:06d}"
        email = f"buyer{n}.{run}@example.com"
        created = base + rng.randrange(0, 3_600)
        obj = charge(
            charge_id,
            amount=amount,
            customer=f"cus_{run}{n:06d}",
            description=product,
            billing_details={"email": email, "name": f"Buyer {n}"},
            receipt_email=email,
            created=created,
        )
        mix.charge_ids.add(charge_id)
        mix.add(event("charge.succeeded", obj, event_id=f"evt_{run}_ch{n:06d}", created=created), True)
        if n < single_refunds:
            parts = [amount]
        elif n < single_refunds + double_refunds:
            parts = [amount // 2, amount - amount // 2]
        else:
            continue
        for k, part in enumerate(parts):
            refund_id = f"re_{run}{n:06d}x{k}"
            at = created + 600 + 60 * k
            for event_type, status, later in (
                ("refund.created", "pending", 0),
                ("refund.updated", "succeeded", 1),
            ):
                obj = refund(refund_id, charge_id=charge_id, amount=part, status=status, created=at)
                event_id = f"evt_{run}_re{n:06d}x{k}{event_type.split('.')[1][0]}"
                mix.add(event(event_type, obj, event_id=event_id, created=at + later), True)
            mix.refund_ids.add(refund_id)
            mix.refund_status[refund_id] = "succeeded"
    for n in range(unknown):
        event_type = UNKNOWN_TYPES[n % len(UNKNOWN_TYPES)]
        obj = {"id": f"obj_{run}{n:06d}", "object": event_type.split(".")[0]}
        mix.add(event(event_type, obj, event_id=f"evt_{run}_un{n:06d}", created=base + n % 3_600), False)
    return mix


@dataclass(frozen=True)
class Answer:
    event_id: str
    status: int | None  # None: no HTTP answer (see `error`)
    duplicate: bool | None
    error: str | None
    sent: float  # time.monotonic()
    answered: float


async def post_all(
    host: str, port: int, items: list[tuple[str, bytes]], secret: str, *, concurrency: int = 32
) -> list[Answer]:
    """POST each (event_id, body) to /webhooks/stripe on `concurrency` keep-alive connections.

    Plain asyncio streams speaking just enough HTTP/1.1 (the receiver answers with a Content-Length):
    httpx costs the client 2-5 ms of CPU per request, enough to make the client the bottleneck on a
    2-core machine that also runs the receiver, Redis and the workers.
    """
    answers: list[Answer] = []
    pending = iter(items)

    async def connection() -> None:
        reader = writer = None
        try:
            for event_id, body in pending:
                sent = time.monotonic()
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    head = (
                        f"POST /webhooks/stripe HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        f"Content-Type: application/json\r\nStripe-Signature: {sign(body, secret)}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n"
                    )
                    writer.write(head.encode("latin-1") + body)
                    status, answer = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    answers.append(Answer(event_id, None, None, repr(exc), sent, time.monotonic()))
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                duplicate, error = None, None
                try:
                    duplicate = json.loads(answer).get("duplicate")
                except ValueError:
                    error = f"not JSON: {answer[:200]!r}"
                if status != 200:
                    error = answer[:200].decode("utf-8", "replace")
                answers.append(Answer(event_id, status, duplicate, error, sent, time.monotonic()))
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return answers


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError(f"answer without Content-Length: {lines[0]!r}")
    return status, await reader.readexactly(length)


_noop_actor = None


def noop_worker():
    """Declare the no-op actor for tests/bench/pipeline_bench.py and return it: the queue's own ceiling.

    `python -m dramatiq tests.bench.pipeline_events:noop_worker` calls this in the worker process the way
    `worker.jobs.actors` is imported for the real worker: the same broker (worker/jobs/broker.py: Redis, from
    REDIS_URL, CurrentMessage middleware), the same logging set-up, the same queue name and retry options
    as `process_event`, and the same arguments (event id, account). Its body does nothing, so a worker
    running it measures Dramatiq and Redis alone. The bench calls it too, to enqueue for it.
    """
    global _noop_actor
    if _noop_actor is None:
        import dramatiq

        from worker.jobs.broker import EVENTS_QUEUE
        from worker.ops.logs import configure_logging
        from worker.settings import get_settings

        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format, settings.secret_values())

        def noop_event(event_id: str, account: str = "") -> None:
            return None

        _noop_actor = dramatiq.actor(
            noop_event,
            queue_name=EVENTS_QUEUE,
            max_retries=settings.event_max_attempts,
            min_backoff=settings.event_min_backoff_ms,
            max_backoff=settings.event_max_backoff_ms,
        )
    return _noop_actor

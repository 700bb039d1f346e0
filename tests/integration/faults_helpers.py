"""What the fault tests add to the integration harness (`stack.py`): a Slack-compatible alert sink that can
be taken down, the duplicate-purchase refund scenario with per-test ids, and ways to break and inspect
real processes (a dramatiq worker child, the receiver's disk writes, Dramatiq's unacked messages).
"""

from __future__ import annotations

import contextlib
import json
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

from tests import stripe_fixtures as sf
from tests.integration.stack import ManagedProcess

# --- a Slack-compatible incoming webhook that can be down -------------------------------------------


@dataclass
class SinkPost:
    text: str
    answered: int


class AlertSink:
    """`POST /` like a Slack incoming webhook; answers `status` (503 while "down"), keeps every post."""

    def __init__(self) -> None:
        self.status = 200
        self.posts: list[SinkPost] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    status = sink.status
                    text = json.loads(body or b"{}").get("text", "")
                    sink.posts.append(SinkPost(text, status))
                reply = b"ok" if status == 200 else b"service unavailable"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/sinktoken"
        self.thread = threading.Thread(target=self.server.serve_forever, name="alert-sink", daemon=True)
        self.thread.start()

    def answer(self, status: int) -> None:
        with self._lock:
            self.status = status

    def reset(self) -> None:
        with self._lock:
            self.status = 200
            self.posts.clear()

    def posts_for(self, alert_id: int) -> list[SinkPost]:
        """The posts of one alert (its message names it: "(alert 7)")."""
        with self._lock:
            return [p for p in self.posts if f"(alert {alert_id})" in p.text]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the duplicate-purchase refund scenario ---------------------------------------------------------

COURSE = "Video course"


@dataclass
class DuplicateRefund:
    """Two purchases of one course a minute apart by one customer (two Stripe customers, one email),
    then the full refund of the second, as `tests/unit/test_refund_notes_and_alerts.py` has it, with ids
    unique to a test. Exactly one access alert follows: the refund may take away access the first
    purchase still pays for.

    Sent in API version 2024-06-20 (charges no longer list their refunds), so `charge.refunded` makes the
    worker fetch `GET /v1/refunds?charge=...` from Stripe: `refund` must be in the stand-in's store.
    """

    uid: str
    amount: int = 19_800
    t0: int = field(default_factory=lambda: int(time.time()) - 3600)

    @property
    def email(self) -> str:
        return f"mika.{self.uid}@example.com"

    @property
    def first_charge(self) -> str:
        return f"ch_first_{self.uid}"

    @property
    def second_charge(self) -> str:
        return f"ch_second_{self.uid}"

    @property
    def refund_id(self) -> str:
        return f"re_dup_{self.uid}"

    def _purchase(self, charge_id: str, customer: str, created: int, **fields: Any) -> dict[str, Any]:
        return sf.charge(
            charge_id,
            amount=self.amount,
            created=created,
            customer=customer,
            payment_intent=f"pi_{charge_id.removeprefix('ch_')}",
            description=COURSE,
            billing_details={"email": self.email.capitalize()},
            **fields,
        )

    def refund(self, status: str = "succeeded") -> dict[str, Any]:
        return sf.refund(
            self.refund_id,
            charge_id=self.second_charge,
            amount=self.amount,
            status=status,
            created=self.t0 + 600,
            reason="duplicate",
        )

    def purchases(self) -> list[dict[str, Any]]:
        return [
            sf.event(
                "charge.succeeded",
                self._purchase(self.first_charge, f"cus_a_{self.uid}", self.t0),
                event_id=f"evt_first_{self.uid}",
                created=self.t0,
            ),
            sf.event(
                "charge.succeeded",
                self._purchase(self.second_charge, f"cus_b_{self.uid}", self.t0 + 60),
                event_id=f"evt_second_{self.uid}",
                created=self.t0 + 60,
            ),
        ]

    def charge_refunded(self) -> dict[str, Any]:
        refunded = self._purchase(
            self.second_charge, f"cus_b_{self.uid}", self.t0 + 60, amount_refunded=self.amount, refunded=True
        )
        return sf.event(
            "charge.refunded", refunded, event_id=f"evt_refunded_{self.uid}", created=self.t0 + 600
        )

    def refund_events(self) -> list[dict[str, Any]]:
        return [
            sf.event(
                "refund.created",
                self.refund("pending"),
                event_id=f"evt_refund_created_{self.uid}",
                created=self.t0 + 600,
            ),
            sf.event(
                "charge.refund.updated",
                self.refund(),
                event_id=f"evt_refund_updated_c_{self.uid}",
                created=self.t0 + 601,
            ),
            sf.event(
                "refund.updated",
                self.refund(),
                event_id=f"evt_refund_updated_{self.uid}",
                created=self.t0 + 601,
            ),
        ]

    def events(self) -> list[dict[str, Any]]:
        return [*self.purchases(), self.charge_refunded(), *self.refund_events()]


# --- breaking processes -----------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]
    return []


def dramatiq_worker_children(process: ManagedProcess) -> list[int]:
    """The worker processes the `dramatiq` CLI forked (same command line as their parent), not helpers."""
    with open(f"/proc/{process.pid}/cmdline", "rb") as handle:
        parent = handle.read()
    found = []
    for child in children(process.pid):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{child}/cmdline", "rb") as handle:
            if handle.read() == parent:
                found.append(child)
    return found


@contextlib.contextmanager
def disk_writes_fail(pid: int) -> Iterator[None]:
    """Every write `pid` makes to a file fails with EFBIG while inside (RLIMIT_FSIZE 0, set on the running
    process with prlimit(2)); SQLite reports it as SQLITE_IOERR_WRITE, "disk I/O error", as it would a
    failing or full disk. Python ignores SIGXFSZ, so the process lives. Reads are unaffected; what the
    process logs meanwhile is lost (its stderr is a file too).
    """
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, before[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, before)


# --- Dramatiq's Redis bookkeeping (dramatiq 2.2.1, dramatiq/brokers/redis/dispatch.lua) -------------

NAMESPACE = "dramatiq"
HEARTBEATS_KEY = f"{NAMESPACE}:__heartbeats__"


@dataclass
class Unacked:
    worker_id: str
    redis_message_id: str
    actor: str
    args: list[Any]


def unacked_messages(client: redis.Redis, queue: str = "events") -> list[Unacked]:
    """Messages fetched by some worker and never acked: they sit in `dramatiq:__acks__.$worker.$queue`."""
    prefix = f"{NAMESPACE}:__acks__."
    found = []
    for key in client.scan_iter(match=f"{prefix}*.{queue}"):
        worker_id = key.decode().removeprefix(prefix).removesuffix(f".{queue}")
        for message_id in client.smembers(key):
            data = client.hget(f"{NAMESPACE}:{queue}.msgs", message_id)
            document = json.loads(data) if data else {}
            found.append(
                Unacked(worker_id, message_id.decode(), document.get("actor_name"), document.get("args"))
            )
    return found


def run_dramatiq_maintenance_as_if_a_minute_passed(
    client: redis.Redis, dead_worker_id: str, queue: str
) -> None:
    """What Dramatiq's Redis broker does on its own, at the earliest 60 s after a worker's last heartbeat
    (DEFAULT_HEARTBEAT_TIMEOUT) and then only on a random 0.1% of its commands: put the dead worker's
    unacked messages back on their queue. Here the dead worker's heartbeat is aged and one command runs
    with maintenance certain, so the redelivery happens now.
    """
    client.zadd(HEARTBEATS_KEY, {dead_worker_id: 0})
    broker = RedisBroker(client=client, maintenance_chance=MAINTENANCE_SCALE)
    broker.do_qsize(queue)

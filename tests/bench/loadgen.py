"""A small HTTP/1.1 load generator on raw asyncio keep-alive connections (no HTTP library in the way).

Two modes over a list of pre-built request byte strings, each sent at most once:

* `open_loop(rate, ...)`: requests are *due* at a constant rate whatever the server does. A due request
  goes out on an idle connection, or a new one (up to `max_connections`), or waits in a client-side
  backlog. Its latency is measured from when it was due, not from when it was written, so time spent
  waiting for a busy server is counted (no "coordinated omission", unlike a closed loop). Once more
  than `saturation_after` seconds' worth of arrivals are unanswered (in flight or backlogged), or one
  request has waited ten times that long, the server is declared saturated and dispatching stops
  early: an overloaded run stays bounded. (One slow answer alone is a tail, not saturation.)
* `closed_loop(connections, ...)`: each connection sends its next request as soon as the previous one is
  answered (warm-ups, and the fallback when wrk is not installed).

Responses are parsed just enough to count them: status code, Content-Length, and whether the body says
`"duplicate":true` (the receiver's answer to an event id it already has).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import signal
import time
from dataclasses import dataclass, field

DUPLICATE_MARK = b'"duplicate":true'


def build_request(host: str, port: int, signature: str, body: bytes) -> bytes:
    head = (
        f"POST /webhooks/stripe HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Content-Type: application/json\r\n"
        f"Stripe-Signature: {signature}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass
class LoadResult:
    mode: str
    target_rate: float | None = None
    connections_used: int = 0
    sent: int = 0  # requests written to a socket
    dispatched: int = 0  # open loop: requests that fell due (sent, or waiting in the backlog)
    not_sent: int = 0  # open loop: due, but dropped from the backlog once the server was saturated
    ok: int = 0  # 200 and not a duplicate
    duplicate: int = 0
    non200: collections.Counter = field(default_factory=collections.Counter)
    connection_errors: int = 0  # connect failures, and connections lost with a request in flight
    unanswered: int = 0  # sent, but no answer before the drain timeout (the server may still store it)
    elapsed: float = 0.0  # from the first due request to the last answer
    dispatch_window: float = 0.0  # open loop: from the first to the last due request dispatched
    saturated: bool = False
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests only
    schedule_lag: list[float] = field(default_factory=list)  # open loop: how late the client's own timer ran
    client_cpu: float = 0.0  # this process's CPU seconds / wall seconds during the run

    @property
    def answered(self) -> int:
        return self.ok + self.duplicate + sum(self.non200.values())

    @property
    def offered_rate(self) -> float:
        """Open loop: the rate at which requests actually fell due (below target: the client lagged)."""
        return self.dispatched / self.dispatch_window if self.dispatch_window > 0 else 0.0

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        lag = sorted(self.schedule_lag)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "mode": self.mode,
            "target_rate_per_s": None if self.target_rate is None else round(self.target_rate, 1),
            "connections_used": self.connections_used,
            "sent": self.sent,
            "not_sent": self.not_sent,
            "ok": self.ok,
            "duplicate": self.duplicate,
            "non200": sum(self.non200.values()),
            "non200_statuses": {str(k): v for k, v in sorted(self.non200.items())},
            "connection_errors": self.connection_errors,
            "unanswered": self.unanswered,
            "elapsed_s": round(self.elapsed, 3),
            "offered_rate_per_s": round(self.offered_rate, 1) if self.offered_rate else None,
            "throughput_per_s": round(self.throughput, 1),
            "saturated": self.saturated,
            "latency_ms": {
                "p50": ms(percentile(lat, 0.50)),
                "p90": ms(percentile(lat, 0.90)),
                "p99": ms(percentile(lat, 0.99)),
                "max": ms(lat[-1] if lat else None),
            },
            "client_schedule_lag_ms": {"p50": ms(percentile(lag, 0.50)), "p99": ms(percentile(lag, 0.99))},
            "client_cpu_pct": round(100 * self.client_cpu, 1),
        }


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.started: float | None = None  # when the request in flight was due (open) or written (closed)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, request: bytes, started: float) -> None:
        self.started = started
        self.run.result.sent += 1
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            status = int(head[9:12])
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            started, self.started = self.started, None
            self.run.on_response(self, started, status, body)

    def connection_lost(self, exc) -> None:
        self.run.on_lost(self)


class _Run:
    """State shared by the connections of one load run."""

    def __init__(self, host: str, port: int, requests: list[bytes], result: LoadResult) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.requests = requests
        self.next_index = 0
        self.result = result
        self.connections: list[_Connection] = []
        self.idle: collections.deque[_Connection] = collections.deque()
        self.backlog: collections.deque[float] = collections.deque()  # due times of waiting requests
        self.connecting = 0
        self.closed_loop_deadline: float | None = None
        self.last_answer = 0.0
        self.all_answered = asyncio.Event()
        self.dispatching = True

    # -- connections --------------------------------------------------------------------------------

    async def connect(self) -> _Connection | None:
        """Open one more connection; the caller has already counted it in `self.connecting`."""
        try:
            _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.result.connection_errors += 1
            return None
        finally:
            self.connecting -= 1
        self.connections.append(conn)
        self.result.connections_used = max(self.result.connections_used, len(self.connections))
        return conn

    def take_request(self) -> bytes | None:
        if self.next_index >= len(self.requests):
            return None
        request = self.requests[self.next_index]
        self.next_index += 1
        return request

    def in_flight(self) -> int:
        return sum(1 for c in self.connections if c.started is not None)

    def falling_behind(self, now: float, rate: float, window: float) -> bool:
        """Open loop: more than `window` seconds of arrivals unanswered, or one waiting 10 x `window`."""
        in_flight = [c.started for c in self.connections if c.started is not None]
        unanswered = len(in_flight) + len(self.backlog)
        if not unanswered:
            return False
        oldest = min(in_flight + ([self.backlog[0]] if self.backlog else []))
        return unanswered > max(rate * window, 10) or now - oldest > 10 * window

    def check_done(self) -> None:
        if not self.dispatching and not self.backlog and self.in_flight() == 0:
            self.all_answered.set()

    # -- events from connections --------------------------------------------------------------------

    def on_response(self, conn: _Connection, started: float, status: int, body: bytes) -> None:
        now = time.perf_counter()
        self.last_answer = now
        result = self.result
        result.latencies.append(now - started)
        if status != 200:
            result.non200[status] += 1
        elif DUPLICATE_MARK in body:
            result.duplicate += 1
        else:
            result.ok += 1
        self.next_work(conn)
        self.check_done()

    def on_lost(self, conn: _Connection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        if conn.started is not None:
            conn.started = None
            self.result.connection_errors += 1
        self.check_done()

    def next_work(self, conn: _Connection) -> None:
        """Give a free connection its next request, or park it."""
        if self.closed_loop_deadline is not None:  # closed loop
            if self.dispatching and time.perf_counter() < self.closed_loop_deadline:
                request = self.take_request()
                if request is not None:
                    conn.send(request, time.perf_counter())
                    return
            self.dispatching = False
            self.idle.append(conn)
            return
        if self.backlog:  # open loop
            request = self.take_request()
            if request is not None:
                conn.send(request, self.backlog.popleft())
                return
            self.backlog.clear()
        self.idle.append(conn)

    def close_all(self) -> None:
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


@contextlib.asynccontextmanager
async def _running(host: str, port: int, requests: list[bytes], result: LoadResult):
    """A load run whose connections are closed however it ends (finished, failed or cancelled)."""
    run = _Run(host, port, requests, result)
    try:
        yield run
    finally:
        run.close_all()


async def closed_loop(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    connections: int,
    duration: float | None = None,
    drain_timeout: float = 30.0,
) -> LoadResult:
    """Keep `connections` requests in flight until the requests run out or `duration` has passed."""
    result = LoadResult(mode="closed")
    async with _running(host, port, requests, result) as run:
        run.connecting = connections
        opened = await asyncio.gather(*(run.connect() for _ in range(connections)))
        conns = [c for c in opened if c is not None]
        if not conns:
            raise ConnectionError(f"cannot connect to {host}:{port}")
        cpu0, start = time.process_time(), time.perf_counter()
        run.closed_loop_deadline = start + duration if duration is not None else float("inf")
        for conn in conns:
            run.next_work(conn)
        run.check_done()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.all_answered.wait(), (duration or 0) + drain_timeout)
        run.dispatching = False
        result.unanswered = run.in_flight()
        result.elapsed = (run.last_answer or time.perf_counter()) - start
        result.client_cpu = (time.process_time() - cpu0) / max(1e-9, time.perf_counter() - start)
    return result


async def open_loop(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    rate: float,
    duration: float,
    max_connections: int,
    initial_connections: int = 8,
    saturation_after: float = 1.0,
    drain_timeout: float = 15.0,
) -> LoadResult:
    """Offer `rate` requests/s for `duration` s (at most len(requests)); see the module docstring."""
    result = LoadResult(mode="open", target_rate=rate)
    async with _running(host, port, requests, result) as run:
        first = min(initial_connections, max_connections)
        run.connecting = first
        for conn in await asyncio.gather(*(run.connect() for _ in range(first))):
            if conn is not None:
                run.idle.append(conn)
        if not run.connections:
            raise ConnectionError(f"cannot connect to {host}:{port}")

        async def grow() -> None:
            conn = await run.connect()
            if conn is not None:
                run.next_work(conn)
                run.check_done()

        total = min(len(requests), int(rate * duration))
        interval = 1.0 / rate
        growers: set[asyncio.Task] = set()
        cpu0 = time.process_time()
        start = time.perf_counter() + 0.01
        dispatched = 0
        last_due = start
        while dispatched < total:
            now = time.perf_counter()
            due = start + dispatched * interval
            if due > now:
                # uvloop's timers tick in whole milliseconds: a shorter sleep returns at once and the loop
                # would spin. Requests that fall due during the sleep go out together when it ends, at
                # most ~1 ms late, and that delay is part of their measured latency.
                await asyncio.sleep(max(due - now, 0.001))
                continue
            result.schedule_lag.append(now - due)
            # Everything due by now goes out (a burst if the timer woke late; latency counts from `due`).
            while dispatched < total and start + dispatched * interval <= now:
                last_due = start + dispatched * interval
                if run.idle:
                    run.idle.popleft().send(run.take_request(), last_due)
                else:
                    run.backlog.append(last_due)
                    if len(run.connections) + run.connecting < max_connections:
                        run.connecting += 1  # counted now, so one burst cannot overshoot the cap
                        task = asyncio.ensure_future(grow())
                        growers.add(task)
                        task.add_done_callback(growers.discard)
                dispatched += 1
            if run.falling_behind(now, rate, saturation_after):
                result.saturated = True
                break
            # Yield so responses are read even when the timer is behind (a client-side bottleneck).
            await asyncio.sleep(0)
        result.dispatched = dispatched
        result.dispatch_window = max(last_due - start, interval)
        run.dispatching = False
        # Requests already due but still waiting for a connection go out as connections free up, unless
        # the server turns out to be saturated: then they are dropped (counted as not sent).
        drain_until = time.perf_counter() + drain_timeout
        while True:
            now = time.perf_counter()
            if run.falling_behind(now, rate, saturation_after):
                result.saturated = True
            if result.saturated and run.backlog:
                result.not_sent += len(run.backlog)
                run.backlog.clear()
            run.check_done()
            if run.all_answered.is_set() or now > drain_until:
                break
            await asyncio.sleep(0.005)
        for task in list(growers):
            task.cancel()
        result.unanswered = run.in_flight()
        result.elapsed = (run.last_answer or time.perf_counter()) - start
        result.client_cpu = (time.process_time() - cpu0) / max(1e-9, time.perf_counter() - start)
    return result


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is, with uvicorn[standard]): the client must stay cheaper than the server."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_sync(coro):
    """Run `coro` on a fresh loop; Ctrl-C, SIGTERM or SIGHUP cancel it and raise KeyboardInterrupt.

    The signals are routed through the loop because uvloop catches exceptions that a Python signal
    handler raises inside its callbacks (even KeyboardInterrupt, in a protocol's data_received) and
    carries on. The handlers in force before are put back afterwards, ignored signals stay ignored.
    """
    loop = new_event_loop()
    task = loop.create_task(coro)
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        task.cancel()

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN:
            continue
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signum, on_signal, signum)
            previous[signum] = handler
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if received:
            raise KeyboardInterrupt(f"signal {received[0]}") from None
        raise
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
        loop.close()

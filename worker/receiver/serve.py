"""Serving the receiver: uvicorn with the options the `web` process runs it with.

uvicorn has no deadline for receiving a request (checked against its source up to 0.54 and upstream:
`timeout_keep_alive` only covers the wait between requests and is cancelled by every byte that arrives,
`h11_max_incomplete_event_size` bounds the size of the headers, not their time, and `limit_concurrency`
only answers 503 once the slots are taken; the request-start and request-complete timeouts proposed in
encode/uvicorn#157 were never added). A client sending a byte a second therefore held its socket for
ever. ASGI middleware cannot help: the app is called only once the headers are complete, and nothing
calls it while a body trickles in after an early answer. So the deadline lives in the HTTP protocol:
`RequestDeadline` wraps uvicorn's own h11 or httptools protocol and closes a connection whose request
headers have not arrived within `HEADER_TIMEOUT_SECONDS` of its first byte (or of the connection), or
whose body has not arrived within `body_timeout_seconds(max_body)` of its headers, answering 408 first
unless a response is already under way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11

from worker.settings import Settings

log = logging.getLogger(__name__)

# Stripe sends a whole webhook at once; a legitimate sender's headers arrive in milliseconds.
HEADER_TIMEOUT_SECONDS = 10.0
# The body deadline: this long, plus the time to send the largest body allowed at the slowest rate we
# wait for (1 MiB: 10 + 16 = 26 s).
BODY_TIMEOUT_BASE_SECONDS = 10.0
MIN_BODY_BYTES_PER_SECOND = 64 * 1024
# One log line per this many seconds at most, however many connections time out (an attack would
# otherwise write one per connection).
_LOG_EVERY_SECONDS = 60.0

_IDLE, _HEADERS, _BODY = "idle", "headers", "body"


def body_timeout_seconds(max_body_bytes: int) -> float:
    return BODY_TIMEOUT_BASE_SECONDS + max_body_bytes / MIN_BODY_BYTES_PER_SECOND


def _timeout_response(seconds: float) -> bytes:
    body = b'{"error":"request not received within %d s"}' % round(seconds)
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )


class _TimeoutLog:
    """Counts closed connections and says so at most once a minute."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def closed(self, phase: str, seconds: float) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= _LOG_EVERY_SECONDS:
            log.warning(
                "closed a connection whose request %s did not arrive within %g s (%d such so far)",
                phase,
                seconds,
                self.count,
            )
            self.last = now


_timeouts = _TimeoutLog()


class RequestDeadline:
    """Mixed into a uvicorn HTTP protocol class: a deadline on receiving each request.

    The phase is `idle` (no request under way: uvicorn's keep-alive timeout applies), `headers` (from
    the connection or the first byte of a request until its headers are parsed) or `body` (until the
    request is fully received, whether or not the app still reads it). One timer, armed only while a
    request is incomplete after the data at hand: a request that arrives whole arms none.
    """

    header_timeout: float = HEADER_TIMEOUT_SECONDS
    body_timeout: float = BODY_TIMEOUT_BASE_SECONDS
    _phase: str = _IDLE
    _phase_started: float = 0.0
    _deadline: asyncio.TimerHandle | None = None

    # uvicorn's protocol has these.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._enter(_HEADERS)  # a connection that never sends a byte is held to the same deadline
        self._schedule()

    def connection_lost(self, exc) -> None:
        self._enter(_IDLE)
        self._schedule()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._phase == _IDLE:
            self._enter(_HEADERS)  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]
        self._after_events()
        self._schedule()

    # --- what the parser saw --------------------------------------------------------------------

    def _after_events(self) -> None:
        """Subclasses whose parser has no callbacks (h11) read its state here."""

    def _enter(self, phase: str) -> None:
        if phase != self._phase:
            self._phase = phase
            self._phase_started = self.loop.time()

    def _schedule(self) -> None:
        if self._phase == _IDLE:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            return
        limit = self.header_timeout if self._phase == _HEADERS else self.body_timeout
        due = self._phase_started + limit
        if self._deadline is not None:
            if self._deadline.when() == due:
                return
            self._deadline.cancel()
        self._deadline = self.loop.call_at(due, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if self._phase == _IDLE or self.transport is None or self.transport.is_closing():
            return
        limit = self.header_timeout if self._phase == _HEADERS else self.body_timeout
        cycle = self.cycle  # while headers arrive: the previous request's; then this request's
        if self._phase == _HEADERS:
            answer = cycle is None or cycle.response_complete  # not while an answer is still due
        else:
            answer = cycle is not None and not cycle.response_started  # one answer per request
        if answer:
            self.transport.write(_timeout_response(limit))
        _timeouts.closed(self._phase, limit)
        self._enter(_IDLE)
        self.transport.close()  # the app, if it waits for the body, is told the client went away


def with_request_deadline(
    http: str = "auto", *, header_timeout: float, body_timeout: float
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class `http` ("auto", "h11" or "httptools") with `RequestDeadline`."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if http == "auto":
        base = AutoHTTPProtocol
    elif http == "h11":
        base = H11Protocol
    elif http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    else:
        raise ValueError(f"no request deadline for uvicorn's {http!r} protocol")
    mixin = _H11Deadline if issubclass(base, H11Protocol) else _HttpToolsDeadline
    attributes = {"header_timeout": header_timeout, "body_timeout": body_timeout}
    return type(f"Deadline{base.__name__}", (mixin, base), attributes)


class _H11Deadline(RequestDeadline):
    """h11 has no parser callbacks: its state after each batch of events says where the request is."""

    def handle_events(self) -> None:
        super().handle_events()  # type: ignore[misc]
        self._after_events()
        self._schedule()

    def _after_events(self) -> None:
        state = self.conn.their_state  # type: ignore[attr-defined]
        if state is h11.SEND_BODY:
            self._enter(_BODY)
        # DONE, MUST_CLOSE, CLOSED, ERROR: nothing more to wait for; IDLE after a body: the request
        # ended and h11 began the next cycle.
        elif state is not h11.IDLE or self._phase == _BODY:
            self._enter(_IDLE)


class _HttpToolsDeadline(RequestDeadline):
    """httptools calls these as it parses (inside data_received)."""

    def on_message_begin(self) -> None:
        self._enter(_HEADERS)
        super().on_message_begin()  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        self._enter(_BODY)
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        self._enter(_IDLE)
        super().on_message_complete()  # type: ignore[misc]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments `run_web` hands uvicorn besides the app, host and port."""
    return {
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "http": with_request_deadline(
            "auto",
            header_timeout=HEADER_TIMEOUT_SECONDS,
            body_timeout=body_timeout_seconds(settings.webhook_max_body_bytes),
        ),
    }


def run_web(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve `worker.receiver.web` until stopped (SIGINT/SIGTERM), on the settings' host and port."""
    import uvicorn

    uvicorn.run(
        "worker.receiver.web:app_from_settings",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        **uvicorn_options(settings),
    )

"""Hostile requests over a real socket to a real uvicorn (h11 and httptools), run in-process.

What only a real HTTP server shows: raw latin-1 header bytes reaching the app (the test client re-encodes
them), Content-Length framing done by the server, and the server's own log lines. The server is built
with the same uvicorn options `worker.ops.cli.cmd_web` uses. No Redis is needed: the queue is a list.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from sqlmodel import func, select

from models import Database, Event
from tests.stripe_fixtures import TEST_SECRET, charge, event
from tests.unit.test_receiver import RecordingQueue
from worker.ops import cli
from worker.receiver.signature import sign
from worker.receiver.web import create_app
from worker.settings import Settings

pytestmark = pytest.mark.integration

TOKEN = "cf-hostile-http-token-0123456789"
LIMIT = 8192


def production_uvicorn_options(monkeypatch) -> dict:
    """The keyword arguments `python -m worker web` hands uvicorn, minus the app and the address."""
    captured: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: captured.update(kwargs))
    monkeypatch.setattr(cli, "get_settings", lambda: Settings())
    cli.cmd_web(type("Args", (), {"host": None, "port": None})())
    for name in ("factory", "host", "port"):
        captured.pop(name, None)
    return captured


@dataclass
class LiveServer:
    db: Database
    port: int

    def send(self, raw: bytes, *, timeout: float = 5.0) -> tuple[int, bytes]:
        """Send bytes as they are; (status, body) of the first response."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
            conn.sendall(raw)
            data = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = conn.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    break
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def stored(self) -> int:
        with self.db.session() as session:
            return session.exec(select(func.count()).select_from(Event)).one()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(http: str, options: dict) -> Iterator[LiveServer]:
    db = Database("sqlite://")
    db.create_all()
    app = create_app(
        db=db, enqueue=RecordingQueue(), secrets=[TEST_SECRET], funnel_token=TOKEN, max_body_bytes=LIMIT
    )
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=http, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield LiveServer(db, port)
    finally:
        server.should_exit = True
        thread.join(10)
        db.dispose()


@pytest.fixture(params=["h11", "httptools"])
def live(request, monkeypatch) -> Iterator[LiveServer]:
    yield from serve(request.param, production_uvicorn_options(monkeypatch))


def request_bytes(path: str, body: bytes, headers: dict[str, bytes] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: localhost", b"Connection: close"]
    headers = {"Content-Length": str(len(body)).encode(), **(headers or {})}
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def signed_event(event_id: str, *, pad: int = 0) -> tuple[bytes, bytes]:
    body = json.dumps(event("charge.succeeded", charge(description="x" * pad), event_id=event_id)).encode()
    return body, sign(body, TEST_SECRET).encode()


def error_of(body: bytes) -> str:
    document = json.loads(body)
    assert list(document) == ["error"]
    return document["error"]


def test_over_real_http_a_signed_event_is_accepted_and_stored(live):
    body, signature = signed_event("evt_live_ok")
    status, answer = live.send(request_bytes("/webhooks/stripe", body, {"Stripe-Signature": signature}))
    assert (status, json.loads(answer)) == (200, {"received": True, "duplicate": False})
    assert live.stored() == 1


# Was an unauthenticated 500 plus an ERROR traceback per request until c776240: uvicorn passes
# obs-text header bytes to the app, and worker/receiver/signature.py crashed on them.
@pytest.mark.parametrize("header", [b"t=\xb2,v1=00", b"t={now},v1=\xe9"], ids=["superscript-t", "latin1-v1"])
def test_over_real_http_a_signature_header_with_latin1_bytes_gets_400_not_500(live, header):
    header = header.replace(b"{now}", str(int(time.time())).encode())
    status, answer = live.send(request_bytes("/webhooks/stripe", b"{}", {"Stripe-Signature": header}))
    assert (status, error_of(answer)) == (400, "malformed Stripe-Signature header")
    assert live.stored() == 0


def test_over_real_http_a_content_length_smaller_than_the_body_gets_only_the_declared_bytes_refused(live):
    body, signature = signed_event("evt_live_lying", pad=LIMIT * 2)
    raw = request_bytes("/webhooks/stripe", body, {"Content-Length": b"100", "Stripe-Signature": signature})
    status, answer = live.send(raw)
    assert (status, error_of(answer)) == (400, "no signature matches")
    assert live.stored() == 0


def test_over_real_http_a_chunked_body_over_the_limit_gets_413(live):
    body, signature = signed_event("evt_live_chunked", pad=LIMIT)
    chunks = b"".join(
        f"{len(body[i : i + 1000]):x}\r\n".encode() + body[i : i + 1000] + b"\r\n"
        for i in range(0, len(body), 1000)
    )
    head = (
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\nStripe-Signature: " + signature + b"\r\n\r\n"
    )
    status, answer = live.send(head + chunks + b"0\r\n\r\n")
    assert (status, error_of(answer)) == (413, f"body larger than {LIMIT} bytes")
    assert live.stored() == 0


def test_over_real_http_a_declared_length_over_the_limit_is_refused_without_waiting_for_the_body(live):
    raw = request_bytes("/webhooks/stripe", b"", {"Content-Length": str(LIMIT * 1000).encode()})
    started = time.monotonic()
    status, answer = live.send(raw, timeout=3)
    assert (status, error_of(answer)) == (413, f"body larger than {LIMIT} bytes")
    assert time.monotonic() - started < 2


def test_over_real_http_a_content_length_that_is_not_ascii_digits_is_refused_by_the_server(live):
    # Why the app's own str.isdigit() slip on Content-Length (strict xfail in the unit module) is latent.
    raw = request_bytes(
        "/webhooks/stripe", b"{}", {"Content-Length": b"\xb2", "Stripe-Signature": b"t=1,v1=0"}
    )
    status, _ = live.send(raw)
    assert status == 400
    assert live.stored() == 0


def test_over_real_http_an_enormous_signature_header_is_refused_without_a_500(live):
    raw = request_bytes("/webhooks/stripe", b"{}", {"Stripe-Signature": b"t=1," + b"v1=" + b"0" * 200_000})
    status, _ = live.send(raw)
    assert 400 <= status < 500
    assert live.stored() == 0


def _funnel_requests(live: LiveServer) -> None:
    purchase = json.dumps({"purchase": {"id": 5, "products": []}}).encode()
    for path in (f"/webhooks/funnel/{TOKEN}", f"/webhooks/funnel?token={TOKEN}", "/webhooks/funnel/wrong"):
        live.send(request_bytes(path, purchase))


def test_the_funnel_token_in_the_url_never_reaches_the_logs_with_the_production_server_options(
    monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    options = production_uvicorn_options(monkeypatch)
    assert options.get("access_log") is False
    for live in serve("h11", options):
        _funnel_requests(live)
    assert caplog.records, "the server logged nothing at all: the check below would prove nothing"
    assert TOKEN not in caplog.text

"""ALERT_WEBHOOK_URL is a secret (anyone with it can post): no part of its path or query is ever
stored or logged, however it is spelled and however the sink fails.

Real sinks on 127.0.0.1: a closed port (connection refused) and a server that answers 500. httpx
prints the URL it normalised (lower-case scheme, percent-escapes), not the one configured.
"""

import logging
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import select

from models import Alert
from tests.unit.test_refund_notes_and_alerts import duplicate_refund_events
from tests.unit.test_sales_view import deliver
from worker.jobs import alert_sink

# Each spelling, and the parts of it that must never show (checked ignoring case).
SPELLINGS = {
    "upper-case scheme": (
        "HTTP://127.0.0.1:{port}/services/T0UPPERX/B0UPPERX/UpperSchemeSecretPart",
        ["T0UPPERX", "B0UPPERX", "UpperSchemeSecretPart"],
    ),
    "percent-escaped path and query": (
        "http://127.0.0.1:{port}/services/T0ESCAPE/B0ESCAPE/%7Bpctenc%7D{braced}s%65kretz?token=q%2Fv w",
        ["T0ESCAPE", "B0ESCAPE", "pctenc", "braced", "s%65kretz", "sekretz", "q%2Fv", "q/v"],
    ),
}


def raise_alert(db) -> int:
    """A real alert, raised the way processing raises one (a refund of a duplicate purchase)."""
    for document in duplicate_refund_events():
        deliver(db, document)
    with db.session() as session:
        return session.exec(select(Alert.id)).one()


def alert(db, alert_id) -> Alert:
    with db.session() as session:
        return session.get(Alert, alert_id)


class _Fails(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"boom")

    def log_message(self, *_):
        pass


@pytest.fixture
def failing_sink():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fails)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def leaked(text: str, parts: list[str]) -> list[str]:
    return [part for part in parts if part.lower() in text.lower()]


@pytest.mark.parametrize("spelling", SPELLINGS, ids=list(SPELLINGS))
@pytest.mark.parametrize("sink", ["refused", "500"])
def test_a_failing_sink_leaves_no_part_of_its_url_in_the_alert_or_the_logs(
    db, caplog, spelling, sink, request
):
    template, secret_parts = SPELLINGS[spelling]
    port = request.getfixturevalue("closed_port" if sink == "refused" else "failing_sink")
    url = template.replace("{port}", str(port))
    alert_id = raise_alert(db)
    caplog.set_level(logging.DEBUG)  # every logger, httpx's request lines included

    with pytest.raises(alert_sink.SinkUnavailable) as raised:
        alert_sink.deliver(db, alert_id, url, timeout=5)

    stored: Alert = alert(db, alert_id)
    assert stored.delivery_status == "pending"
    expected = "500" if sink == "500" else "ConnectError"
    assert expected in stored.last_delivery_error  # still says what went wrong
    # What Dramatiq logs when the delivery raises: the exception with its traceback.
    dramatiq_log = "".join(traceback.format_exception(raised.value))
    logs = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    for shown in (stored.last_delivery_error, str(raised.value), dramatiq_log, logs):
        assert leaked(shown, secret_parts) == [], shown


def test_a_sink_url_httpx_cannot_even_parse_is_reported_without_its_parts(db, caplog):
    alert_id = raise_alert(db)
    caplog.set_level(logging.DEBUG)
    url = "http://127.0.0.1:notaport/services/T0BADPORT/B0BADPORT/BadPortSecret"
    with pytest.raises(alert_sink.SinkUnavailable) as raised:
        alert_sink.deliver(db, alert_id, url, timeout=5)
    stored = alert(db, alert_id)
    assert stored.delivery_status == "pending" and stored.last_delivery_error
    logs = "\n".join(record.getMessage() for record in caplog.records)
    for shown in (stored.last_delivery_error, str(raised.value), logs):
        assert leaked(shown, ["T0BADPORT", "B0BADPORT", "BadPortSecret", "notaport"]) == [], shown

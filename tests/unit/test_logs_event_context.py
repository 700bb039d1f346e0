"""Every log line written while an event is processed names it: event_id, event_type, account, attempt.

What on-call staff grep for: one event's lines, including the Stripe client's own (`stripe` logger), our
retry warnings and Dramatiq's lines about the message, in JSON or text, at the configured level.
"""

import json
import logging
import threading

import httpx
import pytest
import respx
import structlog

from handlers import DISPATCH, Handler
from tests.stripe_fixtures import charge, event
from tests.unit.test_processing import store
from worker.jobs import processing
from worker.ops.logs import configure_logging, event_context
from worker.settings import Settings
from worker.stripe_api import StripeReader, make_client

BASE = "http://127.0.0.1:12111"
KEY = "sk_test_contextkey0000000000000000q777"
CONTEXT = {"event_id": "evt_ctx", "event_type": "charge.succeeded", "account": "acct_ctx", "attempt": 1}


def json_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def _logging_put_back():
    """These tests configure logging onto pytest's captured stderr; give the next test pytest's own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def stripe_logger_as_in_a_worker():
    """The `stripe` logger at its default level, as in a worker process (on-call CLI commands, which
    earlier tests run in this process, turn its request lines down to WARNING)."""
    stripe_logger = logging.getLogger("stripe")
    level = stripe_logger.level
    stripe_logger.setLevel(logging.NOTSET)
    yield
    stripe_logger.setLevel(level)


@pytest.fixture
def fetching_handler(monkeypatch):
    """charge.succeeded fetches its charge from Stripe before applying (as handlers do for links)."""
    monkeypatch.setitem(
        DISPATCH,
        "charge.succeeded",
        Handler(
            apply=lambda ctx: logging.getLogger("handlers.test").info("applied"),
            fetch=lambda ctx: ctx.stripe.get("/v1/charges/ch_ctx", account=ctx.account),
        ),
    )


@respx.mock
def test_every_line_of_an_event_carries_its_id_type_account_and_attempt_stripe_lines_included(
    db, fetching_handler, stripe_logger_as_in_a_worker, capsys
):
    settings = Settings(
        stripe_api_key=KEY, stripe_api_base=BASE, stripe_max_attempts=2, stripe_max_backoff_seconds=0.01
    )
    reader = StripeReader(settings, make_client(settings))
    unavailable = httpx.Response(503, json={"error": {"type": "api_error", "message": "try later"}})
    respx.get(f"{BASE}/v1/charges/ch_ctx").mock(
        side_effect=[unavailable, httpx.Response(200, json={"id": "ch_ctx", "object": "charge"})]
    )
    store(db, event("charge.succeeded", charge("ch_ctx"), event_id="evt_ctx", account="acct_ctx"))
    configure_logging("INFO", "json", secrets=[KEY])
    logging.getLogger("test").info("before the event")

    processing.process_event(db, "evt_ctx", "acct_ctx", max_attempts=5, stripe=lambda: reader)
    logging.getLogger("test").info("after the event")

    lines = json_lines(capsys.readouterr().err)
    during = lines[1:-1]
    by_logger = {line["logger"] for line in during}
    assert {"stripe", "worker.stripe_api", "handlers.test", "worker.jobs.processing"} <= by_logger
    for line in during:
        assert {key: line.get(key) for key in CONTEXT} == CONTEXT, line
    retry = next(line for line in during if line["logger"] == "worker.stripe_api")
    assert retry["level"] == "warning"
    assert retry["msg"] == "Stripe call failed (APIError), retrying (attempt 1; HTTP 503)"
    assert any("Request to Stripe api" in line["msg"] for line in during if line["logger"] == "stripe")
    # Outside the event, nothing is named.
    assert not {"event_id", "event_type", "account", "attempt"} & (lines[0].keys() | lines[-1].keys())


def test_a_failing_events_lines_and_dramatiqs_own_lines_about_its_message_carry_it(
    capsys, stub_broker, stub_worker, worker_db, monkeypatch
):
    from worker.jobs.actors import process_event

    def broken(_ctx):
        raise RuntimeError("temporary trouble")

    monkeypatch.setitem(DISPATCH, "charge.refunded", Handler(apply=broken))
    store(worker_db, event("charge.refunded", charge("ch_broken"), event_id="evt_broken"))
    configure_logging("INFO", "json", secrets=[])
    monkeypatch.setattr(process_event, "options", {**process_event.options, "max_retries": 0})

    process_event.send("evt_broken", "")
    stub_broker.join(process_event.queue_name, fail_fast=False)
    stub_worker.join()

    lines = json_lines(capsys.readouterr().err)
    failed = next(line for line in lines if line["msg"].startswith("event failed"))
    dramatiq_line = next(line for line in lines if line["msg"].startswith("Failed to process message"))
    for line in (failed, dramatiq_line):
        assert (line["event_id"], line["event_type"], line["account"], line["attempt"]) == (
            "evt_broken",
            "charge.refunded",
            "",
            1,
        ), line
    assert "RuntimeError: temporary trouble" in dramatiq_line["exc"]
    assert list(failed)[:8] == [
        "ts",
        "level",
        "logger",
        "msg",
        "event_id",
        "event_type",
        "account",
        "attempt",
    ]


def test_text_format_puts_the_event_after_the_message(db, capsys):
    configure_logging("INFO", "text", secrets=["hide-me-please"])
    with event_context("evt_text", "acct_text"):
        logging.getLogger("worker.test").warning("odd thing with hide-me-please")
    line = capsys.readouterr().err.strip()
    assert line.endswith(
        " WARNING worker.test: odd thing with [redacted] event_id=evt_text account=acct_text"
    ), line


def test_log_level_still_filters_and_structlog_loggers_share_the_format_context_and_redactor(capsys):
    configure_logging("WARNING", "json", secrets=["another-secret-value"])
    with event_context("evt_level"):
        logging.getLogger("worker.test").info("hidden at WARNING")
        structlog.get_logger("worker.native").warning("native %s", "another-secret-value", extra_field=3)
    [line] = json_lines(capsys.readouterr().err)
    assert (line["logger"], line["level"], line["msg"]) == ("worker.native", "warning", "native [redacted]")
    assert (line["event_id"], line["extra_field"]) == ("evt_level", 3)


def test_events_processed_at_once_in_two_threads_keep_their_own_ids(capsys):
    configure_logging("INFO", "json", secrets=[])
    both_inside = threading.Barrier(2)

    def work(event_id: str) -> None:
        with event_context(event_id):
            both_inside.wait(timeout=5)
            logging.getLogger("worker.test").info("working on %s", event_id)

    threads = [threading.Thread(target=work, args=(f"evt_thread{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = json_lines(capsys.readouterr().err)
    assert sorted((line["event_id"], line["msg"]) for line in lines) == [
        ("evt_thread1", "working on evt_thread1"),
        ("evt_thread2", "working on evt_thread2"),
    ]

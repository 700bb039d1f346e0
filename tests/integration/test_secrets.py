"""The API key and the webhook secret never appear in anything any process printed or stored."""

from __future__ import annotations

import re

import pytest

from tests import stripe_fixtures as sf
from tests.integration.stack import FakeStripe, Stack, needs_redis

pytestmark = [pytest.mark.integration, needs_redis]


def test_no_process_prints_or_stores_the_stripe_api_key_or_the_webhook_secret(
    stack: Stack, fake_stripe: FakeStripe, uid: str
):
    # A flow that touches every process and the paths most likely to carry a secret.
    good = sf.event("charge.succeeded", sf.charge(f"ch_secret_{uid}"), event_id=f"evt_secret_{uid}")
    unprocessable = sf.event(
        "charge.succeeded", sf.charge(f"ch_secret_bad_{uid}", amount="12"), event_id=f"evt_secret_bad_{uid}"
    )
    body, headers = sf.signed(good, secret="whsec_forged_" + "9" * 32)
    assert stack.post(body, headers).status_code == 400
    assert stack.post_event(good).status_code == 200
    assert stack.post_event(unprocessable).status_code == 200
    stack.wait_for_events([good["id"]])
    stack.wait_for_events([unprocessable["id"]], statuses=["dead"])
    # Stripe's error message echoes the key: replay must print the error without it.
    unauthorized = f"{FakeStripe.UNAUTHORIZED_PREFIX}_{uid}"
    refused = stack.cli("replay", unauthorized)
    assert refused.returncode == 1, refused
    assert any(
        auth == f"Bearer {stack.api_key}" for path, auth in fake_stripe.requests if unauthorized in path
    )
    assert "AuthenticationError" in refused.stdout and "[redacted]" in refused.stdout, refused
    for args in (
        ("replay", unauthorized, "--json"),
        ("replay", good["id"]),
        ("replay", "--failed", "--json"),
        ("events", "show", unprocessable["id"], "--json"),
        ("events", "--json"),
        ("sweep", "--json"),
    ):
        stack.cli(*args)

    outputs = sorted(stack.log_dir.iterdir())
    stored = [p for p in stack.root.iterdir() if p.name.startswith(stack.db_path.name)]  # x.db, -wal, -shm
    assert any(p.name.startswith("web.") for p in outputs) and any(
        p.name.startswith("worker.") for p in outputs
    )
    assert sum(p.stat().st_size for p in outputs) > 10_000, "suspiciously little output to search"
    leaks = {
        name: [p.name for p in (*outputs, *stored) if value.encode() in p.read_bytes()]
        for name, value in (
            ("STRIPE_API_KEY", stack.api_key),
            ("STRIPE_WEBHOOK_SECRET", stack.webhook_secret),
        )
    }
    assert leaks == {"STRIPE_API_KEY": [], "STRIPE_WEBHOOK_SECRET": []}


def test_a_key_stripe_refuses_leaves_no_part_of_itself_in_logs_errors_or_tracebacks(
    stack: Stack, fake_stripe: FakeStripe, uid: str, monkeypatch: pytest.MonkeyPatch
):
    """After the seller rolls the key: Stripe's 401 quotes it masked, first 8 and last 4 characters
    kept ("Invalid API Key provided: sk_test_****…tion"). On-call staff see the error, not the tail."""
    key = stack.api_key
    masked = key[:8] + "*" * (len(key) - 12) + key[-4:]
    invoice = f"in_refused_{uid}"
    stripe_handler = fake_stripe.server.RequestHandlerClass

    class RefusesTheKey(stripe_handler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] == f"/v1/invoices/{invoice}":
                message = f"Invalid API Key provided: {masked}"
                return self._reply(401, {"error": {"message": message, "type": "invalid_request_error"}})
            return super().do_GET()

    monkeypatch.setattr(fake_stripe.server, "RequestHandlerClass", RefusesTheKey)
    # A charge naming an invoice the database lacks: its handler asks Stripe for the invoice.
    refused = sf.event(
        "charge.succeeded", sf.charge(f"ch_refused_{uid}", invoice=invoice), event_id=f"evt_refused_{uid}"
    )
    assert stack.post_event(refused).status_code == 200
    stack.wait_for_events([refused["id"]], statuses=["dead"])
    shown = stack.cli("events", "show", refused["id"], "--json")
    assert shown.returncode == 0, shown
    assert (
        shown.json()["last_error"]
        == "AuthenticationError: Request req_fake: Invalid API Key provided: [redacted]"
    )
    worker_lines = stack.worker.stderr_path.read_text(errors="replace")
    assert (
        f'"event_id": "{refused["id"]}"' in worker_lines
        and "Invalid API Key provided: [redacted]" in worker_lines
    )

    outputs = sorted(stack.log_dir.iterdir())
    stored = [p for p in stack.root.iterdir() if p.name.startswith(stack.db_path.name)]  # x.db, -wal, -shm
    leaks = [p.name for p in (*outputs, *stored) if masked.encode() in p.read_bytes()]
    assert leaks == []
    tails = [
        p.name
        for p in (*outputs, *stored)
        if re.search(rb"\*{8,}" + re.escape(key[-4:].encode()), p.read_bytes())
    ]
    assert tails == []

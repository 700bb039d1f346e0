"""The API key and the webhook secret never appear in anything any process printed or stored."""

from __future__ import annotations

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

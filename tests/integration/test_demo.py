"""The README's demo command, run as a user runs it, prints the expected records and one alert."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
    pytest.mark.skipif(
        bool(os.environ.get("TEST_DATABASE_URL")),
        reason="the demo always runs on the embedded SQLite default",
    ),
]


def _read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """The demo's output up to and including the line holding `marker` (the demo then keeps serving)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    process.kill()
    raise AssertionError(f"the demo never printed {marker!r}; it printed:\n{''.join(lines)[-3000:]}")


def test_the_demo_shows_all_installments_the_refund_notes_and_exactly_one_access_alert(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_", "BROKER", "REDIS_"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "demo"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": os.getcwd(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        out = _read_until(process, "keeps running until you press Ctrl-C", timeout=240)
        _check_the_dashboard(out)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            returncode = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert returncode == 0
    # The sales view's rows of the plan (the plan's note and the nightly report name it too).
    plan = [
        line
        for line in out.splitlines()
        if "Online course (3 payments)" in line and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d ", line)
    ]
    assert [re.search(r"(\d) of 3", line).group(1) for line in plan] == ["1", "2", "3"]
    assert (
        "charge ch_demo_plan3 (installment 3 of 3, aiko@example.jp, 33,000 JPY): its webhook never arrived"
        in out
    )
    assert "missed webhooks 1" in out
    assert "refund of 198.00 USD (full, of 198.00 USD)" in out and "Reason: duplicate" in out
    assert "refund of 40.00 USD (partial, of 120.00 USD)" in out
    assert "33,000 JPY" in out and "33,000.00" not in out
    alert_rows = [line for line in out.splitlines() if "access_revocation" in line]
    assert len(alert_rows) == 1 and "ch_demo_video2" in alert_rows[0]
    # The purchase they kept, by its charge, or by its payment intent when the refund was processed
    # before that charge's own webhook (the funnel's record of the purchase names the intent).
    assert "paid charge ch_demo_video1" in alert_rows[0] or "paid payment pi_demo_video1" in alert_rows[0]
    # The access alert and the chargeback's alert.
    assert "The local alert sink received 2 message(s)" in out
    dispute_rows = [
        line for line in out.splitlines() if re.search(r"\bdispute\b", line) and "dp_demo" in line
    ]
    assert dispute_rows, "the chargeback's alert is listed"


def _check_the_dashboard(out: str) -> None:
    """What the demo prints is enough to sign in and follow the story in a browser."""
    url = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/app/)", out).group(1)
    email, password = re.search(r"Sign in as (\S+) with password (\S+)", out).groups()
    with httpx.Client(base_url=url.removesuffix("/app/"), timeout=10) as browser:
        sign_in_page = browser.get("/app/sign-in").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', sign_in_page).group(1)
        signed = browser.post(
            "/app/sign-in", data={"email": email, "password": password, "csrf_token": token, "next": "/app/"}
        )
        assert signed.status_code == 303, signed.text[-500:]
        aiko = browser.get("/app/customers/aiko@example.jp").text
        assert all(f"installment {k} of 3" in aiko for k in (1, 2, 3))
        assert "JST" in aiko  # the demo shows times in Asia/Tokyo
        alerts = browser.get("/app/alerts").text
        assert (
            alerts.count('class="alert-row"') == 2
            and "ch_demo_video2" in alerts
            and "dp_demo_member2" in alerts
        )
        ben = browser.get("/app/customers/ben@example.com").text
        assert 'data-kind="dispute"' in ben and "needs_response" in ben

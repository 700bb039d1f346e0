"""The README's demo command, run as a user runs it, prints the expected records and one alert."""

import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
    pytest.mark.skipif(
        bool(os.environ.get("TEST_DATABASE_URL")),
        reason="the demo always runs on the embedded SQLite default",
    ),
]


def test_the_demo_shows_all_installments_the_refund_notes_and_exactly_one_access_alert(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_", "BROKER", "REDIS_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker", "demo"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
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
    assert "The local alert sink received 1 message(s)" in out

"""The receiver refuses to start without a webhook secret (verification can never be off)."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.integration.stack import PYTHON, Stack, free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("webhook_secret", [None, "", " , "], ids=["unset", "empty", "only separators"])
def test_the_receiver_refuses_to_start_without_a_webhook_secret_and_says_which_setting_is_missing(
    tmp_path, webhook_secret: str | None
):
    api_key = "sk_test_" + uuid.uuid4().hex + "Startup"
    env = Stack.base_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        BROKER="redis",
        STRIPE_API_KEY=api_key,
        LOG_FORMAT="json",
    )  # DEV_MODE is not set: base_env drops every app setting from the inherited environment
    if webhook_secret is not None:
        env["STRIPE_WEBHOOK_SECRET"] = webhook_secret
    argv = [PYTHON, "-m", "worker", "web", "--host", "127.0.0.1", "--port", str(free_port())]

    try:
        done = subprocess.run(
            argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the receiver kept running without a webhook secret (killed after 30 s):\n{exc.stderr}")

    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "STRIPE_WEBHOOK_SECRET" in done.stderr
    assert api_key not in output
    assert "Traceback" not in output
    assert not (tmp_path / "var").exists(), "no dev secret may be generated outside DEV_MODE"

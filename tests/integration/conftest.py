"""Fixtures for the integration tests: one real stack per session, checked before every test."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator

import pytest

from tests.integration.stack import REDIS_SERVER, FakeStripe, Stack


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripe]:
    server = FakeStripe()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def api_key() -> str:
    """A Stripe key unique to this run, so the secrets test can look for it in every output."""
    return "sk_test_" + uuid.uuid4().hex + "Integration"


@pytest.fixture(scope="session")
def _session_stack(tmp_path_factory, fake_stripe: FakeStripe, api_key: str) -> Iterator[Stack]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed; the integration tests run a real one")
    stack = Stack(tmp_path_factory.mktemp("stack"), api_key=api_key, stripe_api_base=fake_stripe.url)
    try:
        stack.start_redis()
        migrated = stack.cli("migrate")
        assert migrated.returncode == 0, f"migrate failed:\n{migrated}"
        stack.start_web()
        stack.start_worker()
        yield stack
    finally:
        stack.stop_all()
        stack.close_database()


@pytest.fixture
def stack(_session_stack: Stack) -> Stack:
    """The session's stack, with every component running (a test that broke one gets it restarted)."""
    restarts = [
        (name, start)
        for name, process, start in (
            ("redis-server", _session_stack.redis, _session_stack.start_redis),
            ("receiver", _session_stack.web, _session_stack.start_web),
            ("worker", _session_stack.worker, _session_stack.start_worker),
        )
        if process is None or not process.alive()
    ]
    for name, start in restarts:
        warnings.warn(f"the {name} had stopped (after an earlier test); restarting it", stacklevel=1)
        start()
    return _session_stack


@pytest.fixture
def uid() -> str:
    """A short id part unique to the test, for event, charge and refund ids."""
    return uuid.uuid4().hex[:12]

"""Running the stand-in: in a background thread for tests and benchmarks, or in the foreground.

It only ever listens on 127.0.0.1: it serves fake payment data with any test key and no real auth,
so it must not be reachable from other machines.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import uvicorn

from stripe_standin.app import create_app
from stripe_standin.faults import FaultQueue
from stripe_standin.render import LATEST
from stripe_standin.requestlog import RequestLog
from stripe_standin.store import Store

if TYPE_CHECKING:
    import stripe

LOOPBACK = "127.0.0.1"
TEST_API_KEY = "sk_test_standin"


class NotLoopback(ValueError):
    pass


def require_loopback(host: str) -> str:
    if host != LOOPBACK:
        raise NotLoopback(f"stripe-standin only listens on {LOOPBACK}, not {host!r}")
    return host


def _config(app: Any, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **options)


def serve_forever(store: Store, port: int, host: str = LOOPBACK, **app_options: Any) -> None:
    """Serve in the foreground until interrupted (what `python -m stripe_standin` runs)."""
    require_loopback(host)
    uvicorn.Server(_config(create_app(store, **app_options), host=host, port=port)).run()


class StandinServer:
    """The stand-in on a free (or given) 127.0.0.1 port in a daemon thread.

    with StandinServer(store) as server:
        client = server.client()
        client.v1.charges.list(params={"limit": 100})
        server.faults.add(kind="rate_limit", path="/v1/charges", count=2)
        server.requests.count("GET", "/v1/charges")
    """

    def __init__(
        self, store: Store | None = None, *, port: int = 0, host: str = LOOPBACK, **app_options: Any
    ):
        self.host = require_loopback(host)
        self.app = create_app(store, **app_options)
        self.standin = self.app.state.standin
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, port))
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(_config(self.app))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def store(self) -> Store:
        return self.standin.store

    @property
    def faults(self) -> FaultQueue:
        return self.standin.faults

    @property
    def requests(self) -> RequestLog:
        return self.standin.requests

    def reset(self, store: Store | None = None) -> Store:
        """Between tests: no faults, no counted requests, no idempotency keys; optionally a new store."""
        return self.standin.reset(store)

    def start(self, timeout: float = 10.0) -> StandinServer:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="stripe-standin", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("stripe-standin did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client(
        self,
        api_key: str = TEST_API_KEY,
        *,
        stripe_version: str = LATEST,
        timeout: float = 30,
        **options: Any,
    ) -> stripe.StripeClient:
        """A stripe-python client configured as the worker's, pointed at this server."""
        import stripe

        return stripe.StripeClient(
            api_key,
            base_addresses={"api": self.url},
            http_client=stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True),
            stripe_version=stripe_version,
            **options,
        )

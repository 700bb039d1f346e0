"""The Starlette app: Stripe's `/v1` endpoints over a Store, plus `/_standin/*` admin endpoints for tests.

Every `/v1` request goes through the same steps, in Stripe's order: it is counted, authenticated
(`Authorization: Bearer sk_test_...`), then may be failed by a queued fault, then a POST with an
`Idempotency-Key` may be replayed, and only then does the resource code run. Responses carry Stripe's
`Request-Id` and `Stripe-Version` headers.

Admin endpoints (no API key; the server only listens on 127.0.0.1):
- POST /_standin/faults   JSON fault, list of faults, or {"faults": [...]}; see faults.py
- GET /_standin/faults    pending faults;  DELETE /_standin/faults clears them
- GET /_standin/requests  {"total": 5, "by_path": {"GET /v1/charges": 3},
                           "by_route": {"GET /v1/charges/{id}": 2}}
- DELETE /_standin/requests resets the counts;  GET /_standin/store: objects per collection
- POST /_standin/reset    forgets faults, counts and idempotency keys (the objects stay)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripe_standin import resources
from stripe_standin.errors import StripeAPIError, authentication, invalid_request, unrecognized_url
from stripe_standin.faults import FaultQueue
from stripe_standin.idempotency import IdempotencyCache, Saved
from stripe_standin.params import ParamError, parse_query
from stripe_standin.render import LATEST
from stripe_standin.requestlog import RequestLog
from stripe_standin.store import COLLECTIONS, Store

log = logging.getLogger(__name__)

TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")
_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
    "See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/."
)
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class Standin:
    """What the app serves from; reachable as `app.state.standin` and from the server helper."""

    store: Store
    api_key: str | None = None
    default_api_version: str = LATEST
    faults: FaultQueue = field(default_factory=FaultQueue)
    requests: RequestLog = field(default_factory=RequestLog)
    idempotency: IdempotencyCache = field(default_factory=IdempotencyCache)

    def reset(self, store: Store | None = None) -> Store:
        """Forget faults, request counts and idempotency keys; serve from `store` when one is given."""
        if store is not None:
            self.store = store
        self.faults.clear()
        self.requests.reset()
        self.idempotency.clear()
        return self.store


def _mask(key: str) -> str:
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "****"


def _api_key(request: Request, standin: Standin) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    key = ""
    if scheme.lower() == "bearer":
        key = credentials.strip()
    elif scheme.lower() == "basic":
        # curl -u sk_test_...: sends the key as the Basic user name, as Stripe accepts.
        try:
            key = base64.b64decode(credentials.strip()).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    if not key:
        raise authentication(_NO_KEY)
    if not key.startswith(TEST_KEY_PREFIXES):
        raise authentication(
            f"Invalid API Key provided: {_mask(key)}. "
            "stripe-standin accepts test-mode keys only (sk_test_..., rk_test_...)."
        )
    if standin.api_key is not None and key != standin.api_key:
        raise authentication(f"Invalid API Key provided: {_mask(key)}")
    return key


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


Handler = Callable[[resources.Call, Request], dict[str, Any]]


def api(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a resource handler in Stripe's request pipeline (see module docstring)."""

    async def endpoint(request: Request) -> Response:
        standin: Standin = request.app.state.standin
        method, path = request.method, request.url.path
        standin.requests.record(method, path)
        request_id = "req_" + secrets.token_hex(7)
        version = request.headers.get("stripe-version") or standin.default_api_version
        headers = {"Request-Id": request_id, "Stripe-Version": version}
        idempotency_key = request.headers.get("idempotency-key") if method == "POST" else None
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            api_key = _api_key(request, standin)
            fault = standin.faults.take(method, path)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                error = fault.error()
                if error is not None:
                    raise error
            params = parse_query(request.url.query)
            if method == "POST":
                params.update(parse_query(await request.body()))
            if idempotency_key:
                saved = standin.idempotency.replay(api_key, idempotency_key, method, path, params)
                if saved is not None:
                    headers.update({"Request-Id": saved.request_id, "Idempotent-Replayed": "true"})
                    return Response(saved.body, saved.status, headers, media_type="application/json")
            status, body = 200, _json(handler(resources.Call(standin.store, version, params), request))
        except StripeAPIError as error:
            headers.update(error.headers)
            status, body = error.status, _json(error.body())
        except ParamError as error:
            status, body = 400, _json(invalid_request(str(error), param=error.param).body())
        except Exception:
            log.exception("stripe-standin failed on %s %s", method, path)
            status, body = (
                500,
                _json(StripeAPIError(500, "An unknown error occurred", type="api_error").body()),
            )
        else:
            if idempotency_key:
                saved = Saved(method, path, params, status, body, request_id, time.time())
                standin.idempotency.save(api_key, idempotency_key, saved)
        return Response(body, status, headers, media_type="application/json")

    return endpoint


def _collection(request: Request) -> str:
    collection = request.path_params["collection"]
    if collection not in COLLECTIONS:
        raise unrecognized_url(request.method, request.url.path)
    return collection


def _list(call: resources.Call, request: Request) -> dict[str, Any]:
    return resources.list_objects(call, _collection(request), request.url.path)


def _retrieve(call: resources.Call, request: Request) -> dict[str, Any]:
    return resources.retrieve(call, _collection(request), request.path_params["id"])


def _update_customer(call: resources.Call, request: Request) -> dict[str, Any]:
    return resources.update_customer(call, request.path_params["id"])


def _unrecognized(call: resources.Call, request: Request) -> dict[str, Any]:
    raise unrecognized_url(request.method, request.url.path)


def _admin_error(message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": "invalid_request_error", "message": message}}, status_code=400)


async def _faults(request: Request) -> Response:
    faults: FaultQueue = request.app.state.standin.faults
    if request.method == "DELETE":
        faults.clear()
        return JSONResponse({"pending": []})
    if request.method == "POST":
        try:
            document = json.loads(await request.body() or b"{}")
            items = document.get("faults", [document]) if isinstance(document, dict) else document
            queued = [faults.add(**item).describe() for item in items]
        except (ValueError, TypeError, AttributeError) as error:
            return _admin_error(f"bad fault: {error}")
        return JSONResponse({"queued": queued, "pending": faults.pending()}, status_code=201)
    return JSONResponse({"pending": faults.pending(), "fired": faults.fired})


async def _requests(request: Request) -> Response:
    log_: RequestLog = request.app.state.standin.requests
    if request.method == "DELETE":
        log_.reset()
    return JSONResponse(log_.snapshot())


async def _store(request: Request) -> Response:
    return JSONResponse(request.app.state.standin.store.counts())


async def _reset(request: Request) -> Response:
    request.app.state.standin.reset()
    return JSONResponse({"reset": True})


def create_app(
    store: Store | None = None,
    *,
    api_key: str | None = None,
    default_api_version: str = LATEST,
) -> Starlette:
    """The ASGI app over `store`. `api_key`: accept only this key (default: any sk_test_/rk_test_ key).
    `default_api_version`: the account's version, used when a request sends no `Stripe-Version`."""
    routes = [
        Route("/_standin/faults", _faults, methods=["GET", "POST", "DELETE"]),
        Route("/_standin/requests", _requests, methods=["GET", "DELETE"]),
        Route("/_standin/store", _store, methods=["GET"]),
        Route("/_standin/reset", _reset, methods=["POST"]),
        Route("/v1/customers/{id}", api(_update_customer), methods=["POST"]),
        Route("/v1/{collection}", api(_list), methods=["GET"]),
        Route("/v1/{collection}/{id}", api(_retrieve), methods=["GET"]),
        Route("/{path:path}", api(_unrecognized), methods=ALL_METHODS),
    ]
    app = Starlette(routes=routes)
    app.state.standin = Standin(store if store is not None else Store(), api_key, default_api_version)
    return app

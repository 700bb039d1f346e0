"""The HTTP receiver: verify, store, enqueue by id, answer. Nothing else happens in the request."""

from __future__ import annotations

import hmac
import json
import logging
import sys

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from handlers.funnel import FunnelPayloadError
from models import Database
from worker.jobs import broker as broker_module
from worker.ops import metrics
from worker.receiver.event_writer import DatabaseUnavailable, EventWriter
from worker.receiver.intake import Enqueue, funnel_event
from worker.receiver.signature import SignatureError, StaleTimestamp, verify
from worker.receiver.stripe_events import InvalidJSON, NotAStripeEvent, ParsedEvent, parse_event

log = logging.getLogger(__name__)


# The GIL switch interval of the `web` process (Python's default: 0.005 s); see app_from_settings.
RECEIVER_SWITCH_INTERVAL_SECONDS = 0.0005

# The /readyz entry for the event writer's write probe.
WRITES_CHECK = "database_writes"


class BodyTooLarge(Exception):
    pass


class MissingWebhookSecret(SystemExit):
    def __init__(self) -> None:
        super().__init__(
            "STRIPE_WEBHOOK_SECRET is not set. Set it to your endpoint's signing secret (whsec_...), "
            "several separated by commas during a rotation, or run with DEV_MODE=1 for a local demo."
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _declared_too_large(content_length: str | None, limit: int) -> bool:
    # isascii(): "²" passes str.isdigit() but not int().
    return (
        bool(content_length and content_length.isascii() and content_length.isdigit())
        and int(content_length) > limit
    )


async def _read_body(request: Request, limit: int) -> bytes:
    if _declared_too_large(request.headers.get("content-length"), limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_asgi_body(scope: dict, receive, limit: int) -> bytes:
    """The body of a raw ASGI request, refusing more than `limit` bytes (declared or sent)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and _declared_too_large(value.decode("latin-1"), limit):
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyTooLarge  # nobody is listening for an answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class _StripeFastPath:
    """POST /webhooks/stripe straight on ASGI, everything else through Starlette.

    The webhook is the one hot path: skipping Starlette's request, routing and response objects
    saves a large share of the receiver's CPU per webhook (see the README's performance section).
    """

    def __init__(self, app: Starlette, handle, writer: EventWriter) -> None:
        self.app = app
        self.handle = handle
        # Its `writer_healthy` and `last_write_error` are for readiness and metrics (also on
        # `app.state.event_writer` inside the Starlette app).
        self.writer = writer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/webhooks/stripe":
            status, document = await self.handle(scope, receive)
            key = (document.get("received"), document.get("duplicate"))
            body, headers = _ANSWERS.get(key) or _answer(document)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _answer(document: dict) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(document, separators=(",", ":")).encode()
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


# The two answers to an accepted webhook, built once (keyed by their "received" and "duplicate");
# uvicorn only reads the headers list.
_ANSWERS = {(True, dup): _answer({"received": True, "duplicate": dup}) for dup in (False, True)}


def create_app(
    *,
    db: Database,
    enqueue: Enqueue,
    secrets: list[str],
    tolerance_seconds: int = 300,
    max_body_bytes: int = 1024 * 1024,
    readiness_checks: dict | None = None,
    reported_checks: dict | None = None,
    funnel_token: str | None = None,
    queue_depths: metrics.QueueDepths | None = None,
    enqueue_many=None,
    metrics_token: str | None = None,
    dashboard: Starlette | None = None,
) -> _StripeFastPath:
    """The receiver. Refuses to exist without at least one webhook secret: verification is never off.

    The funnel endpoint exists only when `funnel_token` is set (at least 16 characters).
    `/readyz` answers 503 when a `readiness_checks` dependency is down or when the event writer cannot
    commit a write (its probe: a read check alone passes on a read-only database), with a one-line
    `reason`; `reported_checks` (Redis) are shown but do not make it 503: without Redis the receiver
    still accepts and stores events safely, and a platform that took it out of rotation would only
    delay them.
    `/metrics` shows queue depths (and `redis_up`) only when `queue_depths` is given, and asks for
    `metrics_token` as a bearer token when one is set (its figures reveal sales volume).
    `dashboard`, when given, is served under /app/ (worker.dashboard: staff pages behind sign-in).

    """
    if not secrets:
        raise MissingWebhookSecret()
    if funnel_token is not None and len(funnel_token) < 16:
        raise SystemExit("FUNNEL_WEBHOOK_TOKEN must be at least 16 characters (it is the only protection)")
    checks = readiness_checks or {"database": db.ping}
    webhooks = metrics.WebhookCounter()
    writer = EventWriter(db, enqueue, enqueue_many)
    # One registry per app; database_up is 0 while the receiver cannot commit (the writer says so).
    registry = metrics.receiver_registry(
        webhooks, db, queue_depths, write_health=lambda: writer.writer_healthy
    )

    def rejected(endpoint: str, reason: str, status: int, message: str) -> tuple[int, dict]:
        webhooks.inc(endpoint, "rejected", reason)
        return status, {"error": message}

    def reject(endpoint: str, reason: str, status: int, message: str) -> JSONResponse:
        status, document = rejected(endpoint, reason, status, message)
        return JSONResponse(document, status_code=status)

    async def stored(endpoint: str, event: ParsedEvent, raw: str) -> tuple[int, dict]:
        try:
            new = await writer.submit(event, raw)
        except DatabaseUnavailable:
            # 503 makes the sender retry later; nothing was committed.
            return rejected(endpoint, "db_unavailable", 503, "database unavailable, retry later")
        webhooks.inc(endpoint, "accepted" if new else "duplicate")
        return 200, {"received": True, "duplicate": not new}

    async def store(endpoint: str, event: ParsedEvent, raw: str) -> JSONResponse:
        status, document = await stored(endpoint, event, raw)
        return JSONResponse(document, status_code=status)

    async def stripe_webhook(scope, receive) -> tuple[int, dict]:
        try:
            body = await _read_asgi_body(scope, receive, max_body_bytes)
        except BodyTooLarge:
            return rejected("stripe", "too_large", 413, f"body larger than {max_body_bytes} bytes")
        signature = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"stripe-signature"), None)
        try:
            verify(body, signature, secrets, tolerance_seconds=tolerance_seconds)
            event = parse_event(body)
        except SignatureError as exc:
            log.info("webhook rejected: %s", exc)
            reason = "stale_timestamp" if isinstance(exc, StaleTimestamp) else "bad_signature"
            return rejected("stripe", reason, 400, str(exc))
        except NotAStripeEvent as exc:
            log.info("webhook rejected: %s", exc)
            reason = "malformed" if isinstance(exc, InvalidJSON) else "not_an_event"
            return rejected("stripe", reason, 400, str(exc))
        return await stored("stripe", event, body.decode("utf-8"))

    async def method_not_allowed(_: Request) -> JSONResponse:
        return _error(405, "use POST")

    async def funnel_webhook(request: Request) -> JSONResponse:
        given = request.path_params.get("token") or request.query_params.get("token") or ""
        if funnel_token is None:
            message = "funnel webhooks are not enabled (set FUNNEL_WEBHOOK_TOKEN)"
            return reject("funnel", "disabled", 404, message)
        if not hmac.compare_digest(given.encode(), funnel_token.encode()):
            log.info("funnel webhook rejected: wrong or missing token")
            return reject("funnel", "bad_token", 401, "wrong or missing token")
        try:
            body = await _read_body(request, max_body_bytes)
        except BodyTooLarge:
            return reject("funnel", "too_large", 413, f"body larger than {max_body_bytes} bytes")
        try:
            event, envelope = funnel_event(body)
        except FunnelPayloadError as exc:
            log.info("funnel webhook rejected: %s", exc)
            return reject("funnel", "malformed", 400, str(exc))
        return await store("funnel", event, envelope)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in {**checks, **(reported_checks or {})}.items():
            try:
                await run_in_threadpool(check)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"unavailable ({type(exc).__name__})"
        # A read-only file, a full disk or a lock held too long pass a read check: commit a write.
        try:
            await writer.probe()
            results[WRITES_CHECK] = "ok"
        except DatabaseUnavailable as exc:
            results[WRITES_CHECK] = f"failing ({exc})"
        required = [*checks, WRITES_CHECK]
        ready = all(results[name] == "ok" for name in required)
        results["status"] = (
            ("ready" if all(v == "ok" for v in results.values()) else "degraded") if ready else "down"
        )
        if not ready:
            failing = [f"{name} {results[name]}" for name in required if results[name] != "ok"]
            results["reason"] = "; ".join(failing)
        return JSONResponse(results, status_code=200 if ready else 503)

    async def metrics_page(request: Request) -> Response:
        if metrics_token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), metrics_token.encode()):
                return _error(401, "metrics need Authorization: Bearer <METRICS_TOKEN>")
        text = await run_in_threadpool(metrics.render, registry)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    app = Starlette(
        routes=[
            Route("/webhooks/stripe", method_not_allowed, methods=["GET", "PUT", "DELETE", "PATCH"]),
            Route("/webhooks/funnel", funnel_webhook, methods=["POST"]),
            Route("/webhooks/funnel/{token}", funnel_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            *([Mount("/app", app=dashboard)] if dashboard is not None else []),
        ]
    )
    app.state.event_writer = writer
    return _StripeFastPath(app, stripe_webhook, writer)


def app_from_settings() -> _StripeFastPath:
    """The production app: settings, database and the Redis broker of this process."""
    from worker import runtime
    from worker.dashboard.app import config_from_settings, create_dashboard
    from worker.jobs import actors
    from worker.receiver.devsecret import webhook_secrets
    from worker.settings import get_settings

    # The event writer thread goes back for the GIL after every call into SQLite or Redis; with
    # Python's default 5 ms switch interval it waits that long whenever the event loop is busy, and
    # every request of its batch waits with it. 0.5 ms: about 10% more webhooks/s in
    # tests/bench/receiver_bench.py (README, Performance). This process only serves the receiver.
    sys.setswitchinterval(RECEIVER_SWITCH_INTERVAL_SECONDS)
    settings = get_settings()
    secrets = webhook_secrets(settings)
    if not secrets:
        raise MissingWebhookSecret()  # before anything (the dashboard's key file) is made on disk
    db = runtime.database()
    broker_module.fail_fast(actors.broker)
    return create_app(
        db=db,
        enqueue=lambda event_id, account: actors.process_event.send(event_id, account),
        enqueue_many=lambda keys: broker_module.enqueue_many(actors.broker, actors.process_event, keys),
        metrics_token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
        secrets=secrets,
        tolerance_seconds=settings.webhook_tolerance_seconds,
        max_body_bytes=settings.webhook_max_body_bytes,
        readiness_checks={"database": db.ping},
        reported_checks={"redis": lambda: broker_module.ping(actors.broker)},
        queue_depths=lambda: {
            name: broker_module.queue_depth(actors.broker, name)
            for name in (broker_module.EVENTS_QUEUE, broker_module.ALERTS_QUEUE)
        },
        funnel_token=settings.funnel_webhook_token.get_secret_value()
        if settings.funnel_webhook_token
        else None,
        dashboard=create_dashboard(db, config_from_settings(settings)),
    )

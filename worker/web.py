"""The HTTP receiver: verify, store, enqueue by id, answer. Nothing else happens in the request."""

from __future__ import annotations

import hmac
import logging

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from handlers.funnel import FunnelPayloadError
from models import Database
from worker import broker as broker_module
from worker.intake import Enqueue, accept_event, funnel_event
from worker.signature import SignatureError, verify
from worker.stripe_events import NotAStripeEvent, ParsedEvent, parse_event

log = logging.getLogger(__name__)


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


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


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
) -> Starlette:
    """The receiver. Refuses to exist without at least one webhook secret: verification is never off.

    The funnel endpoint exists only when `funnel_token` is set (at least 16 characters).
    `/readyz` answers 503 when a `readiness_checks` dependency is down; `reported_checks` (Redis) are
    shown but do not make it 503: without Redis the receiver still accepts and stores events safely,
    and a platform that took it out of rotation would only delay them.
    """
    if not secrets:
        raise MissingWebhookSecret()
    if funnel_token is not None and len(funnel_token) < 16:
        raise SystemExit("FUNNEL_WEBHOOK_TOKEN must be at least 16 characters (it is the only protection)")
    checks = readiness_checks or {"database": db.ping}

    async def store(event: ParsedEvent, raw: str) -> JSONResponse:
        try:
            new, _ = await run_in_threadpool(accept_event, db, enqueue, event, raw)
        except SQLAlchemyError as exc:
            # 503 makes the sender retry later; nothing was committed.
            log.error(
                "database unavailable, event not stored (%s)",
                type(exc).__name__,
                extra={"event_id": event.id},
            )
            return _error(503, "database unavailable, retry later")
        return JSONResponse({"received": True, "duplicate": not new})

    async def stripe_webhook(request: Request) -> JSONResponse:
        try:
            body = await _read_body(request, max_body_bytes)
        except BodyTooLarge:
            return _error(413, f"body larger than {max_body_bytes} bytes")
        try:
            verify(
                body, request.headers.get("stripe-signature"), secrets, tolerance_seconds=tolerance_seconds
            )
            event = parse_event(body)
        except SignatureError as exc:
            log.info("webhook rejected: %s", exc)
            return _error(400, str(exc))
        except NotAStripeEvent as exc:
            log.info("webhook rejected: %s", exc)
            return _error(400, str(exc))
        return await store(event, body.decode("utf-8"))

    async def funnel_webhook(request: Request) -> JSONResponse:
        given = request.path_params.get("token") or request.query_params.get("token") or ""
        if funnel_token is None:
            return _error(404, "funnel webhooks are not enabled (set FUNNEL_WEBHOOK_TOKEN)")
        if not hmac.compare_digest(given.encode(), funnel_token.encode()):
            log.info("funnel webhook rejected: wrong or missing token")
            return _error(401, "wrong or missing token")
        try:
            body = await _read_body(request, max_body_bytes)
        except BodyTooLarge:
            return _error(413, f"body larger than {max_body_bytes} bytes")
        try:
            event, envelope = funnel_event(body)
        except FunnelPayloadError as exc:
            log.info("funnel webhook rejected: %s", exc)
            return _error(400, str(exc))
        return await store(event, envelope)

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
        ready = all(results[name] == "ok" for name in checks)
        results["status"] = (
            ("ready" if all(v == "ok" for v in results.values()) else "degraded") if ready else "down"
        )
        return JSONResponse(results, status_code=200 if ready else 503)

    return Starlette(
        routes=[
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route("/webhooks/funnel", funnel_webhook, methods=["POST"]),
            Route("/webhooks/funnel/{token}", funnel_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


def app_from_settings() -> Starlette:
    """The production app: settings, database and the Redis broker of this process."""
    from worker import actors, runtime
    from worker.devsecret import webhook_secrets
    from worker.settings import get_settings

    settings = get_settings()
    db = runtime.database()
    broker_module.fail_fast(actors.broker)
    return create_app(
        db=db,
        enqueue=lambda event_id, account: actors.process_event.send(event_id, account),
        secrets=webhook_secrets(settings),
        tolerance_seconds=settings.webhook_tolerance_seconds,
        max_body_bytes=settings.webhook_max_body_bytes,
        readiness_checks={"database": db.ping},
        reported_checks={"redis": lambda: broker_module.ping(actors.broker)},
        funnel_token=settings.funnel_webhook_token.get_secret_value()
        if settings.funnel_webhook_token
        else None,
    )

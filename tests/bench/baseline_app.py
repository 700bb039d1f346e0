"""The benchmark's floor: the least a webhook receiver can do, as a raw ASGI app with no framework.

It does what the real receiver must do and nothing else: read the body, verify the Stripe signature
with the receiver's own `worker.receiver.signature.verify`, take the event id out of the JSON, LPUSH it
to Redis, answer 200. No database, no de-duplication, no validation beyond the signature.

Redis client: `redis.asyncio` (redis-py 8, the same library the receiver reaches Redis through via
Dramatiq, in its asyncio form), one pooled client for the process. That is what a minimal async receiver
would actually be written with; a hand-rolled RESP writer pipelining every LPUSH on one socket would be
faster, but it would measure a Redis client nobody ships rather than the cost of "one Redis round trip per
webhook". The receiver's Dramatiq enqueue does more than one LPUSH (an EVALSHA of its dispatch script
that stores the message and pushes its id); that difference is part of what the benchmark measures.

Served exactly like `python -m worker web` (worker/ops/cli.py:cmd_web): `uvicorn.run` with the same keyword
arguments, so the event loop (uvloop) and HTTP parser (httptools) are the same "auto" choices.

Run: python -m tests.bench.baseline_app --host 127.0.0.1 --port 8001
(env: REDIS_URL, STRIPE_WEBHOOK_SECRET; optional BASELINE_REDIS_KEY).
"""

from __future__ import annotations

import argparse
import json
import os

import redis.asyncio as aioredis
import uvicorn

from worker.receiver.signature import SignatureError, verify

TOLERANCE_SECONDS = 300  # the receiver's default WEBHOOK_TOLERANCE_SECONDS
JSON_HEADERS = [(b"content-type", b"application/json")]


def _secrets() -> list[str]:
    raw = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
    secrets = [part.strip() for part in raw.split(",") if part.strip()]
    if not secrets:
        raise SystemExit("STRIPE_WEBHOOK_SECRET is not set")
    return secrets


class BaselineApp:
    def __init__(self, redis_url: str, secrets: list[str], key: str) -> None:
        self.redis_url = redis_url
        self.secrets = secrets
        self.key = key
        self.redis: aioredis.Redis | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Created inside the server's loop; connected on first use, like the receiver's broker.
                self.redis = aioredis.Redis.from_url(self.redis_url)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.redis is not None:
                    await self.redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}')
            return
        if path != "/webhooks/stripe" or method != "POST":
            await _respond(send, 404, b'{"error":"not found"}')
            return

        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)

        header = None
        for name, value in scope["headers"]:
            if name == b"stripe-signature":
                header = value.decode("latin-1")
                break
        try:
            verify(body, header, self.secrets, tolerance_seconds=TOLERANCE_SECONDS)
            event_id = json.loads(body)["id"]
        except (SignatureError, ValueError, KeyError, TypeError) as exc:
            await _respond(send, 400, json.dumps({"error": str(exc)}).encode())
            return
        await self.redis.lpush(self.key, event_id)
        await _respond(send, 200, b'{"received":true}')


async def _respond(send, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description="Minimal raw-ASGI Stripe webhook receiver (bench baseline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    app = BaselineApp(
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        secrets=_secrets(),
        key=os.environ.get("BASELINE_REDIS_KEY", "baseline:events"),
    )
    # Same arguments as worker/ops/cli.py:cmd_web (loop and http left on "auto": uvloop and httptools).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()

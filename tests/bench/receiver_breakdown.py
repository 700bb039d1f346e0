"""Where one webhook's time goes in the receiver: each step of its request path, timed on its own.

receiver_bench.py measures the whole receiver over HTTP; this runs the same code in one process, one
webhook at a time (no concurrency, no HTTP client), and reports mean wall and CPU microseconds per
webhook, and the wall-time p99 and maximum (a COMMIT that also checkpoints the WAL shows there), for:

  verify            worker.receiver.signature.verify
  parse             worker.receiver.stripe_events.parse_event (orjson, checked against the strict decoder)
  parse, strict     the strict json decoder alone (what parse_event did before orjson)
  store (FULL)      worker.receiver.intake.store_event: one SQLAlchemy session, INSERT ... ON CONFLICT, COMMIT
  store (NORMAL)    the same with PRAGMA synchronous=NORMAL
  raw sqlite3       the same INSERT and COMMIT through the sqlite3 module (FULL): SQLite's own share
  enqueue           actors.process_event.send (Dramatiq's Redis broker: EVALSHA of its dispatch script)
  enqueue_many/16   worker.jobs.broker.enqueue_many, 16 at a time (the receiver's way), per message
  redis LPUSH       one plain LPUSH with redis-py (what the baseline does instead)
  app, in-process   the whole Starlette app called as ASGI (no network), store FULL + enqueue

It starts its own redis-server on a free loopback port and uses temporary SQLite files.

Run from the repository root:  .venv/bin/python tests/bench/receiver_breakdown.py [--count 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.bench.receiver_bench import Processes, SetupError, clean_env, start_redis  # noqa: E402
from tests.bench.webhook_factory import WebhookFactory  # noqa: E402
from tests.stripe_fixtures import TEST_SECRET  # noqa: E402


def timed(label: str, count: int, step) -> dict:
    """Run `step(i)` for i in range(count): mean wall and CPU microseconds per call, and the wall tail."""
    walls = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        step(i)
        walls.append(time.perf_counter() - t)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    walls.sort()
    return {
        "step": label,
        "wall_us": round(wall / count * 1e6, 1),
        "cpu_us": round(cpu / count * 1e6, 1),
        "wall_p99_us": round(walls[min(count - 1, math.ceil(0.99 * count) - 1)] * 1e6, 1),
        "wall_max_us": round(walls[-1] * 1e6, 1),
    }


def run(count: int, workdir: Path, redis_port: int) -> list[dict]:
    # The worker modules read their settings (and build the broker) when first imported.
    env = clean_env()
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'app.db'}",
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        STRIPE_WEBHOOK_SECRET=TEST_SECRET,
        LOG_LEVEL="WARNING",
    )
    import redis

    from models import Database
    from models.migrate import upgrade
    from worker import runtime
    from worker.jobs import actors
    from worker.jobs.broker import enqueue_many
    from worker.receiver.intake import store_event
    from worker.receiver.signature import verify
    from worker.receiver.stripe_events import (
        check_storable,
        decode_body,
        event_from_dict,
        parse_event,
        parse_json,
    )
    from worker.receiver.web import app_from_settings

    factory = WebhookFactory(TEST_SECRET, seed=3)
    secrets = [TEST_SECRET]
    results = []

    def fresh(n: int):
        hooks = factory.make(n)
        return hooks, [parse_event(h.body) for h in hooks]

    hooks, _ = fresh(count)
    results.append(timed("verify", count, lambda i: verify(hooks[i].body, hooks[i].signature, secrets,
                                                           tolerance_seconds=300)))  # fmt: skip
    results.append(timed("parse", count, lambda i: parse_event(hooks[i].body)))

    def strict(i: int) -> None:
        text = decode_body(hooks[i].body)
        check_storable(text, document := parse_json(text))
        event_from_dict(document)

    results.append(timed("parse, strict decoder only", count, strict))

    for mode in ("FULL", "NORMAL"):
        db = Database(f"sqlite:///{workdir / f'store-{mode}.db'}", sqlite_synchronous=mode)
        upgrade(db)
        hooks, events = fresh(count)

        def store(i: int, db=db, hooks=hooks, events=events) -> None:
            store_event(db, events[i], hooks[i].body.decode())

        results.append(timed(f"store ({mode})", count, store))
        db.dispose()

    # SQLite's own cost: the same row, same pragmas, same BEGIN IMMEDIATE, through the sqlite3 module.
    raw_path = workdir / "raw.db"
    db = Database(f"sqlite:///{raw_path}")
    upgrade(db)
    db.dispose()
    conn = sqlite3.connect(raw_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    hooks, events = fresh(count)
    sql = (
        "INSERT INTO events (id, account, type, api_version, livemode, created, payload, status, attempts, "
        "received_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id, account) DO NOTHING "
        "RETURNING id, account"
    )

    def raw_insert(i: int) -> None:
        e = events[i]
        now = time.strftime("%Y-%m-%d %H:%M:%S.000000")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, (e.id, e.account, e.type, e.api_version, e.livemode, now, hooks[i].body.decode(),
                           "received", 0, now, now)).fetchall()  # fmt: skip
        conn.execute("COMMIT")

    results.append(timed("raw sqlite3 INSERT+COMMIT (FULL)", count, raw_insert))
    conn.close()

    hooks, events = fresh(count)
    send = actors.process_event.send
    results.append(timed("enqueue (Dramatiq send)", count, lambda i: send(events[i].id, "")))
    keys = [(e.id, "") for e in events]
    batches = count // 16

    def send_16(i: int) -> None:
        enqueue_many(actors.broker, actors.process_event, keys[16 * i : 16 * i + 16])

    batch = timed("enqueue_many, 16 per call", batches, send_16)
    for field in ("wall_us", "cpu_us"):
        batch[field] = round(batch[field] / 16, 1)
    batch["step"] = "enqueue_many, 16 per call (per message)"
    results.append(batch)
    plain = redis.Redis(host="127.0.0.1", port=redis_port, db=3)
    results.append(timed("redis LPUSH (redis-py)", count, lambda i: plain.lpush("plain", events[i].id)))
    plain.close()

    upgrade(runtime.database())
    app = app_from_settings()
    hooks, _ = fresh(count)
    results.append(asyncio.run(_asgi_timing(app, hooks)))
    return results


async def _asgi_timing(app, hooks) -> dict:
    """The Starlette app end to end, called directly as ASGI: framework + thread pool + store + enqueue."""
    statuses: list[int] = []

    async def call(hook) -> None:
        body = hook.body
        sent = False

        async def receive():
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/webhooks/stripe", "raw_path": b"/webhooks/stripe",
            "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"stripe-signature", hook.signature.encode())],
        }  # fmt: skip
        await app(scope, receive, send)

    await call(hooks[0])  # first call: lazy imports, pools
    walls = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for hook in hooks[1:]:
        t = time.perf_counter()
        await call(hook)
        walls.append(time.perf_counter() - t)
    n = len(hooks) - 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if set(statuses) != {200}:
        raise SystemExit(f"the app answered {sorted(set(statuses))}")
    walls.sort()
    return {
        "step": "app, in-process (store FULL + enqueue)",
        "wall_us": round(wall / n * 1e6, 1),
        "cpu_us": round(cpu / n * 1e6, 1),
        "wall_p99_us": round(walls[min(n - 1, math.ceil(0.99 * n) - 1)] * 1e6, 1),
        "wall_max_us": round(walls[-1] * 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="webhooks per step (2000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="receiver-breakdown-"))
    procs = Processes(workdir)
    try:
        redis_port = start_redis(procs, workdir)
        results = run(args.count, workdir, redis_port)
    except SetupError as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"Per webhook, one at a time, in one process ({args.count} webhooks per step):")
        print(f"  {'step':42} {'wall us':>9} {'CPU us':>9} {'wall p99':>9} {'wall max':>9}")
        for r in results:
            print(
                f"  {r['step']:42} {r['wall_us']:>9,.1f} {r['cpu_us']:>9,.1f} {r['wall_p99_us']:>9,.0f} "
                f"{r['wall_max_us']:>9,.0f}"
            )
        print("Reproduce: cd " + str(REPO_ROOT) + " && .venv/bin/python tests/bench/receiver_breakdown.py "
              f"--count {args.count}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

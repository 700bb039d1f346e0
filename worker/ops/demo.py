"""`python -m worker demo`: the whole worker on a realistic scenario, with no network and no Stripe account.

Runs the real receiver, a real redis-server, real Dramatiq worker processes and a SQLite database, with
the local Stripe stand-in in place of Stripe's API and a local Slack-compatible sink for alerts, all on
127.0.0.1. It posts signed Stripe events and funnel webhooks for the scenario in `worker.ops.demo_data`,
lets the nightly run find the payment whose webhooks never arrived, then prints the complete sales view,
the refund notes and the open alerts. It then leaves the staff dashboard running (a demo admin account
is printed) until Ctrl-C, and stops everything it started; `--exit` stops at once instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from worker.ops import demo_data
from worker.ops.devstack import find_redis_server, install_redis_server
from worker.receiver.signature import sign

DEMO_DIR = Path("var/demo")
CUSTOMERS = ("aiko@example.jp", "ben@example.com", "mika@example.com", "ken@example.com")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Sink(BaseHTTPRequestHandler):
    """A Slack-compatible incoming webhook that keeps what it is sent."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        _Sink.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args) -> None:
        pass


def _wait(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.2)


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 90 - len(title)))


DEMO_ADMIN = "demo-admin@example.com"


def _serve_until_stopped(base: str, password: str, keep_running: bool) -> None:
    """Print how to open the dashboard; with `keep_running`, wait for Ctrl-C (or SIGTERM)."""
    _section("The staff dashboard")
    if not keep_running:
        print("(not kept running with --exit: run `make demo` to browse it)")
        return
    print(f"Dashboard: {base}/app/")
    print(f"Sign in as {DEMO_ADMIN} with password {password}")
    print("Follow the month there, under Customers:")
    print("  aiko@example.jp   the plan's three installments; the nightly run found the third (Overview)")
    print("  mika@example.com  the duplicate purchase's refund note; acknowledge its access alert on Alerts")
    print("  ben@example.com   the chargeback on his second membership payment")
    print("The demo keeps running until you press Ctrl-C.", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping the demo.", flush=True)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def run(keep_running: bool = True) -> int:
    try:
        from stripe_standin import StandinServer, Store
    except ImportError:
        # The stand-in is a development tool, not part of the installed package.
        print(
            "demo: needs the source checkout (its stripe_standin/ stands in for Stripe); run it there",
            file=sys.stderr,
        )
        return 2

    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    DEMO_DIR.mkdir(parents=True)
    scenario = demo_data.build()
    store = Store()
    store.add_many(scenario.objects)

    processes: list[subprocess.Popen] = []
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    web_port, redis_port = _free_port(), _free_port()
    webhook_secret, funnel_token = "whsec_demo" + secrets.token_hex(16), secrets.token_hex(16)
    log = (DEMO_DIR / "processes.log").open("w")
    try:
        with StandinServer(store) as stripe_api:
            env = {
                **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER", "DEV_MODE")},
                "DATABASE_URL": f"sqlite:///{DEMO_DIR}/demo.db",
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "STRIPE_API_KEY": "sk_test_demo" + secrets.token_hex(8),
                "STRIPE_API_BASE": stripe_api.url,
                "STRIPE_WEBHOOK_SECRET": webhook_secret,
                "FUNNEL_WEBHOOK_TOKEN": funnel_token,
                "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{sink.server_port}/hooks/demo",
                "LOG_LEVEL": "WARNING",
                "DISPLAY_TIMEZONE": "Asia/Tokyo",
                "DASHBOARD_SECRET_KEY": secrets.token_urlsafe(48),
            }
            redis_server = find_redis_server() or install_redis_server()
            processes.append(
                subprocess.Popen(
                    [
                        redis_server,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(redis_port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            cli = [sys.executable, "-m", "worker"]
            subprocess.run([*cli, "migrate"], env=env, check=True, stderr=log)
            processes.append(subprocess.Popen([*cli, "web", "--port", str(web_port)], env=env, stderr=log))
            processes.append(
                subprocess.Popen([*cli, "worker", "--processes", "1", "--threads", "4"], env=env, stderr=log)
            )
            base = f"http://127.0.0.1:{web_port}"
            _wait("the receiver", lambda: _up(f"{base}/healthz"))

            missing = ", ".join(scenario.undelivered)
            print(
                f"Posting {len(scenario.funnel_webhooks)} funnel purchases and {len(scenario.events)} signed "
                f"Stripe events (the webhooks of {missing} never arrive)"
            )

            with httpx.Client(timeout=10) as client:
                for purchase in scenario.funnel_webhooks:
                    client.post(f"{base}/webhooks/funnel/{funnel_token}", json=purchase).raise_for_status()
                for document in scenario.events:
                    body = json.dumps(document).encode()
                    headers = {
                        "Stripe-Signature": sign(body, webhook_secret),
                        "Content-Type": "application/json",
                    }
                    client.post(f"{base}/webhooks/stripe", content=body, headers=headers).raise_for_status()
            _wait("every event to be processed", lambda: _unfinished(cli, env) == 0)

            _section("The nightly run (python -m worker reconcile)")
            nightly = subprocess.run(
                [*cli, "reconcile"], env=env, check=True, stderr=log, stdout=subprocess.PIPE, text=True
            )
            print(nightly.stdout, end="")
            unnamed = [c for c in scenario.undelivered if f"charge {c} " not in nightly.stdout]
            if unnamed:
                raise SystemExit(f"demo: the nightly run did not name {', '.join(unnamed)}")
            _wait("the alerts to reach the sink", lambda: len(_Sink.received) >= 2, timeout=30)

            _section("Complete sales view (python -m worker sales)")
            subprocess.run([*cli, "sales"], env=env, check=True, stderr=log)
            _section("Refund notes on customer records (python -m worker notes EMAIL)")
            for email in CUSTOMERS:
                subprocess.run([*cli, "notes", email], env=env, check=True, stderr=log)
            _section("Open alerts (python -m worker alerts --status open)")
            subprocess.run([*cli, "alerts", "--status", "open"], env=env, check=True, stderr=log)
            print(f"\nThe local alert sink received {len(_Sink.received)} message(s):")
            for message in _Sink.received:
                print("  " + message.get("text", "").splitlines()[0])
            print(f"\nEverything ran on 127.0.0.1; database {DEMO_DIR}/demo.db, process logs {log.name}.")

            password = secrets.token_urlsafe(12)
            subprocess.run(
                [*cli, "users", "add", DEMO_ADMIN, "--role", "admin"],
                env=env,
                check=True,
                input=password + "\n",
                text=True,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            _serve_until_stopped(base, password, keep_running)

    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        sink.shutdown()
        log.close()
    return 0


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _unfinished(cli: list[str], env: dict) -> int:
    out = subprocess.run(
        [*cli, "events", "--json"], env=env, capture_output=True, text=True, check=True
    ).stdout
    return sum(1 for e in json.loads(out) if e["status"] not in ("done", "ignored", "dead"))

"""The pipe's ceiling for tests/bench/reconcile_bench.py: page the reconciliation's three lists with a
bare httpx client (no Stripe SDK, no database) and print what it read as one JSON document.

It sends what the worker sends (same paths, `created` window, `limit=100`, `expand[0]=data.invoice` on
invoice payments, same `Stripe-Version`, keep-alive on one connection) and decodes every page with the
standard `json` module, as stripe-python does, because the cursor of the next page is inside the body.
So its time is the stand-in's serving cost plus HTTP and JSON on this side: what no reconciliation
can beat however little it does with the objects.

    .venv/bin/python tests/bench/reconcile_baseline.py --base http://127.0.0.1:PORT \
        --since 946684800 --until 4102444800 --stripe-version 2026-10-28.endive
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx

# The same lists, in the same order and with the same expansions as handlers/reconcile.py RESOURCES.
LISTS = (
    ("charges", "/v1/charges", ()),
    ("invoice_payments", "/v1/invoice_payments", ("data.invoice",)),
    ("refunds", "/v1/refunds", ()),
)
PAGE = 100


def page_through(client: httpx.Client, path: str, since: int, until: int, expand: tuple[str, ...]) -> dict:
    objects = pages = 0
    starting_after: str | None = None
    while True:
        params: dict[str, str | int] = {"created[gte]": since, "created[lt]": until, "limit": PAGE}
        for index, field in enumerate(expand):
            params[f"expand[{index}]"] = field
        if starting_after:
            params["starting_after"] = starting_after
        response = client.get(path, params=params)
        pages += 1
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        # Decoded in full, not scanned for the last id: the worker needs every object, and so does this.
        page = json.loads(response.text)
        data = page.get("data") or []
        objects += len(data)
        if not page.get("has_more") or not data:
            return {"objects": objects, "pages": pages}
        starting_after = data[-1]["id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="http://127.0.0.1:PORT of the stand-in")
    parser.add_argument("--since", type=int, required=True, help="created[gte], Unix seconds")
    parser.add_argument("--until", type=int, required=True, help="created[lt], Unix seconds")
    parser.add_argument("--api-key", default="sk_test_bench_baseline")
    parser.add_argument("--stripe-version", required=True)
    parser.add_argument("--timeout", type=float, default=20.0, help="per request, as STRIPE_TIMEOUT_SECONDS")
    args = parser.parse_args(argv)
    if not args.base.startswith("http://127.0.0.1:"):
        parser.error("the baseline only talks to a stand-in on 127.0.0.1")

    headers = {"Authorization": f"Bearer {args.api_key}", "Stripe-Version": args.stripe_version}
    by_resource: dict[str, dict] = {}
    began = time.perf_counter()
    with httpx.Client(base_url=args.base, headers=headers, timeout=args.timeout) as client:
        for name, path, expand in LISTS:
            by_resource[name] = page_through(client, path, args.since, args.until, expand)
    seconds = time.perf_counter() - began
    json.dump(
        {
            "seconds_in_process": round(seconds, 4),
            "objects": sum(r["objects"] for r in by_resource.values()),
            "pages": sum(r["pages"] for r in by_resource.values()),
            "by_resource": by_resource,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pipe's ceiling for tests/bench/reconcile_bench.py: page the nightly run's lists with a bare httpx
client (no Stripe SDK, no database) and print what it read as one JSON document.

The lists, their order, their params and their expansions are handlers/reconcile.py `RESOURCES`, never a
copy: `--print-lists` imports handlers.reconcile and prints them as JSON (`resource_specs(RESOURCES)`);
tests/bench/reconcile_bench.py runs that once and hands the result back with `--lists`, so the measured
process imports neither the worker nor SQLAlchemy and its time and memory stay the pipe's. Run on its own
without `--lists`, it imports handlers.reconcile itself (~0.4 s and ~35 MB more).

It sends what the worker sends (same paths, `created` window, each list's own params such as
`status=all`, its `expand[i]`, `limit=100`, same `Stripe-Version`, keep-alive on one connection) and
decodes every page with the standard `json` module, as stripe-python does, because the cursor of the
next page is inside the body. So its time is the stand-in's serving cost plus HTTP and JSON on this side:
what no reconciliation can beat however little it does with the objects. It lists as the platform
account (no `Stripe-Account` header), as the benchmark's worker does.

    .venv/bin/python tests/bench/reconcile_baseline.py --base http://127.0.0.1:PORT \
        --since 946684800 --until 4102444800 --stripe-version 2026-10-28.endive
    .venv/bin/python tests/bench/reconcile_baseline.py --print-lists

The helpers (`resource_specs`, `list_query`, `PAGE`) are imported by the benchmark too, so this module
imports httpx only when it pages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
# worker/stripe_api.py StripeReader.pages asks for 100 a request (not exposed as a name there).
PAGE = 100


def resource_specs(resources: Iterable[Any]) -> list[dict[str, Any]]:
    """handlers.reconcile `Resource`s as plain JSON-able dicts, in their order."""
    return [
        {
            "name": r.name,
            "path": r.path,
            "params": [[key, value] for key, value in r.params],
            "expand": list(r.expand),
        }
        for r in resources
    ]


def load_specs() -> list[dict[str, Any]]:
    """The lists handlers/reconcile.py pages (imports it: SQLAlchemy, SQLModel, the models)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from handlers.reconcile import RESOURCES

    return resource_specs(RESOURCES)


def list_query(
    spec: dict[str, Any], since: int, until: int, *, limit: int = PAGE, starting_after: str | None = None
) -> dict[str, str | int]:
    """The query string of one page, as handlers/reconcile.py `_Run.list_resource` builds its params
    (`created` window, then the resource's params, then `expand`) and stripe-python encodes them."""
    query: dict[str, str | int] = {"created[gte]": since, "created[lt]": until}
    for key, value in spec["params"]:
        query[key] = value
    for index, field in enumerate(spec["expand"]):
        query[f"expand[{index}]"] = field
    query["limit"] = limit
    if starting_after:
        query["starting_after"] = starting_after
    return query


def page_through(client: httpx.Client, spec: dict[str, Any], since: int, until: int) -> dict:
    objects = pages = 0
    starting_after: str | None = None
    while True:
        response = client.get(
            spec["path"], params=list_query(spec, since, until, starting_after=starting_after)
        )
        pages += 1
        if response.status_code != 200:
            raise RuntimeError(f"GET {spec['path']} answered {response.status_code}: {response.text[:300]}")
        # Decoded in full, not scanned for the last id: the worker needs every object, and so does this.
        page = json.loads(response.text)
        data = page.get("data") or []
        objects += len(data)
        if not page.get("has_more") or not data:
            return {"objects": objects, "pages": pages}
        starting_after = data[-1]["id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--print-lists",
        action="store_true",
        help="print handlers/reconcile.py RESOURCES as the JSON --lists takes, and page nothing",
    )
    parser.add_argument("--base", help="http://127.0.0.1:PORT of the stand-in")
    parser.add_argument("--since", type=int, help="created[gte], Unix seconds")
    parser.add_argument("--until", type=int, help="created[lt], Unix seconds")
    parser.add_argument("--api-key", default="sk_test_bench_baseline")
    parser.add_argument("--stripe-version")
    parser.add_argument("--timeout", type=float, default=20.0, help="per request, as STRIPE_TIMEOUT_SECONDS")
    parser.add_argument(
        "--lists",
        default=None,
        help="JSON of resource_specs(handlers.reconcile.RESOURCES) (default: import handlers.reconcile)",
    )
    args = parser.parse_args(argv)
    if args.print_lists:
        json.dump(load_specs(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    missing = [
        f"--{n.replace('_', '-')}"
        for n in ("base", "since", "until", "stripe_version")
        if getattr(args, n) is None
    ]
    if missing:
        parser.error(f"required: {', '.join(missing)}")
    if not args.base.startswith("http://127.0.0.1:"):
        parser.error("the baseline only talks to a stand-in on 127.0.0.1")
    specs = json.loads(args.lists) if args.lists else load_specs()

    import httpx  # here, not at the top: the benchmark imports this module's helpers without it

    headers = {"Authorization": f"Bearer {args.api_key}", "Stripe-Version": args.stripe_version}
    by_resource: dict[str, dict] = {}
    began = time.perf_counter()
    with httpx.Client(base_url=args.base, headers=headers, timeout=args.timeout) as client:
        for spec in specs:
            by_resource[spec["name"]] = page_through(client, spec, args.since, args.until)
    seconds = time.perf_counter() - began
    json.dump(
        {
            "seconds_in_process": round(seconds, 4),
            "objects": sum(r["objects"] for r in by_resource.values()),
            "pages": sum(r["pages"] for r in by_resource.values()),
            "lists": specs,
            "by_resource": by_resource,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m stripe_standin --port 12111 [--seed FILE.json] [--generate N]`: serve on 127.0.0.1 only."""

from __future__ import annotations

import argparse
import sys

from stripe_standin.render import LATEST
from stripe_standin.server import LOOPBACK, NotLoopback, require_loopback, serve_forever
from stripe_standin.store import Store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stripe_standin", description=__doc__)
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--host", default=LOOPBACK, help=f"only {LOOPBACK} is accepted")
    parser.add_argument("--seed", action="append", default=[], help="JSON seed file (repeatable)")
    parser.add_argument("--generate", type=int, default=0, metavar="N", help="also generate N charges")
    parser.add_argument("--random-seed", type=int, default=0, help="seed of the generator (default 0)")
    parser.add_argument("--events", action="store_true", help="let the generator make events too")
    parser.add_argument("--api-key", help="accept only this key (default: any sk_test_/rk_test_ key)")
    parser.add_argument("--api-version", default=LATEST, help="version used when a request sends none")
    args = parser.parse_args(argv)
    try:
        require_loopback(args.host)
    except NotLoopback as refused:
        parser.error(str(refused))

    store = Store()
    for path in args.seed:
        store.load_seed(path)
    if args.generate:
        from stripe_standin.generate import populate

        populate(store, args.generate, seed=args.random_seed, events=args.events)
    counts = ", ".join(f"{n} {name}" for name, n in store.counts().items() if n)
    print(f"stripe-standin on http://{args.host}:{args.port} ({counts or 'empty'})", file=sys.stderr)
    serve_forever(store, args.port, args.host, api_key=args.api_key, default_api_version=args.api_version)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A local, Stripe-compatible API stand-in for tests, benchmarks and demos (127.0.0.1 only).

from stripe_standin import Store, StandinServer
store = Store()
store.add({"id": "ch_1", "object": "charge", "amount": 5000, "created": 1_763_000_000})
with StandinServer(store) as server:
    charge = server.client().v1.charges.retrieve("ch_1")
"""

from stripe_standin.app import create_app
from stripe_standin.faults import Fault
from stripe_standin.render import LATEST
from stripe_standin.server import StandinServer, require_loopback
from stripe_standin.store import Created, Store

__all__ = ["LATEST", "Created", "Fault", "StandinServer", "Store", "create_app", "require_loopback"]

"""Tables and the database session. Importing this package registers every table on the metadata."""

from models.db import Database, insert_ignore, upsert_many, upsert_newer
from models.events import FINISHED_STATUSES, Event, EventStatus
from models.payments import Charge, Refund
from models.reconcile import ReconcileRun
from models.sales import FunnelPurchase, Invoice, InvoicePayment

__all__ = [
    "Charge",
    "Database",
    "Event",
    "EventStatus",
    "FINISHED_STATUSES",
    "FunnelPurchase",
    "Invoice",
    "InvoicePayment",
    "ReconcileRun",
    "Refund",
    "insert_ignore",
    "upsert_many",
    "upsert_newer",
]

"""Tables and the database session. Importing this package registers every table on the metadata."""

from models.customers import Alert, Customer, CustomerNote, CustomerStripeId, SubscriptionEnd
from models.db import Database, advisory_lock, dialect_insert, insert_ignore, upsert_many, upsert_newer
from models.events import FINISHED_STATUSES, Event, EventStatus
from models.note_mirrors import StripeNoteMirror
from models.payments import Charge, Dispute, Refund
from models.plan_rows import PlanRowRecord
from models.reconcile import ReconcilePending, ReconcileRun
from models.sales import FunnelPurchase, Invoice, InvoicePayment, Subscription
from models.sales_rows import SalesRowRecord
from models.staff import AuditEntry, SignInFailure, StaffUser

__all__ = [
    "AuditEntry",
    "SignInFailure",
    "StaffUser",
    "Alert",
    "Customer",
    "CustomerNote",
    "CustomerStripeId",
    "SubscriptionEnd",
    "advisory_lock",
    "dialect_insert",
    "Charge",
    "Dispute",
    "Database",
    "Event",
    "EventStatus",
    "FINISHED_STATUSES",
    "FunnelPurchase",
    "Invoice",
    "InvoicePayment",
    "ReconcilePending",
    "ReconcileRun",
    "PlanRowRecord",
    "SalesRowRecord",
    "Refund",
    "StripeNoteMirror",
    "Subscription",
    "insert_ignore",
    "upsert_many",
    "upsert_newer",
]

"""What happened in a generated seller month, as plain records: the catalog, the people, every payment's fate.

The Stripe side (months_stripe.py) writes these records while it builds Stripe's objects; the ground
truth (months.py) is read from them and never from the objects, so tests can hold one against the other.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime

DAY = 86_400
HOUR = 3_600
START = 1_793_491_200  # 2026-11-01T00:00:00Z: after 2026-10-28.endive, so an upgraded endpoint is plausible
SPAN_DAYS = 120
PURCHASE_DAYS = 70  # purchases fall in the first 70 days, leaving time for plans to run their course
END = START + SPAN_DAYS * DAY
HORIZON = END - DAY  # nothing new is scheduled after this; follow-ups within minutes still land before END

# Refund statuses that take money back (a failed or canceled refund takes none).
COUNTED_REFUND_STATUSES = frozenset({"succeeded", "pending", "requires_action"})
OPEN_DISPUTE_STATUSES = frozenset(
    {"needs_response", "under_review", "warning_needs_response", "warning_under_review"}
)


@dataclass(frozen=True)
class Product:
    """A funnel product; plans and subscriptions carry the Stripe price (`stripe_plan`) they bill."""

    funnel_id: int
    name: str
    amount: int  # minor units (whole yen for JPY)
    currency: str
    kind: str  # "one_time" | "installment" | "subscription"
    payments: int | None = None  # N: the funnel cancels the subscription after N paid invoices
    interval: str | None = None
    interval_count: int | None = None
    plan_id: str | None = None
    stripe_product: str | None = None
    cancel_after_field: int | None = None  # `stripe_cancel_after_payments` as the funnel sends it


ONE_TIME = (
    Product(2178300, "Seminar Recording", 12_000, "jpy", "one_time"),
    Product(2178310, "Online Course: Funnel Basics", 29_800, "jpy", "one_time"),
    Product(2178311, "E-book: Start Here", 1_980, "jpy", "one_time"),
    Product(2178312, "Workshop Ticket", 9_800, "jpy", "one_time"),
    Product(2178313, "Video Course Bundle", 49_800, "jpy", "one_time"),
    Product(2178320, "VIP Coaching Session", 49_700, "usd", "one_time"),
    Product(2178321, 'Ebook "Start Here"', 1_999, "usd", "one_time"),
    Product(2178322, "Masterclass Replay", 9_700, "usd", "one_time"),
    Product(2178330, "Workbook (EU edition)", 2_900, "eur", "one_time"),
)
INSTALLMENTS = (
    Product(2178221, "Online Course - 3 Payments", 33_300, "usd", "installment", 3, "month", 1,
            "cf_course_3pay", "prod_R7cQx3PayCourse", 3),
    Product(2178240, "Coaching Program (3 payments)", 33_000, "jpy", "installment", 3, "month", 1,
            "cf_coaching_3pay", "prod_R7cQxCoach3Pay", 3),
    Product(2178241, "Mastermind - 6 Weekly Payments", 16_500, "jpy", "installment", 6, "week", 1,
            "cf_mastermind_6wk", "prod_R7cQxMaster6Wk", 6),
    Product(2178242, "Business Academy - 6 Payments", 19_700, "usd", "installment", 6, "week", 2,
            "cf_academy_6pay", "prod_R7cQxAcademy6P", 6),
    Product(2178243, "Design Course - 3 Payments", 9_900, "eur", "installment", 3, "week", 2,
            "cf_design_3pay", "prod_R7cQxDesign3Pa", 3),
)  # fmt: skip
SUBSCRIPTIONS = (
    Product(3300112, "Members Club (monthly)", 4_900, "usd", "subscription", None, "month", 1,
            "cf_club_monthly", "prod_R7cQxClubMonth", 50_000_000),
    Product(3300113, "Online Community (monthly)", 9_800, "jpy", "subscription", None, "month", 1,
            "cf_community_monthly", "prod_R7cQxCommunity", None),
    Product(3300114, "Members Site (monthly)", 2_980, "jpy", "subscription", None, "month", 1,
            "cf_members_monthly", "prod_R7cQxMembers", 50_000_000),
    Product(3300115, "Coaching Calls (every 2 weeks)", 2_900, "usd", "subscription", None, "week", 2,
            "cf_calls_biweekly", "prod_R7cQxCalls2Wk", 50_000_000),
)  # fmt: skip

FIRST_NAMES = ("Taro", "Hanako", "Yui", "Sota", "Hina", "Ren", "Mei", "Aoi", "Riku", "Sakura", "Kenji", "Emi",
               "Ann", "Bob", "Alex", "Sam", "Maria", "Lukas")  # fmt: skip
LAST_NAMES = ("Yamada", "Suzuki", "Sato", "Tanaka", "Ito", "Watanabe", "Nakamura", "Kobayashi", "O'Brien",
              "Smith", "Garcia", "Muller")  # fmt: skip
DOMAINS = ("example.com", "example.jp", "example.co.jp", "example.org")


@dataclass
class Person:
    first: str
    last: str
    email: str  # canonical: lower case, no spaces
    customers: list[str] = field(default_factory=list)  # the cus_ ids the funnel made for this person
    products: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class RefundFact:
    id: str
    charge: ChargeFact
    amount: int
    created: int
    reason: str | None
    status: str  # the final status


@dataclass
class DisputeFact:
    id: str
    charge: ChargeFact
    created: int
    inquiry: bool
    status: str  # the final status
    charge_event_fate: str = ""  # "dropped" | "late": what delivery does to the disputed charge's event


@dataclass
class ChargeFact:
    """One payment attempt: a succeeded or failed charge."""

    id: str
    payment_intent: str
    created: int
    amount: int
    currency: str
    purchase: PurchaseFact
    succeeded: bool
    installment: int | None = None  # k: the invoice of its subscription this attempt tried to pay
    subscription: SubscriptionFact | None = None
    refunds: list[RefundFact] = field(default_factory=list)
    disputes: list[DisputeFact] = field(default_factory=list)

    @property
    def refunded_amount(self) -> int:
        return sum(r.amount for r in self.refunds if r.status in COUNTED_REFUND_STATUSES)


@dataclass
class InvoiceFact:
    id: str
    number: int  # k: 1 for the checkout invoice
    created: int
    status: str = "draft"
    payment_intent: str | None = None
    failed_attempts: int = 0


@dataclass
class SubscriptionFact:
    id: str
    item_id: str
    purchase: PurchaseFact
    period_start: int
    period_end: int
    status: str = "active"
    invoices: list[InvoiceFact] = field(default_factory=list)
    ended_by: str | None = None  # "funnel" (a plan's N-th payment) | "seller"
    canceled_at: int | None = None  # when the cancellation was asked for
    unpaid_at_cancel: bool = False  # an invoice was still unpaid when it was cancelled

    @property
    def paid_invoices(self) -> int:
        return sum(1 for invoice in self.invoices if invoice.status == "paid")

    @property
    def open_invoices(self) -> list[InvoiceFact]:
        return [invoice for invoice in self.invoices if invoice.status == "open"]


@dataclass
class PurchaseFact:
    """One funnel order; `channel` says how the funnel's record of it reaches the tool."""

    order_id: int
    product: Product
    person: Person
    typed_email: str  # as the buyer typed it: mixed case, sometimes with spaces
    customer_id: str
    created: int
    channel: str  # "webhook" | "csv" | "both" | "none"
    scenario: str = "single"  # "single" | "duplicate" | "rebuy_in_window" | "rebuy_late" | "two_seats"
    charges: list[ChargeFact] = field(default_factory=list)
    subscription: SubscriptionFact | None = None

    @property
    def first_charge(self) -> ChargeFact:
        return self.charges[0]

    @property
    def recorded(self) -> bool:
        return self.channel != "none"


@dataclass
class Ledger:
    purchases: list[PurchaseFact] = field(default_factory=list)
    charges: list[ChargeFact] = field(default_factory=list)
    refunds: list[RefundFact] = field(default_factory=list)
    disputes: list[DisputeFact] = field(default_factory=list)
    subscriptions: list[SubscriptionFact] = field(default_factory=list)


class Ids:
    """Stripe-looking ids from their own random stream, so the story's choices never shift them."""

    ALPHABET = string.ascii_letters + string.digits

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"stripe-standin-months-ids-{seed}")
        self.used: set[str] = set()

    def body(self, length: int = 24) -> str:
        while True:
            text = "3" + "".join(self.rng.choices(self.ALPHABET, k=length - 1))
            if text not in self.used:
                self.used.add(text)
                return text

    def new(self, prefix: str, length: int = 24) -> str:
        return prefix + self.body(length)

    def hex(self, length: int) -> str:
        return "".join(self.rng.choices("0123456789ABCDEF", k=length))


def add_interval(when: int, interval: str, count: int) -> int:
    """The next billing date as Stripe bills: weeks exactly, months on the same day (clamped to month end)."""
    if interval == "week":
        return when + 7 * count * DAY
    if interval == "day":
        return when + count * DAY
    moment = datetime.fromtimestamp(when, UTC)
    month_index = moment.month - 1 + count
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, _days_in_month(year, month))
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _days_in_month(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return (following - datetime(year, month, 1, tzinfo=UTC)).days

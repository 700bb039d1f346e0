"""Realistic, uniquely numbered, freshly signed `charge.succeeded` webhooks for the receiver benchmark.

Built with tests/stripe_fixtures.py (`event`, `charge`, `signed`) so the bodies are exactly what the test
suite considers a Stripe event. The fixture's charge is a ~400-byte sketch; a real `charge.succeeded`
delivery is 2-3 KB of JSON, so every field Stripe sends for a card charge (API 2024-06-20) is filled in
with plausible, varying values rather than padding: the receiver parses, stores and indexes the body,
and a benchmark on a 400-byte body would flatter it.
"""

from __future__ import annotations

import base64
import itertools
import random
import time
from dataclasses import dataclass

from tests.stripe_fixtures import charge, event, signed

_FIRST_NAMES = ["Ana", "Ben", "Chloé", "Dev", "Erin", "Farid", "Grace", "Hiro", "Inés", "Jonas", "Kemi"]
_LAST_NAMES = ["Okafor", "Schmidt", "Nguyen", "García", "Kowalski", "Haddad", "Smith", "Tanaka", "Rossi"]
_CITIES = [
    ("Austin", "TX", "78701"),
    ("Portland", "OR", "97205"),
    ("Denver", "CO", "80202"),
    ("Chicago", "IL", "60607"),
    ("Brooklyn", "NY", "11201"),
]
_PRODUCTS = [
    (2700, "Funnel Starter Course"),
    (4700, "Email Copy Templates"),
    (9700, "Webinar Replay Bundle"),
    (19700, "Coaching Call (60 min)"),
    (49700, "Mastermind Annual Pass"),
]
_BRANDS = [("visa", "4242"), ("mastercard", "4444"), ("amex", "8431"), ("visa", "1881")]


@dataclass(frozen=True)
class SignedWebhook:
    event_id: str
    signature: str  # the Stripe-Signature header value
    body: bytes


class WebhookFactory:
    """Makes webhooks whose ids never repeat within one benchmark run (the receiver de-duplicates by id)."""

    def __init__(self, secret: str, *, seed: int = 1) -> None:
        self.secret = secret
        self.rng = random.Random(seed)
        # A per-run token keeps ids unique even if a database were reused across runs.
        self.token = "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(4)) + str(
            int(time.time()) % 100000
        )
        self._numbers = itertools.count(1)

    def make(self, count: int) -> list[SignedWebhook]:
        """`count` new webhooks, signed now: send them within the receiver's 300 s tolerance."""
        now = int(time.time())
        return [self._one(next(self._numbers), now) for _ in range(count)]

    def _one(self, number: int, now: int) -> SignedWebhook:
        rng = self.rng
        suffix = f"3Q{self.token}{number:09d}"  # Stripe ids are ~24 characters after the prefix
        amount, product = rng.choice(_PRODUCTS)
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        email = f"{first.lower()}.{last.lower()}{rng.randint(1, 999)}@example.com"
        city, state, postal = rng.choice(_CITIES)
        brand, last4 = rng.choice(_BRANDS)
        receipt = base64.urlsafe_b64encode(rng.randbytes(96)).decode().rstrip("=")
        obj = charge(
            f"ch_{suffix}",
            amount=amount,
            currency="usd",
            customer=f"cus_{suffix[:14]}",
            description=product,
            created=now - rng.randint(0, 5),
            application=None,
            application_fee=None,
            application_fee_amount=None,
            balance_transaction=f"txn_{suffix}",
            billing_details={
                "address": {
                    "city": city,
                    "country": "US",
                    "line1": f"{rng.randint(10, 9999)} {rng.choice(['Oak', 'Elm', 'Main', 'Pine'])} St",
                    "line2": None,
                    "postal_code": postal,
                    "state": state,
                },
                "email": email,
                "name": f"{first} {last}",
                "phone": None,
            },
            calculated_statement_descriptor="FUNNELCO* COURSE",
            captured=True,
            destination=None,
            dispute=None,
            disputed=False,
            failure_balance_transaction=None,
            failure_code=None,
            failure_message=None,
            fraud_details={},
            invoice=None,
            metadata={
                "order_id": f"ord_{number:08d}",
                "funnel": "spring-webinar-2026",
                "funnel_step": rng.choice(["checkout", "order-bump", "upsell-1", "downsell-1"]),
                "affiliate_id": f"aff_{rng.randint(100, 999)}",
            },
            on_behalf_of=None,
            outcome={
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "risk_score": rng.randint(0, 64),
                "seller_message": "Payment complete.",
                "type": "authorized",
            },
            payment_method=f"pm_{suffix}",
            payment_method_details={
                "card": {
                    "amount_authorized": amount,
                    "authorization_code": f"{rng.randint(0, 999999):06d}",
                    "brand": brand,
                    "checks": {
                        "address_line1_check": "pass",
                        "address_postal_code_check": "pass",
                        "cvc_check": "pass",
                    },
                    "country": "US",
                    "exp_month": rng.randint(1, 12),
                    "exp_year": rng.randint(2027, 2032),
                    "extended_authorization": {"status": "disabled"},
                    "fingerprint": base64.b64encode(rng.randbytes(12), b"Xq").decode(),
                    "funding": "credit",
                    "incremental_authorization": {"status": "unavailable"},
                    "installments": None,
                    "last4": last4,
                    "mandate": None,
                    "multicapture": {"status": "unavailable"},
                    "network": brand,
                    "network_token": {"used": False},
                    "network_transaction_id": str(rng.randint(10**14, 10**15 - 1)),
                    "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
                    "regulated_status": "unregulated",
                    "three_d_secure": None,
                    "wallet": None,
                },
                "type": "card",
            },
            radar_options={},
            receipt_email=email,
            receipt_number=None,
            receipt_url=f"https://pay.stripe.com/receipts/payment/{receipt}",
            review=None,
            shipping=None,
            source=None,
            source_transfer=None,
            statement_descriptor=None,
            statement_descriptor_suffix="COURSE",
            transfer_data=None,
            transfer_group=None,
        )
        document = event("charge.succeeded", obj, event_id=f"evt_{suffix}", created=now)
        document["request"] = {"id": f"req_{suffix[:14]}", "idempotency_key": f"{rng.getrandbits(128):032x}"}
        body, headers = signed(document, self.secret, timestamp=now)
        return SignedWebhook(document["id"], headers["Stripe-Signature"], body)

"""Disputes on Stripe: chargebacks (funds withdrawn at once, won or lost) and inquiries (no funds move
until one turns into a chargeback), with the `charge.dispute.*` events Stripe sends for each step."""

from __future__ import annotations

from typing import Any

from stripe_standin.months_facts import ChargeFact, DisputeFact
from stripe_standin.months_stripe import Account
from stripe_standin.shapes import DEFAULTS


class Disputes:
    def __init__(self, account: Account) -> None:
        self.account = account

    def open_dispute(
        self, charge_fact: ChargeFact, when: int, *, inquiry: bool, reason: str, due_by: int
    ) -> DisputeFact:
        """A chargeback (funds withdrawn at once) or an inquiry (no funds move; refunding is possible)."""
        dispute = {
            "id": self.account.ids.new("dp_"),
            "object": "dispute",
            "created": when,
            "amount": charge_fact.amount,
            "charge": charge_fact.id,
            "currency": charge_fact.currency,
            "payment_intent": charge_fact.payment_intent,
            "reason": reason,
            "status": "warning_needs_response" if inquiry else "needs_response",
            "is_charge_refundable": inquiry,
            "balance_transactions": [] if inquiry else [self._dispute_transaction(charge_fact, when, -1)],
            "evidence_details": {
                "due_by": due_by,
                "enhanced_eligibility": {},
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            },
            "payment_method_details": {
                "type": "card",
                "card": {
                    "brand": "visa",
                    "case_type": "inquiry" if inquiry else "chargeback",
                    "network_reason_code": "10.4" if reason == "fraudulent" else "13.1",
                },
            },
        }
        charge = self.account.copy(charge_fact.id)
        charge["disputed"] = True
        self.account.save(when, charge)
        self.account.save(when, dispute)
        fact = DisputeFact(dispute["id"], charge_fact, when, inquiry, dispute["status"])
        charge_fact.disputes.append(fact)
        self.account.ledger.disputes.append(fact)
        self.account.emit(when, "charge.dispute.created", dispute)
        if not inquiry:
            self.account.emit(when, "charge.dispute.funds_withdrawn", dispute)
        return fact

    def _dispute_transaction(self, charge_fact: ChargeFact, when: int, sign: int) -> dict[str, Any]:
        return {
            "id": self.account.ids.new("txn_"),
            "object": "balance_transaction",
            "amount": sign * charge_fact.amount,
            "created": when,
            "currency": charge_fact.currency,
            "reporting_category": "dispute" if sign < 0 else "dispute_reversal",
            "type": "adjustment",
        }

    def submit_evidence(self, fact: DisputeFact, when: int) -> None:
        dispute = self.account.copy(fact.id)
        details = dispute["evidence_details"]
        previous = {
            "status": dispute["status"],
            "evidence_details": {k: details[k] for k in ("has_evidence", "submission_count")},
        }
        dispute["status"] = fact.status = "warning_under_review" if fact.inquiry else "under_review"
        dispute["evidence_details"] = {
            **details,
            "has_evidence": True,
            "submission_count": details["submission_count"] + 1,
        }
        # Stripe sends every evidence field; the seller filled in one.
        dispute["evidence"] = {
            **DEFAULTS["dispute"]["evidence"],
            "uncategorized_text": "Order and access log.",
        }
        self.account.save(when, dispute)
        self.account.emit(when, "charge.dispute.updated", dispute, previous, requested=True)

    def escalate(self, fact: DisputeFact, when: int, due_by: int) -> None:
        """The issuer turns an inquiry into a chargeback: funds are withdrawn now."""
        dispute = self.account.copy(fact.id)
        previous = {"status": dispute["status"], "is_charge_refundable": True}
        dispute.update(
            status="needs_response",
            is_charge_refundable=False,
            balance_transactions=[self._dispute_transaction(fact.charge, when, -1)],
            evidence_details={**dispute["evidence_details"], "due_by": due_by, "has_evidence": False},
        )
        dispute["payment_method_details"] = {
            "type": "card",
            "card": {**dispute["payment_method_details"]["card"], "case_type": "chargeback"},
        }
        fact.status, fact.inquiry = "needs_response", False
        self.account.save(when, dispute)
        self.account.emit(when, "charge.dispute.updated", dispute, previous)
        self.account.emit(when, "charge.dispute.funds_withdrawn", dispute)

    def close_dispute(self, fact: DisputeFact, when: int, status: str) -> None:
        """`won`/`lost` end a chargeback (won: the funds come back), `warning_closed` an inquiry."""
        dispute = self.account.copy(fact.id)
        previous = {"status": dispute["status"]}
        dispute.update(status=status, is_charge_refundable=False)
        if status == "won":
            reinstated = self._dispute_transaction(fact.charge, when, +1)
            dispute["balance_transactions"] = [*dispute["balance_transactions"], reinstated]
        fact.status = status
        self.account.save(when, dispute)
        self.account.emit(when, "charge.dispute.closed", dispute, previous)
        if status == "won":
            self.account.emit(when, "charge.dispute.funds_reinstated", dispute)

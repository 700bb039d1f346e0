"""How to order two descriptions of one object that Stripe stamped with the same second.

Used by `upsert_newer(..., rank_on_tie=...)`: on a tie the higher-ranked value is kept, so the result
does not depend on which of the two events was processed last.
"""

from __future__ import annotations

from sqlalchemy import Integer, case, cast, func


def as_number(column):
    """Amounts only grow between two events of the same second (refunds add up)."""
    return func.coalesce(column, 0)


def as_flag(column):
    """A charge becomes refunded, not un-refunded, within one second."""
    return func.coalesce(cast(column, Integer), 0)


def _by_order(order: list[str]):
    def rank(column):
        return case(*[(column == value, position) for position, value in enumerate(order, start=1)], else_=0)

    return rank


# A refund moves pending -> requires_action -> succeeded, and may end failed or canceled.
refund_status = _by_order(["pending", "requires_action", "succeeded", "failed", "canceled"])

CHARGE_TIES = {"amount_refunded": as_number, "refunded": as_flag}
REFUND_TIES = {"status": refund_status}

# Refund statuses that take money back (or will); failed and canceled refunds return nothing. Every
# refunded total (the sales view, notes, the nightly report, "are refunds missing?") counts only these.
COUNTED_REFUND_STATUSES = ("succeeded", "pending", "requires_action")

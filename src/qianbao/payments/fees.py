"""Merchant discount fees: how much of a payment the operator keeps, and how much of it a refund returns.

Pure integer arithmetic on minor units (no floats, no Decimal needed): a rate is parts per million of the
amount, rounded half-up to the fen. The fee is moved by its own ledger transfer linked to the payment, so
payer, merchant and fee account always sum to zero whatever the rounding.

Refunds return the fee pro-rata *cumulatively*: after refunds totalling `r` of a payment `a` with fee `f`,
the fee returned so far is `round(f * r / a)`. Each refund's share is the difference between two such
values, so the shares are never negative and a full refund (in any number of parts) returns exactly `f`:
no fen is lost or created by rounding.
"""

from __future__ import annotations

PPM = 1_000_000


def _half_up(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) with halves away from zero, for non-negative integers."""
    return (2 * numerator + denominator) // (2 * denominator)


def fee_rate_ppm(mcc: str, default_ppm: int, by_mcc: dict[str, int]) -> int:
    """The merchant discount rate for a category code: its own rate if configured, else the default."""
    return by_mcc.get(mcc, default_ppm)


def fee_for(amount: int, rate_ppm: int) -> int:
    """The fee on a payment: amount × rate, half-up to the minor unit; never more than the amount."""
    if amount <= 0 or rate_ppm < 0:
        raise ValueError("amount must be positive and the rate non-negative")
    return min(amount, _half_up(amount * rate_ppm, PPM))


def fee_refund(fee: int, amount: int, refunded_before: int, refund: int) -> int:
    """The fee share a refund of `refund` returns, after `refunded_before` was already refunded."""
    if not (
        0 <= refunded_before and 0 < refund and refunded_before + refund <= amount and 0 <= fee <= amount
    ):
        raise ValueError("refunds must be positive and stay within the payment")
    return _half_up(fee * (refunded_before + refund), amount) - _half_up(fee * refunded_before, amount)

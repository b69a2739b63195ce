"""Payment errors (codes in API.md) and how a ledger result code or a limit becomes one.

The error classes and builders the payment engine's decline module (`payments/engine/declines.py`)
answers with. Someone else's cap is refused by `recipient_cap_error`, which reveals nothing about their
balance.
"""

from __future__ import annotations

from typing import Any

from qianbao.error_codes import lookup, user_text
from qianbao.errors import Conflict, InvalidInput, LimitExceeded, NotFound, QianbaoError


class PaymentDeclined(QianbaoError):
    """A business rule or the ledger declined the payment: insufficient_funds, balance_cap_exceeded,
    wallet_frozen (the code is the API's, see api/problems.py)."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


class RefundExceedsPayment(QianbaoError):
    code = "refund_exceeds_payment"


class PaymentNotRefundable(Conflict):
    code = "payment_not_refundable"


class SameWallet(InvalidInput):
    code = "same_wallet"


class CurrencyMismatch(InvalidInput):
    code = "currency_mismatch"


class RecipientNotFound(NotFound):
    code = "recipient_not_found"


def recipient_not_found(detail: str, *, by: str) -> RecipientNotFound:
    """No open wallet to pay; `by` is how it was named (`phone`, `wallet_id`, `receive_code`, or the
    `payer_wallet_id` of a money request), which decides what the message tells the user to check."""
    return RecipientNotFound(detail, user_text=user_text("recipient_not_found", by))


def recipient_cap_error(**extra: Any) -> PaymentDeclined:
    """`balance_cap_exceeded` for a payment into someone else's wallet: the code and what to do, nothing
    more. Their cap, KYC tier or room left would tell the payer (by bisection) their exact balance."""
    return PaymentDeclined(
        "balance_cap_exceeded", "the recipient cannot receive this amount", next_step="lower_amount", **extra
    )


def money_json(amount: int, currency_code: str) -> dict[str, object]:
    return {"amount": amount, "currency": currency_code}


class PaymentConfirmationExpired(QianbaoError):
    code = "payment_confirmation_expired"


class PaymentNotPending(Conflict):
    code = "payment_not_pending"


def decline_error(code: str, *, currency_code: str, room: int | None = None, **extra: Any) -> QianbaoError:
    if code == "insufficient_funds":
        return PaymentDeclined(code, "the wallet's available balance is too low", **extra)
    if code == "balance_cap_exceeded":
        if room is not None:
            extra["remaining"] = money_json(room, currency_code)
        return PaymentDeclined(code, "the receiving wallet would go over its balance cap", **extra)
    if code == "wallet_frozen":
        return PaymentDeclined(code, "a wallet of this transfer is frozen or closed", **extra)
    if code == "currency_mismatch":
        return CurrencyMismatch("the wallets hold different currencies", **extra)
    if code in ("limit_exceeded_single", "limit_exceeded_daily"):
        return LimitExceeded(code, "the payment is over a KYC limit", **extra)
    if code == "payment_confirmation_expired":  # the ledger let the hold expire before it was posted
        return PaymentConfirmationExpired("the time to confirm this payment has passed", **extra)
    if code == "payment_not_pending":  # the hold was voided (canceled) or posted meanwhile
        return PaymentNotPending("the payment is no longer pending", **extra)
    if lookup(code) is not None:  # a stored decline replayed (wallet_locked, budget_exceeded, …)
        return PaymentDeclined(code, f"the payment was declined ({code})", **extra)
    return Conflict(f"the ledger refused the transfer ({code})", **extra)

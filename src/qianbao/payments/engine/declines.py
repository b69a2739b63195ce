"""Findings become errors here, and only here: the code, the HTTP status (through the error class) and
the message of every refusal of a money movement, exactly as API.md and docs/errors.md describe them.

What a decline may reveal depends on whose wallet refused: the owner of both wallets sees the room left
under their cap; a payer to someone else hears `balance_cap_exceeded` with `next_step` only, since the
recipient's limit, tier or room would let them bisect the recipient's balance.
"""

from __future__ import annotations

from typing import Any

from qianbao.errors import LimitExceeded, Locked, QianbaoError
from qianbao.findings import Finding
from qianbao.money import Money, format_money
from qianbao.payments.errors import (
    CurrencyMismatch,
    PaymentNotRefundable,
    RefundExceedsPayment,
    SameWallet,
    decline_error,
    money_json,
    recipient_cap_error,
    recipient_not_found,
)
from qianbao.wallets.errors import WalletCloseRefused, budget_exceeded, wallet_locked

_NOT_FOUND_DETAIL = {
    "phone": "no wallet is registered for this phone number",
    "receive_code": "the wallet of this code does not exist or is closed",
}


def error_for(finding: Finding, currency: str, *, reveal: bool = True, **extra: Any) -> QianbaoError:
    """The error a finding answers. `reveal` is false when the refusing wallet is someone else's."""
    code, data = finding.code, finding.data
    if code == "account_frozen":
        return Locked("account_frozen", "the account is frozen: payments are not possible", **extra)
    if code == "same_wallet":
        return SameWallet("choose a different wallet to pay into", **extra)
    if code == "currency_mismatch":
        if "asked" in data:
            return CurrencyMismatch(f"the wallet holds {data['held']}, not {data['asked']}", **extra)
        return CurrencyMismatch("the wallets hold different currencies", **extra)
    if code == "recipient_not_found":
        by = str(data.get("by", "wallet_id"))
        return recipient_not_found(_NOT_FOUND_DETAIL.get(by, "no such recipient wallet"), by=by)
    if code == "merchant_inactive":
        status = data.get("merchant_status")
        if status is not None:
            extra["merchant_status"] = status
        return Locked("merchant_inactive", "this merchant cannot accept payments at the moment", **extra)
    if code == "wallet_locked":
        return wallet_locked(
            int(data["locked_until"]), "no money may leave this wallet: it is locked", **extra
        )
    if code == "budget_exceeded":
        error = budget_exceeded(int(data["budget"]), int(data["spent"]), currency)
        error.extra.update(extra)
        return error
    if code == "limit_exceeded_single":
        return single_limit_error(int(data["tier"]), int(data["limit"]), currency, **extra)
    if code == "limit_exceeded_daily":
        return daily_limit_error(
            int(data["tier"]), int(data["limit"]), int(data["remaining"]), currency, **extra
        )
    if code == "balance_cap_exceeded":
        return cap_error(finding, currency, reveal=reveal, **extra)
    if code == "payment_not_refundable":
        status = data["payment_status"]
        return PaymentNotRefundable(f"a {status} payment cannot be refunded", payment_status=status, **extra)
    if code == "refund_exceeds_payment":
        remaining = money_json(int(data["remaining"]), currency)
        return RefundExceedsPayment("the refund is larger than what is left to refund", remaining=remaining)
    if code == "wallet_close_refused" and data.get("reason") == "exceeds_ceiling":
        return WalletCloseRefused(
            "the main wallet cannot take this wallet's balance under its balance cap",
            reason="exceeds_ceiling",
            **extra,
        )
    if code == "wallet_close_refused":  # money on hold
        return WalletCloseRefused(
            "money is on hold in this wallet: close it when the holds are settled",
            reason="pending_holds",
            next_step="retry_later",
            **extra,
        )
    return decline_error(code, currency_code=currency, **extra)


def single_limit_error(tier: int, limit: int, currency: str, **extra: Any) -> LimitExceeded:
    return LimitExceeded(
        "limit_exceeded_single",
        f"the single-payment limit of tier {tier} is {format_money(Money(limit, currency))}",
        limit=money_json(limit, currency),
        remaining=money_json(limit, currency),
        kyc_tier=tier,
        next_step="verify_identity" if tier > 1 else "contact_support",
        **extra,
    )


def daily_limit_error(tier: int, limit: int, remaining: int, currency: str, **extra: Any) -> LimitExceeded:
    return LimitExceeded(
        "limit_exceeded_daily",
        f"the daily outflow limit of tier {tier} is {format_money(Money(limit, currency))};"
        f" {format_money(Money(remaining, currency))} remains today",
        limit=money_json(limit, currency),
        remaining=money_json(remaining, currency),
        kyc_tier=tier,
        next_step="verify_identity" if tier > 1 else "try_tomorrow",
        **extra,
    )


def cap_error(finding: Finding, currency: str, *, reveal: bool, **extra: Any) -> QianbaoError:
    """`balance_cap_exceeded`: from the user-wide cap (it has a tier) or one wallet's ceiling."""
    if not reveal:
        return recipient_cap_error(**extra)
    data = finding.data
    if "tier" not in data:  # one wallet's ceiling: how much more it may take (when known)
        room = data.get("room")
        return decline_error(
            "balance_cap_exceeded", currency_code=currency, room=None if room is None else int(room), **extra
        )
    tier, limit = int(data["tier"]), int(data["limit"])
    return LimitExceeded(
        "balance_cap_exceeded",
        f"the wallets would hold more than the tier-{tier} balance cap of"
        f" {format_money(Money(limit, currency))}",
        limit=money_json(limit, currency),
        kyc_tier=tier,
        remaining=money_json(int(data["room"]), currency),
        next_step="verify_identity" if tier > 1 else "contact_support",
        **extra,
    )


def stored_decline(code: str | None, currency: str, *, reveal: bool, **extra: Any) -> QianbaoError:
    """A decline recorded earlier, raised again for a replay of the same Idempotency-Key."""
    if code == "balance_cap_exceeded" and not reveal:
        return recipient_cap_error(**extra)
    return decline_error(code or "conflict", currency_code=currency, **extra)

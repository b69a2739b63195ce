"""The payments capability's own rules of a money movement, pure: they return a `Finding` or None.

Balance and account status are the ledger's predicates (`ledger.rules`), limits and caps identity's
(`identity.limit_rules`), locks and budgets the wallets' (`wallets.spend_rules`).
"""

from __future__ import annotations

from qianbao.findings import Finding
from qianbao.ledger.model import Account, AccountStatus, ResultCode
from qianbao.ledger.rules import exceeds_credits, payer_refusal, receiver_refusal, room_under_ceiling


def same_wallet(source_wallet_id: str, target_wallet_id: str | None) -> Finding | None:
    return Finding("same_wallet") if source_wallet_id == target_wallet_id else None


def wallet_currency(wallet_currency: str, currency: str) -> Finding | None:
    """The amount's currency is the paying wallet's."""
    if wallet_currency == currency:
        return None
    return Finding("currency_mismatch", {"held": wallet_currency, "asked": currency})


def wallets_currency(source_currency: str, target_currency: str) -> Finding | None:
    if source_currency == target_currency:
        return None
    return Finding("currency_mismatch", {"held": source_currency, "target": target_currency})


def recipient_found(target_wallet_id: str | None, named_by: str) -> Finding | None:
    return Finding("recipient_not_found", {"by": named_by}) if target_wallet_id is None else None


def merchant_active(status: str | None) -> Finding | None:
    """A suspended or closed merchant takes no payment (`merchant_inactive`)."""
    if status is None or status == "active":
        return None
    return Finding("merchant_inactive", {"merchant_status": status})


def payer_account(account: Account) -> Finding | None:
    """The paying wallet's ledger account is open (not debit-frozen, frozen or closed)."""
    return None if payer_refusal(account) is None else Finding("wallet_frozen")


def payer_balance(account: Account, amount: int) -> Finding | None:
    """Exactly the whole available balance may be paid; one fen more may not."""
    return Finding("insufficient_funds") if exceeds_credits(account, amount) else None


def recipient_account(account: Account, *, merchant: bool) -> Finding | None:
    if receiver_refusal(account) is None:
        return None
    return Finding("merchant_inactive") if merchant else Finding("wallet_frozen")


def recipient_room(account: Account, amount: int) -> Finding | None:
    """The receiving wallet's own ceiling (the cap, per wallet), incoming holds counted."""
    room = room_under_ceiling(account)
    if room is None or amount <= room:
        return None
    return Finding("balance_cap_exceeded", {"room": room})


def no_holds(account: Account) -> Finding | None:
    """A wallet is closed only with no money on hold, going out or coming in."""
    pending = account.debits_pending or account.credits_pending
    return Finding("wallet_close_refused", {"reason": "pending_holds"}) if pending else None


def closable(closing: Account, main: Account) -> Finding | None:
    """The closing wallet's account is open, and the main wallet its balance goes to is neither frozen
    nor closed."""
    shut = (AccountStatus.FROZEN, AccountStatus.CLOSED)
    return (
        Finding("wallet_frozen") if closing.status is not AccountStatus.OPEN or main.status in shut else None
    )


def main_takes(main: Account, balance: int) -> Finding | None:
    """The main wallet takes a closing wallet's balance under its own ceiling."""
    room = room_under_ceiling(main)
    if room is None or balance <= room:
        return None
    return Finding("wallet_close_refused", {"reason": "exceeds_ceiling", "room": room})


def no_pin_allowance(per_payment: int, daily: int, used_today: int, amount: int) -> bool:
    """Whether a payment-code charge may go through without the customer's PIN: within the allowance
    they set for one payment and for the day (exactly the remaining day's allowance included)."""
    return amount <= per_payment and used_today + amount <= daily


def refundable(status: str, paid: int, refunded: int, amount: int) -> Finding | None:
    """Only a succeeded payment is refunded, and never past what was paid (partials add up to it)."""
    if status != "succeeded":
        return Finding("payment_not_refundable", {"payment_status": status})
    remaining = paid - refunded
    if amount > remaining:
        return Finding("refund_exceeds_payment", {"remaining": remaining})
    return None


LEDGER_DECLINES = {
    ResultCode.EXCEEDS_CREDITS: "insufficient_funds",
    ResultCode.EXCEEDS_CEILING: "balance_cap_exceeded",
    ResultCode.ACCOUNT_FROZEN: "wallet_frozen",
    ResultCode.ACCOUNT_CLOSED: "wallet_frozen",
    ResultCode.CURRENCY_MISMATCH: "currency_mismatch",
    ResultCode.PENDING_EXPIRED: "payment_confirmation_expired",  # a held payment's post
    ResultCode.PENDING_ALREADY_VOIDED: "payment_not_pending",
    ResultCode.PENDING_ALREADY_POSTED: "payment_not_pending",
}


def ledger_finding(code: ResultCode, receiving: Account | None = None) -> Finding:
    """What a ledger refusal means for a payment (the ledger decides again when it applies: a race
    between this decision and the transfer is answered by the ledger's own result). For a ceiling
    refusal, `receiving` (the credited account, read afterwards) tells the room left."""
    room = None if receiving is None else room_under_ceiling(receiving)
    if code is ResultCode.EXCEEDS_CEILING and room is not None:
        return Finding("balance_cap_exceeded", {"room": room})
    return Finding(LEDGER_DECLINES.get(code, str(code)))

"""What `decide` decides over: the request, and the state loaded for it, as frozen data.

A `Books` holds the state of any number of requests, keyed by ids (payers by user id, wallets and
ledger accounts by wallet id, balance-cap holders by user id), so that a batch's requests share it and
each sees what the ones before it used (`Books.after`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from qianbao.identity.limit_rules import HolderCap, PayerLimits
from qianbao.ledger.model import Account, AccountStatus
from qianbao.wallets.model import WalletSettings


class Kind(StrEnum):
    """The money movements. Which of them are spending is `is_spending`."""

    P2P = "p2p"  # to a wallet id, a phone number, a receive code, or accepting a money request
    MERCHANT = (
        "merchant"  # merchant QR (static, dynamic), checkout, a payment code within the no-PIN allowance
    )
    CODE_HOLD = "code_hold"  # a payment code above the allowance: funds held until the customer confirms
    CODE_CONFIRM = "code_confirm"  # the customer confirms a held payment: the hold is posted
    REFUND = "refund"  # a merchant gives (part of) a payment back: merchant wallet → the wallet that paid
    FUNDING = "funding"  # sandbox: one's own wallet credited from the sandbox funding account
    CLOSE = "close"  # a sub-wallet closed: its whole balance to the main wallet (amount: the balance)


SPENDING = frozenset({Kind.P2P, Kind.MERCHANT, Kind.CODE_CONFIRM})


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """One money movement to decide. `target_wallet_id` is None when the recipient named could not be
    found (`recipient_by` says how it was named: phone, wallet_id, receive_code, payer_wallet_id)."""

    kind: Kind
    payer_user_id: str
    source_wallet_id: str
    target_wallet_id: str | None
    amount: int
    currency: str
    named_wallet_id: str | None = None  # the wallet id the caller typed, before any look-up
    recipient_by: str = "wallet_id"
    merchant_status: str | None = None  # a merchant payment: the merchant's status
    device_trusted: bool = True
    no_pin: bool = False  # a payment code within the customer's no-PIN allowance: no step-up
    stepped_up: bool = False  # the proof is in hand already: no step-up is asked for
    payment_id: str | None = None  # a refund: the payment it gives back
    fee_pro_rata: bool = False  # a refund: the merchant's fee comes back in proportion


@dataclass(frozen=True, slots=True)
class PaidPayment:
    """A merchant payment a refund gives back: what was paid, its fee, and what is refunded already."""

    status: str
    amount: int
    refunded: int
    fee: int
    fee_refunded: int


@dataclass(frozen=True, slots=True)
class Payer:
    user_id: str
    credential_status: str  # active, frozen, closed
    limits: PayerLimits


@dataclass(frozen=True, slots=True)
class SourceWallet:
    """A wallet money leaves: its owner, its own rules and this month's spending."""

    wallet_id: str
    user_id: str
    currency: str
    settings: WalletSettings | None
    month_spent: int = 0


@dataclass(frozen=True, slots=True)
class TargetWallet:
    wallet_id: str
    user_id: str
    currency: str


@dataclass(frozen=True, slots=True)
class Books:
    """The loaded state. Ledger accounts are copies nobody else mutates."""

    payers: Mapping[str, Payer] = field(default_factory=dict)
    sources: Mapping[str, SourceWallet] = field(default_factory=dict)
    targets: Mapping[str, TargetWallet] = field(default_factory=dict)
    accounts: Mapping[str, Account] = field(default_factory=dict)
    holders: Mapping[str, HolderCap] = field(default_factory=dict)  # recipients' caps, by user id
    known_payees: frozenset[tuple[str, str]] = frozenset()  # (payer, payee) with an earlier payment
    paid: Mapping[str, PaidPayment] = field(default_factory=dict)  # payments refunds give back, by id


def is_spending(request: PaymentRequest, own: bool) -> bool:
    """Whether the payment is spending: money leaving to someone else, counted toward the payer's daily
    outflow and the paying wallet's monthly budget when it is paid (a hold at its confirmation). A move
    between one's own wallets never is, nor a refund, a sandbox funding or a wallet's closing."""
    return not own and request.kind in SPENDING


def holds_funds(request: PaymentRequest) -> bool:
    """A confirmation posts funds already held: the balance was checked when they were held."""
    return request.kind is Kind.CODE_CONFIRM


def _moved(account: Account, *, debit: int = 0, credit: int = 0, pending: bool = False) -> Account:
    moved = account.copy()
    if pending:
        moved.debits_pending += debit
        moved.credits_pending += credit
    else:
        moved.debits_posted += debit
        moved.credits_posted += credit
    return moved


def books_after(
    books: Books, request: PaymentRequest, *, own: bool, amount: int | None = None, fee_back: int = 0
) -> Books:
    """The state once an approved request is written: the running totals a batch carries. `amount` is
    what moved when the decision set it (a closing's balance), `fee_back` a refund's fee given back."""
    assert request.target_wallet_id is not None  # noqa: S101 - only approved requests move books
    amount = request.amount if amount is None else amount
    payers = dict(books.payers)
    sources = dict(books.sources)
    if is_spending(request, own):
        payer = payers[request.payer_user_id]
        payers[payer.user_id] = replace(payer, limits=payer.limits.after(amount))
        source = sources[request.source_wallet_id]
        sources[source.wallet_id] = replace(source, month_spent=source.month_spent + amount)
    accounts = dict(books.accounts)
    pending = request.kind is Kind.CODE_HOLD
    if holds_funds(request):  # the hold becomes posted on both sides
        debit = accounts[request.source_wallet_id].copy()
        debit.debits_pending -= amount
        debit.debits_posted += amount
        credit = accounts[request.target_wallet_id].copy()
        credit.credits_pending -= amount
        credit.credits_posted += amount
        accounts[debit.id], accounts[credit.id] = debit, credit
    else:
        debit = _moved(accounts[request.source_wallet_id], debit=amount, credit=fee_back, pending=pending)
        if request.kind is Kind.CLOSE:  # emptied and closed: nothing more leaves or arrives
            debit.status = AccountStatus.CLOSED
        accounts[debit.id] = debit
        accounts[request.target_wallet_id] = _moved(
            accounts[request.target_wallet_id], credit=amount, pending=pending
        )
    # What each user's wallets hold together (the cap's measure: posted credits and incoming holds,
    # less posted debits): the payer's falls when money leaves (not while it is only held), the
    # recipient's rises when it arrives (already, while it is held for them). Sandbox funding comes
    # from no one's wallet.
    holders = dict(books.holders)
    target = books.targets[request.target_wallet_id]
    payer_id = request.payer_user_id
    if payer_id in holders and not pending and request.kind is not Kind.FUNDING:
        holders[payer_id] = holders[payer_id].after(fee_back - amount)
    if target.user_id in holders and not holds_funds(request):
        holders[target.user_id] = holders[target.user_id].after(amount)
    known = books.known_payees
    if request.kind is Kind.P2P and not own:
        known = known | {(request.payer_user_id, target.user_id)}
    paid = books.paid
    if request.kind is Kind.REFUND and request.payment_id is not None:
        before = paid[request.payment_id]
        after = replace(
            before, refunded=before.refunded + amount, fee_refunded=before.fee_refunded + fee_back
        )
        paid = {**paid, request.payment_id: after}
    return Books(payers, sources, books.targets, accounts, holders, known, paid)


__all__ = [
    "Books",
    "Kind",
    "PaidPayment",
    "Payer",
    "PaymentRequest",
    "SourceWallet",
    "TargetWallet",
    "books_after",
    "is_spending",
    "holds_funds",
]

"""Ledger domain types: accounts, transfer requests, stored transfers and result codes. No I/O here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

MAX_AMOUNT = 2**63 - 1  # BIGINT: every balance column must stay representable
MAX_ID_LENGTH = 128
MAX_CODE_LENGTH = 64
MAX_METADATA_BYTES = 8 * 1024
MAX_ACCOUNT_ID_LENGTH = 64
MAX_OWNER_REF_LENGTH = 128


class AccountStatus(StrEnum):
    OPEN = "open"
    DEBIT_FROZEN = "debit_frozen"  # may receive, may not pay out
    FROZEN = "frozen"  # no movement either way (voiding a hold still releases it)
    CLOSED = "closed"  # final; only an empty account can be closed


class NormalBalance(StrEnum):
    """Which side increases the account's balance: credit for wallets (liabilities), debit for assets."""

    CREDIT = "credit"
    DEBIT = "debit"


class TransferKind(StrEnum):
    POSTED = "posted"  # moves money now
    PENDING = "pending"  # reserves money (a hold); resolved later by one of the three below
    POST_PENDING = "post_pending"  # completes a hold, fully or partially
    VOID_PENDING = "void_pending"  # releases a hold
    EXPIRE_PENDING = "expire_pending"  # releases a hold whose timeout passed (written by the sweeper)


RESOLUTION_KINDS = frozenset(
    {TransferKind.POST_PENDING, TransferKind.VOID_PENDING, TransferKind.EXPIRE_PENDING}
)


class PendingStatus(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


PENDING_STATUS_BY_RESOLUTION = {
    TransferKind.POST_PENDING: PendingStatus.POSTED,
    TransferKind.VOID_PENDING: PendingStatus.VOIDED,
    TransferKind.EXPIRE_PENDING: PendingStatus.EXPIRED,
}


class ResultCode(StrEnum):
    """One stable code per transfer or account request. docs/ledger.md explains each."""

    OK = "ok"
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    INVALID_ID = "invalid_id"
    INVALID_CODE = "invalid_code"
    METADATA_TOO_LARGE = "metadata_too_large"
    INVALID_METADATA = "invalid_metadata"
    INVALID_AMOUNT = "invalid_amount"
    ACCOUNTS_MUST_DIFFER = "accounts_must_differ"
    CURRENCY_MISMATCH = "currency_mismatch"
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    ACCOUNT_NOT_FOUND = "account_not_found"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"
    EXCEEDS_CEILING = "exceeds_ceiling"
    OVERFLOW = "overflow"
    ACCOUNT_FROZEN = "account_frozen"
    ACCOUNT_CLOSED = "account_closed"
    TIMEOUT_RESERVED_FOR_PENDING = "timeout_reserved_for_pending"
    INVALID_TIMEOUT = "invalid_timeout"
    PENDING_ID_REQUIRED = "pending_id_required"
    PENDING_ID_NOT_ALLOWED = "pending_id_not_allowed"
    PENDING_NOT_FOUND = "pending_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_ACCOUNTS_MISMATCH = "pending_accounts_mismatch"
    PENDING_ALREADY_POSTED = "pending_already_posted"
    PENDING_ALREADY_VOIDED = "pending_already_voided"
    PENDING_EXPIRED = "pending_expired"
    PENDING_NOT_EXPIRED = "pending_not_expired"
    AMOUNT_EXCEEDS_PENDING = "amount_exceeds_pending"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_EVENT_CHAIN_OPEN = "linked_event_chain_open"
    # account-creation codes
    UNKNOWN_CURRENCY = "unknown_currency"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    INVALID_CEILING = "invalid_ceiling"
    INVALID_OWNER_REF = "invalid_owner_ref"


SUCCESS_CODES = frozenset({ResultCode.OK, ResultCode.EXISTS})


@dataclass(frozen=True, slots=True)
class AccountSpec:
    id: str
    currency: str
    code: str
    owner_ref: str | None = None
    normal_balance: NormalBalance = NormalBalance.CREDIT
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False
    balance_ceiling: int | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(slots=True)
class Account:
    """An account with its four running totals. Mutable only inside a batch being validated."""

    id: str
    currency: str
    code: str
    owner_ref: str | None
    normal_balance: NormalBalance
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    balance_ceiling: int | None
    status: AccountStatus
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    metadata: Mapping[str, Any] | None
    created_at: int
    last_seq: int = 0  # seq of the newest transfer that touched this account (its version)

    @property
    def net_posted(self) -> int:
        """Credits minus debits, posted: the sign convention stored in `*_net_after`."""
        return self.credits_posted - self.debits_posted

    @property
    def balance(self) -> int:
        """Posted balance on the account's normal side."""
        net = self.net_posted
        return net if self.normal_balance is NormalBalance.CREDIT else -net

    @property
    def available(self) -> int:
        """Balance minus outgoing holds; incoming holds don't count until posted."""
        if self.normal_balance is NormalBalance.CREDIT:
            return self.balance - self.debits_pending
        return self.balance - self.credits_pending

    def copy(self) -> Account:
        return Account(*(getattr(self, f) for f in self.__slots__))


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """A transfer request. Build one with `posted`, `pending`, `post`, `void` for readable call sites.

    `amount` is minor units; for `post` None means "the whole pending amount". `linked=True` chains this
    transfer to the next one in the same request: the chain commits all-or-none.
    """

    id: str
    kind: TransferKind = TransferKind.POSTED
    debit_account_id: str = ""
    credit_account_id: str = ""
    amount: int | None = None
    currency: str = ""
    code: str = ""
    pending_id: str | None = None
    timeout_seconds: int | None = None
    metadata: Mapping[str, Any] | None = None
    linked: bool = False

    @classmethod
    def posted(
        cls, id: str, debit: str, credit: str, amount: int, currency: str, code: str = "transfer", **kw: Any
    ) -> TransferSpec:
        return cls(id=id, debit_account_id=debit, credit_account_id=credit, amount=amount,
                   currency=currency, code=code, **kw)  # fmt: skip

    @classmethod
    def pending(
        cls, id: str, debit: str, credit: str, amount: int, currency: str, code: str = "hold", **kw: Any
    ) -> TransferSpec:
        return cls(id=id, kind=TransferKind.PENDING, debit_account_id=debit, credit_account_id=credit,
                   amount=amount, currency=currency, code=code, **kw)  # fmt: skip

    @classmethod
    def post(cls, id: str, pending_id: str, amount: int | None = None, **kw: Any) -> TransferSpec:
        return cls(id=id, kind=TransferKind.POST_PENDING, pending_id=pending_id, amount=amount, **kw)

    @classmethod
    def void(cls, id: str, pending_id: str, **kw: Any) -> TransferSpec:
        return cls(id=id, kind=TransferKind.VOID_PENDING, pending_id=pending_id, **kw)


class Transfer(NamedTuple):
    """A transfer as stored: immutable, with the posted net balance of both accounts after it.

    A NamedTuple rather than a frozen dataclass: the engine builds thousands per batch and a frozen
    dataclass's __init__ costs several times more."""

    seq: int
    id: str
    kind: TransferKind
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    code: str
    pending_id: str | None
    timeout_at: int | None
    metadata: Mapping[str, Any] | None
    created_at: int
    debit_net_after: int
    credit_net_after: int


class TransferResult(NamedTuple):
    id: str
    code: ResultCode
    transfer: Transfer | None = None
    detail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.code in SUCCESS_CODES


@dataclass(frozen=True, slots=True)
class AccountResult:
    id: str
    code: ResultCode
    account: Account | None = None


def _encode_metadata(metadata: Mapping[str, Any]) -> str:
    # Strict JSON (no NaN/Infinity) with string keys, the same on both databases.
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Metadata as the database will give it back (JSON round-trip), for exact comparisons.
    Only call it on metadata that `metadata_problem` accepted."""
    if metadata is None:
        return None
    loaded: dict[str, Any] = json.loads(_encode_metadata(metadata))
    return loaded


def metadata_problem(metadata: Mapping[str, Any] | None) -> ResultCode | None:
    """Why this metadata cannot be stored, or None: it must be a JSON object of finite values and
    string keys, without NUL characters (PostgreSQL refuses them), of at most 8 KiB."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        return ResultCode.INVALID_METADATA
    try:
        encoded = _encode_metadata(metadata)
    except (TypeError, ValueError):
        return ResultCode.INVALID_METADATA
    if "\\u0000" in encoded:
        return ResultCode.INVALID_METADATA
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        return ResultCode.METADATA_TOO_LARGE
    return None


def storable_text(value: str) -> bool:
    """Text both databases can store and look up (PostgreSQL refuses NUL characters)."""
    return isinstance(value, str) and "\x00" not in value

"""Validate and apply a batch of transfer requests against locked account state, in memory.

This is the ledger's decision procedure; it does no I/O. The engine loads the state (accounts locked in
id order, transfers with the requested ids, the pending transfers referred to and how they were
resolved), calls `apply_batch`, and writes back what it returns. Requests are decided strictly in order,
so a later request sees the balances left by the earlier ones of the same batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from qianbao.ledger.model import (
    MAX_AMOUNT,
    MAX_CODE_LENGTH,
    MAX_ID_LENGTH,
    MAX_METADATA_BYTES,
    RESOLUTION_KINDS,
    Account,
    AccountStatus,
    NormalBalance,
    ResultCode,
    Transfer,
    TransferKind,
    TransferResult,
    TransferSpec,
    canonical_metadata,
    metadata_problem,
    storable_text,
)

R = ResultCode
# Enum members as plain module constants: attribute access on an Enum class goes through a descriptor,
# which showed up in the profile of the per-transfer path.
_PENDING = TransferKind.PENDING
_POST = TransferKind.POST_PENDING
_EXPIRE = TransferKind.EXPIRE_PENDING
_OPEN = AccountStatus.OPEN
_CLOSED = AccountStatus.CLOSED
_FROZEN = AccountStatus.FROZEN
_CREDIT_NORMAL = NormalBalance.CREDIT
_DEBIT_NORMAL = NormalBalance.DEBIT
RESERVED_ID_PREFIX = "ledger:"  # ids the ledger writes itself (expiries); refused from callers
_ALREADY_RESOLVED = {
    TransferKind.POST_PENDING: R.PENDING_ALREADY_POSTED,
    TransferKind.VOID_PENDING: R.PENDING_ALREADY_VOIDED,
    TransferKind.EXPIRE_PENDING: R.PENDING_EXPIRED,
}


@dataclass(slots=True)
class BatchState:
    accounts: dict[str, Account]  # every account the batch may touch, locked by the caller
    existing: dict[str, Transfer]  # stored transfers whose ids appear in the batch
    pendings: dict[str, Transfer]  # stored pending transfers the batch refers to
    resolutions: dict[str, TransferKind]  # pending id -> how it was resolved (stored)
    now: int


@dataclass(slots=True)
class BatchOutcome:
    results: list[TransferResult]
    created: list[Transfer] = field(default_factory=list)
    touched: dict[str, Account] = field(default_factory=dict)


class _Rejected(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, code: ResultCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail


def apply_batch(
    specs: Sequence[TransferSpec], group_ends: frozenset[int], state: BatchState, seqs: Iterator[int]
) -> BatchOutcome:
    """Decide every request in order. `group_ends` holds the index of each request group's last item:
    a linked chain never crosses a group boundary (groups are different clients' submissions)."""
    batch = _Batch(state, seqs)
    results: list[TransferResult | None] = [None] * len(specs)
    start = 0
    n = len(specs)
    while start < n:
        end = start
        while specs[end].linked and end not in group_ends and end + 1 < n:
            end += 1
        if specs[end].linked:
            for k in range(start, end + 1):
                results[k] = TransferResult(specs[k].id, R.LINKED_EVENT_CHAIN_OPEN)
        elif end == start:
            results[start] = batch.decide(specs[start])
        else:
            batch.decide_chain(specs, start, end, results)
        start = end + 1
    final = [r for r in results if r is not None]
    return BatchOutcome(results=final, created=batch.created, touched=batch.touched)


class _Batch:
    __slots__ = ("state", "seqs", "created", "created_by_id", "touched", "resolved")

    def __init__(self, state: BatchState, seqs: Iterator[int]) -> None:
        self.state = state
        self.seqs = seqs
        self.created: list[Transfer] = []
        self.created_by_id: dict[str, Transfer] = {}
        self.touched: dict[str, Account] = {}
        self.resolved: dict[str, TransferKind] = {}

    # -- chains ---------------------------------------------------------------------------------------

    def decide_chain(
        self, specs: Sequence[TransferSpec], start: int, end: int, out: list[TransferResult | None]
    ) -> None:
        saved_accounts: dict[str, Account] = {}
        created_before = len(self.created)
        resolved_before = dict(self.resolved)
        touched_before = set(self.touched)
        for k in range(start, end + 1):
            spec = specs[k]
            for account_id in self._accounts_of(spec):
                account = self.state.accounts.get(account_id)
                if account is not None and account_id not in saved_accounts:
                    saved_accounts[account_id] = account.copy()
            result = self.decide(spec)
            out[k] = result
            if result.succeeded:
                continue
            # Undo the chain's effects, then report why it failed.
            for account_id, snapshot in saved_accounts.items():
                self.state.accounts[account_id] = snapshot
                if account_id in self.touched:
                    self.touched[account_id] = snapshot
            for account_id in set(self.touched) - touched_before:
                del self.touched[account_id]
            for transfer in self.created[created_before:]:
                del self.created_by_id[transfer.id]
            del self.created[created_before:]
            self.resolved = resolved_before
            for j in range(start, end + 1):
                if j != k:
                    out[j] = TransferResult(specs[j].id, R.LINKED_EVENT_FAILED)
            return

    def _accounts_of(self, spec: TransferSpec) -> tuple[str, ...]:
        if spec.pending_id is not None:
            pending = self.created_by_id.get(spec.pending_id) or self.state.pendings.get(spec.pending_id)
            if pending is not None:
                return (pending.debit_account_id, pending.credit_account_id)
        return (spec.debit_account_id, spec.credit_account_id)

    # -- one request ----------------------------------------------------------------------------------

    def decide(self, spec: TransferSpec) -> TransferResult:
        if not spec.id or len(spec.id) > MAX_ID_LENGTH or not storable_text(spec.id):
            detail = f"ids are 1 to {MAX_ID_LENGTH} characters, without NUL"
            return TransferResult(spec.id, R.INVALID_ID, detail=detail)
        # Checked before the replay comparison, which needs the metadata's canonical form.
        problem = metadata_problem(spec.metadata)
        if problem is not None:
            detail = f"metadata is a JSON object of finite values, at most {MAX_METADATA_BYTES} bytes"
            return TransferResult(spec.id, problem, detail=detail)
        if spec.kind is _EXPIRE:
            if spec.pending_id is None or spec.id != expiry_id(spec.pending_id):
                return TransferResult(spec.id, R.INVALID_ID, detail="an expiry's id is expiry_id(pending_id)")
        elif spec.id.startswith(RESERVED_ID_PREFIX):
            return TransferResult(
                spec.id, R.INVALID_ID, detail=f"ids starting {RESERVED_ID_PREFIX!r} are reserved"
            )
        stored = self.created_by_id.get(spec.id) or self.state.existing.get(spec.id)
        if stored is not None:
            if _same_request(spec, stored, self._pending_amount(spec)):
                return TransferResult(spec.id, R.EXISTS, stored)
            return TransferResult(spec.id, R.EXISTS_WITH_DIFFERENT_FIELDS, stored)
        try:
            if spec.kind in RESOLUTION_KINDS:
                transfer = self._resolve_pending(spec)
            else:
                transfer = self._move(spec)
        except _Rejected as rejected:
            return TransferResult(spec.id, rejected.code, detail=rejected.detail)
        self.created.append(transfer)
        self.created_by_id[transfer.id] = transfer
        return TransferResult(spec.id, R.OK, transfer)

    def _pending_amount(self, spec: TransferSpec) -> int | None:
        if spec.pending_id is None:
            return None
        pending = self.created_by_id.get(spec.pending_id) or self.state.pendings.get(spec.pending_id)
        return None if pending is None else pending.amount

    def _common_checks(self, spec: TransferSpec) -> None:
        if len(spec.code) > MAX_CODE_LENGTH or not storable_text(spec.code):
            raise _Rejected(R.INVALID_CODE, f"codes are at most {MAX_CODE_LENGTH} characters, without NUL")
        if spec.amount is not None and type(spec.amount) is not int:
            raise _Rejected(R.INVALID_AMOUNT, "amounts are integers of minor units")

    def _move(self, spec: TransferSpec) -> Transfer:
        """A posted transfer or a new hold."""
        self._common_checks(spec)
        if spec.pending_id is not None:
            raise _Rejected(R.PENDING_ID_NOT_ALLOWED, "only post/void/expire refer to a pending transfer")
        pending = spec.kind is _PENDING
        if spec.timeout_seconds is not None:
            if not pending:
                raise _Rejected(R.TIMEOUT_RESERVED_FOR_PENDING)
            if spec.timeout_seconds <= 0 or spec.timeout_seconds > 10 * 365 * 86_400:
                raise _Rejected(R.INVALID_TIMEOUT, "timeout must be between 1 second and 10 years")
        if spec.debit_account_id == spec.credit_account_id:
            raise _Rejected(R.ACCOUNTS_MUST_DIFFER)
        amount = spec.amount
        if amount is None or amount <= 0:
            raise _Rejected(R.AMOUNT_MUST_BE_POSITIVE)
        if amount > MAX_AMOUNT:
            raise _Rejected(R.OVERFLOW, "amount does not fit in 64 bits")
        accounts = self.state.accounts
        debit = accounts.get(spec.debit_account_id)
        if debit is None:
            raise _Rejected(R.ACCOUNT_NOT_FOUND, f"debit account {spec.debit_account_id!r} does not exist")
        credit = accounts.get(spec.credit_account_id)
        if credit is None:
            raise _Rejected(R.ACCOUNT_NOT_FOUND, f"credit account {spec.credit_account_id!r} does not exist")
        if debit.currency != spec.currency or credit.currency != spec.currency:
            raise _Rejected(
                R.CURRENCY_MISMATCH,
                f"transfer in {spec.currency!r}; accounts in {debit.currency} and {credit.currency}",
            )
        _check_can_pay(debit)
        _check_can_receive(credit)
        if exceeds_credits(debit, amount):
            raise _Rejected(R.EXCEEDS_CREDITS, f"available {debit.available}, needed {amount}")
        if credit.credits_must_not_exceed_debits and (
            credit.credits_posted + credit.credits_pending + amount > credit.debits_posted
        ):
            raise _Rejected(R.EXCEEDS_DEBITS)
        _check_ceiling(debit, credit, amount)
        # Posted plus pending must fit, so that posting a hold later can never overflow either.
        if (
            debit.debits_posted + debit.debits_pending + amount > MAX_AMOUNT
            or credit.credits_posted + credit.credits_pending + amount > MAX_AMOUNT
        ):
            raise _Rejected(R.OVERFLOW, "an account total would not fit in 64 bits")
        if pending:
            debit.debits_pending += amount
            credit.credits_pending += amount
        else:
            debit.debits_posted += amount
            credit.credits_posted += amount
        self.touched[debit.id] = debit
        self.touched[credit.id] = credit
        now = self.state.now
        seq = next(self.seqs)
        debit.last_seq = credit.last_seq = seq
        return Transfer(
            seq=seq,
            id=spec.id,
            kind=spec.kind,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount,
            currency=spec.currency,
            code=spec.code or "transfer",
            pending_id=None,
            timeout_at=now + spec.timeout_seconds * 1_000_000 if spec.timeout_seconds else None,
            metadata=canonical_metadata(spec.metadata),
            created_at=now,
            debit_net_after=debit.credits_posted - debit.debits_posted,
            credit_net_after=credit.credits_posted - credit.debits_posted,
        )

    def _resolve_pending(self, spec: TransferSpec) -> Transfer:
        """Post, void or expire a hold."""
        self._common_checks(spec)
        if spec.timeout_seconds is not None:
            raise _Rejected(R.TIMEOUT_RESERVED_FOR_PENDING)
        if not spec.pending_id:
            raise _Rejected(R.PENDING_ID_REQUIRED)
        pending = self.created_by_id.get(spec.pending_id) or self.state.pendings.get(spec.pending_id)
        if pending is None:
            raise _Rejected(R.PENDING_NOT_FOUND, f"no transfer {spec.pending_id!r}")
        if pending.kind is not TransferKind.PENDING:
            raise _Rejected(
                R.PENDING_TRANSFER_NOT_PENDING, f"{spec.pending_id!r} is a {pending.kind} transfer"
            )
        if (spec.debit_account_id and spec.debit_account_id != pending.debit_account_id) or (
            spec.credit_account_id and spec.credit_account_id != pending.credit_account_id
        ):
            raise _Rejected(R.PENDING_ACCOUNTS_MISMATCH)
        if spec.currency and spec.currency != pending.currency:
            raise _Rejected(R.CURRENCY_MISMATCH, f"the pending transfer is in {pending.currency}")
        resolution = self.resolved.get(pending.id) or self.state.resolutions.get(pending.id)
        if resolution is not None:
            raise _Rejected(_ALREADY_RESOLVED[resolution])
        now = self.state.now
        expired = pending.timeout_at is not None and now >= pending.timeout_at
        if spec.kind is TransferKind.EXPIRE_PENDING:
            if not expired:
                raise _Rejected(R.PENDING_NOT_EXPIRED)
        elif expired:
            raise _Rejected(R.PENDING_EXPIRED)
        amount = pending.amount if spec.amount is None else spec.amount
        if amount <= 0:
            raise _Rejected(R.AMOUNT_MUST_BE_POSITIVE)
        if amount > pending.amount:
            raise _Rejected(R.AMOUNT_EXCEEDS_PENDING, f"the hold is {pending.amount}")
        if spec.kind is not TransferKind.POST_PENDING and amount != pending.amount:
            raise _Rejected(R.AMOUNT_EXCEEDS_PENDING, "a void releases the whole hold; omit the amount")
        debit = self.state.accounts[pending.debit_account_id]
        credit = self.state.accounts[pending.credit_account_id]
        if spec.kind is TransferKind.POST_PENDING:
            _check_can_pay(debit)
            _check_can_receive(credit)
        debit.debits_pending -= pending.amount
        credit.credits_pending -= pending.amount
        if spec.kind is TransferKind.POST_PENDING:
            debit.debits_posted += amount
            credit.credits_posted += amount
        self.touched[debit.id] = debit
        self.touched[credit.id] = credit
        self.resolved[pending.id] = spec.kind
        seq = next(self.seqs)
        debit.last_seq = credit.last_seq = seq
        return Transfer(
            seq=seq,
            id=spec.id,
            kind=spec.kind,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount,
            currency=pending.currency,
            code=spec.code or pending.code,
            pending_id=pending.id,
            timeout_at=None,
            metadata=canonical_metadata(spec.metadata),
            created_at=now,
            debit_net_after=debit.credits_posted - debit.debits_posted,
            credit_net_after=credit.credits_posted - credit.debits_posted,
        )


def payer_refusal(account: Account) -> ResultCode | None:
    """Why the account may not be debited (closed, frozen, debit-frozen), or None. Pure: the payment
    engine asks the same question before step-up that the ledger asks when it applies the transfer."""
    status = account.status
    if status is _OPEN:
        return None
    return R.ACCOUNT_CLOSED if status is _CLOSED else R.ACCOUNT_FROZEN


def receiver_refusal(account: Account) -> ResultCode | None:
    """Why the account may not be credited (closed or fully frozen), or None."""
    status = account.status
    if status is _OPEN or status is AccountStatus.DEBIT_FROZEN:
        return None
    return R.ACCOUNT_CLOSED if status is _CLOSED else R.ACCOUNT_FROZEN


def exceeds_credits(account: Account, amount: int) -> bool:
    """A debit of `amount` would take an account that may not go negative below zero (holds count)."""
    return account.debits_must_not_exceed_credits and (
        account.debits_posted + account.debits_pending + amount > account.credits_posted
    )


def room_under_ceiling(account: Account) -> int | None:
    """How much more a credit-normal account may receive under its ceiling, incoming holds counted
    (None: no ceiling)."""
    ceiling = account.balance_ceiling
    if ceiling is None or account.normal_balance is not _CREDIT_NORMAL:
        return None
    return max(0, ceiling - (account.credits_posted + account.credits_pending - account.debits_posted))


def _check_can_pay(account: Account) -> None:
    code = payer_refusal(account)
    if code is None:
        return
    if code is R.ACCOUNT_CLOSED:
        raise _Rejected(code, f"account {account.id!r} is closed")
    raise _Rejected(code, f"account {account.id!r} is {account.status}")  # frozen or debit_frozen


def _check_can_receive(account: Account) -> None:
    code = receiver_refusal(account)
    if code is None:
        return
    if code is R.ACCOUNT_CLOSED:
        raise _Rejected(code, f"account {account.id!r} is closed")
    raise _Rejected(code, f"account {account.id!r} is frozen")


def _check_ceiling(debit: Account, credit: Account, amount: int) -> None:
    # A ceiling bounds the balance on the account's normal side, counting holds coming in.
    room = room_under_ceiling(credit)
    if room is not None and amount > room:
        raise _Rejected(R.EXCEEDS_CEILING, f"account {credit.id!r} may hold at most {credit.balance_ceiling}")
    ceiling = debit.balance_ceiling
    if ceiling is not None and debit.normal_balance is _DEBIT_NORMAL:
        if debit.debits_posted + debit.debits_pending + amount - debit.credits_posted > ceiling:
            raise _Rejected(R.EXCEEDS_CEILING, f"account {debit.id!r} may hold at most {ceiling}")


def expiry_id(pending_id: str) -> str:
    """The id of the transfer that expires a hold: deterministic, so concurrent sweepers collide
    harmlessly, and in a reserved namespace, so no client id can take it."""
    if len(RESERVED_ID_PREFIX) + len("expire:") + len(pending_id) <= MAX_ID_LENGTH:
        return f"{RESERVED_ID_PREFIX}expire:{pending_id}"
    return f"{RESERVED_ID_PREFIX}expire#{hashlib.sha256(pending_id.encode()).hexdigest()}"


def _same_request(spec: TransferSpec, stored: Transfer, pending_amount: int | None) -> bool:
    """Does a replayed request ask for exactly what was stored under its id?"""
    if spec.kind is not stored.kind:
        return False
    if canonical_metadata(spec.metadata) != stored.metadata:
        return False
    if spec.kind in RESOLUTION_KINDS:
        # No amount means "the whole hold": it matches a stored full post, not a partial one.
        wanted = spec.amount if spec.amount is not None else pending_amount
        return (
            spec.pending_id == stored.pending_id
            and spec.timeout_seconds is None
            and wanted == stored.amount
            and (not spec.debit_account_id or spec.debit_account_id == stored.debit_account_id)
            and (not spec.credit_account_id or spec.credit_account_id == stored.credit_account_id)
            and (not spec.currency or spec.currency == stored.currency)
            and (not spec.code or spec.code == stored.code)
        )
    timeout = None if stored.timeout_at is None else (stored.timeout_at - stored.created_at) // 1_000_000
    return (
        spec.pending_id is None
        and spec.debit_account_id == stored.debit_account_id
        and spec.credit_account_id == stored.credit_account_id
        and spec.amount == stored.amount
        and spec.currency == stored.currency
        and (spec.code or "transfer") == stored.code
        and spec.timeout_seconds == timeout
    )

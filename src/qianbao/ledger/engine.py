"""The ledger engine: applies batches of transfer requests atomically, one database transaction each.

`LedgerEngine.create_transfers` is the direct path (one call, one transaction). `TransferBatcher`
(ledger/batcher.py) feeds it many concurrent callers' requests at once: group commit.

A batch, in one transaction:
  1. load the pending transfers it refers to (to learn their accounts);
  2. lock every account involved, in id order (PostgreSQL `FOR UPDATE`; SQLite `BEGIN IMMEDIATE`);
  3. load transfers with the requested ids (idempotency) and how referred-to holds were resolved;
  4. decide each request in order, in memory (`rules.apply_batch`);
  5. one multi-row INSERT of the new transfers and one UPDATE of the touched balances; COMMIT.
Another process racing on the same ids loses on the UNIQUE constraint; the whole batch is then retried
and sees the winner's transfers as `exists`. Nothing relies on a process-local lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from sqlalchemy import Connection

from qianbao import invalid
from qianbao.clock import Clock, SystemClock
from qianbao.errors import Conflict, NotFound
from qianbao.ledger.model import (
    MAX_ACCOUNT_ID_LENGTH,
    MAX_AMOUNT,
    MAX_CODE_LENGTH,
    MAX_OWNER_REF_LENGTH,
    Account,
    AccountResult,
    AccountSpec,
    AccountStatus,
    NormalBalance,
    ResultCode,
    TransferKind,
    TransferResult,
    TransferSpec,
    canonical_metadata,
    metadata_problem,
    storable_text,
)
from qianbao.ledger.repository import LedgerRepository
from qianbao.ledger.rules import BatchState, apply_batch, expiry_id
from qianbao.money import UnknownCurrencyError, currency
from qianbao.store.database import Database
from qianbao.store.errors import DATABASE_ERRORS, driver_error, is_retryable

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRIES = 8
SWEEP_OVERLAP_US = 3_600 * 1_000_000
# An expiry that answers one of these leaves its hold resolved: nothing more to sweep for it.
_SETTLED_EXPIRY = frozenset(
    {
        ResultCode.OK,
        ResultCode.EXISTS,
        ResultCode.PENDING_ALREADY_POSTED,
        ResultCode.PENDING_ALREADY_VOIDED,
        ResultCode.PENDING_EXPIRED,
    }
)


class LedgerEngine:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.repo = LedgerRepository(db.dialect)
        self._swept_until = 0  # holds timing out before this are known resolved (see expire_pending)

    # -- transfers ------------------------------------------------------------------------------------

    def create_transfers(
        self, specs: Sequence[TransferSpec], group_ends: Iterable[int] | None = None
    ) -> list[TransferResult]:
        """Apply `specs` in one transaction; one result per request, in order."""
        if not specs:
            return []
        ends = frozenset(group_ends) if group_ends is not None else frozenset({len(specs) - 1})
        return self._with_retries(lambda conn: self.apply_in(conn, specs, ends))

    def apply_in(
        self, conn: Connection, specs: Sequence[TransferSpec], group_ends: frozenset[int] | None = None
    ) -> list[TransferResult]:
        """Apply `specs` inside the caller's open transaction (a service's unit of work).

        A racing process (same id, or the same hold resolved at once) makes this raise a database error
        for which `qianbao.store.errors.is_retryable` is true; the caller then retries its whole unit of
        work, as `create_transfers` does."""
        if group_ends is None:
            group_ends = frozenset({len(specs) - 1})
        repo = self.repo
        # Text the database cannot hold (NUL) can match nothing stored: leave it out of the lookups, and
        # the rules answer for it (invalid_id, pending_not_found, account_not_found).
        pending_ids = {s.pending_id for s in specs if s.pending_id and storable_text(s.pending_id)}
        pendings = repo.transfers_by_id(conn, pending_ids)
        account_ids: set[str] = set()
        for spec in specs:
            account_ids.add(spec.debit_account_id)
            account_ids.add(spec.credit_account_id)
        for pending in pendings.values():
            account_ids.add(pending.debit_account_id)
            account_ids.add(pending.credit_account_id)
        accounts = repo.lock_balances(conn, (a for a in account_ids if a and storable_text(a)))
        existing = repo.transfers_by_id(conn, (s.id for s in specs if s.id and storable_text(s.id)))
        resolutions = repo.resolutions(conn, pending_ids)
        seqs = repo.reserve_seqs(conn, len(specs))
        state = BatchState(
            accounts=accounts,
            existing=existing,
            pendings=pendings,
            resolutions=resolutions,
            now=self.clock.now_us(),
        )
        outcome = apply_batch(specs, group_ends, state, iter(seqs))
        repo.insert_transfers(conn, outcome.created)
        repo.update_balances(conn, outcome.touched.values())
        return outcome.results

    def expire_pending(self, limit: int = 1000) -> int:
        """Release holds whose timeout has passed (the sweeper). Returns how many were expired.

        Resolved holds stay in the timeout index forever (transfers are immutable), so a sweep that
        started from the beginning of time would get slower as history grows. Once a sweep has drained
        everything due, later sweeps of this engine start at `now - SWEEP_OVERLAP_US`: the overlap covers
        holds committed late or stamped by a server whose clock is behind. A new process (and
        `qianbao ledger sweep`) starts from the beginning once."""
        now = self.clock.now_us()
        with self.db.read() as conn:
            ids = self.repo.expired_pending_ids(conn, now, limit, since=self._swept_until)
        if not ids:
            self._swept_until = max(self._swept_until, now - SWEEP_OVERLAP_US)
            return 0
        # Deterministic ids make concurrent sweepers in several processes harmless.
        specs = [
            TransferSpec(id=expiry_id(pid), kind=TransferKind.EXPIRE_PENDING, pending_id=pid) for pid in ids
        ]
        results = self.create_transfers(specs, group_ends=range(len(specs)))
        settled = all(r.code in _SETTLED_EXPIRY for r in results)
        if len(ids) < limit and settled:
            self._swept_until = max(self._swept_until, now - SWEEP_OVERLAP_US)
        return sum(1 for r in results if r.code is ResultCode.OK)

    # -- accounts -------------------------------------------------------------------------------------

    def create_accounts(self, specs: Sequence[AccountSpec]) -> list[AccountResult]:
        return self._with_retries(lambda conn: self._create_accounts_in(conn, specs))

    def create_accounts_in(self, conn: Connection, specs: Sequence[AccountSpec]) -> list[AccountResult]:
        return self._create_accounts_in(conn, specs)

    def _create_accounts_in(self, conn: Connection, specs: Sequence[AccountSpec]) -> list[AccountResult]:
        existing = self.repo.lock_accounts(conn, (s.id for s in specs if storable_text(s.id)))
        now = self.clock.now_us()
        results: list[AccountResult] = []
        new: list[Account] = []
        for spec in specs:
            problem = _account_problem(spec)
            if problem is not None:
                results.append(AccountResult(spec.id, problem))
                continue
            found = existing.get(spec.id)
            if found is not None:
                same = _account_matches(spec, found)
                code = ResultCode.EXISTS if same else ResultCode.EXISTS_WITH_DIFFERENT_FIELDS
                results.append(AccountResult(spec.id, code, found))
                continue
            account = Account(
                id=spec.id,
                currency=spec.currency,
                code=spec.code,
                owner_ref=spec.owner_ref,
                normal_balance=spec.normal_balance,
                debits_must_not_exceed_credits=spec.debits_must_not_exceed_credits,
                credits_must_not_exceed_debits=spec.credits_must_not_exceed_debits,
                balance_ceiling=spec.balance_ceiling,
                status=AccountStatus.OPEN,
                debits_posted=0,
                credits_posted=0,
                debits_pending=0,
                credits_pending=0,
                metadata=canonical_metadata(spec.metadata),
                created_at=now,
            )
            existing[spec.id] = account
            new.append(account)
            results.append(AccountResult(spec.id, ResultCode.OK, account))
        self.repo.insert_accounts(conn, new)
        return results

    def set_account_status(self, account_id: str, status: AccountStatus) -> Account:
        """Freeze, unfreeze or close an account. Closing needs a zero balance and no holds."""
        return self._with_retries(lambda conn: self.set_account_status_in(conn, account_id, status))

    def set_account_status_in(self, conn: Connection, account_id: str, status: AccountStatus) -> Account:
        """`set_account_status` inside the caller's transaction (closing a wallet after emptying it)."""
        account = self.repo.lock_accounts(conn, [account_id]).get(account_id)
        if account is None:
            raise NotFound(f"no ledger account {account_id!r}")
        if account.status is AccountStatus.CLOSED and status is not AccountStatus.CLOSED:
            raise Conflict(f"account {account_id!r} is closed; closing is final")
        if status is AccountStatus.CLOSED and (
            account.net_posted != 0 or account.debits_pending or account.credits_pending
        ):
            raise Conflict(f"account {account_id!r} still has a balance or holds; empty it first")
        self.repo.set_status(conn, account_id, status)
        account.status = status
        return account

    def lock_accounts_in(self, conn: Connection, account_ids: list[str]) -> dict[str, Account]:
        """The accounts, locked for the rest of the caller's transaction (in a fixed order)."""
        return self.repo.lock_accounts(conn, account_ids)

    def set_balance_ceiling(self, account_id: str, ceiling: int | None) -> Account:
        return self._with_retries(lambda conn: self.set_balance_ceiling_in(conn, account_id, ceiling))

    def set_balance_ceiling_in(self, conn: Connection, account_id: str, ceiling: int | None) -> Account:
        """Change an account's ceiling inside the caller's transaction (a KYC tier change, say)."""
        if ceiling is not None and (type(ceiling) is not int or not 0 <= ceiling <= MAX_AMOUNT):
            raise invalid.amount_range("balance_cap", 0, MAX_AMOUNT)
        account = self.repo.lock_accounts(conn, [account_id]).get(account_id)
        if account is None:
            raise NotFound(f"no ledger account {account_id!r}")
        if ceiling is not None:
            credit_normal = account.normal_balance is NormalBalance.CREDIT
            incoming = account.credits_pending if credit_normal else account.debits_pending
            if account.balance + incoming > ceiling:
                raise Conflict(f"account {account_id!r} already holds more than {ceiling}")
        self.repo.set_ceiling(conn, account_id, ceiling)
        account.balance_ceiling = ceiling
        return account

    # -- plumbing -------------------------------------------------------------------------------------

    def _with_retries(self, work: Callable[[Connection], T]) -> T:
        attempt = 0
        while True:
            try:
                with self.db.write() as conn:
                    return work(conn)
            except DATABASE_ERRORS as exc:
                attempt += 1
                if attempt >= _RETRIES or not is_retryable(exc):
                    raise
                log.info(
                    "ledger batch retried after %s (attempt %d)", type(driver_error(exc)).__name__, attempt
                )


def _account_problem(spec: AccountSpec) -> ResultCode | None:
    if not spec.id or len(spec.id) > MAX_ACCOUNT_ID_LENGTH or not storable_text(spec.id):
        return ResultCode.INVALID_ID
    if not spec.code or len(spec.code) > MAX_CODE_LENGTH or not storable_text(spec.code):
        return ResultCode.INVALID_CODE
    if spec.owner_ref is not None and (
        not spec.owner_ref or len(spec.owner_ref) > MAX_OWNER_REF_LENGTH or not storable_text(spec.owner_ref)
    ):
        return ResultCode.INVALID_OWNER_REF
    problem = metadata_problem(spec.metadata)
    if problem is not None:
        return problem
    try:
        currency(spec.currency)
    except (UnknownCurrencyError, TypeError):
        return ResultCode.UNKNOWN_CURRENCY
    if spec.debits_must_not_exceed_credits and spec.credits_must_not_exceed_debits:
        return ResultCode.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    ceiling = spec.balance_ceiling
    if ceiling is not None and (type(ceiling) is not int or not 0 <= ceiling <= MAX_AMOUNT):
        return ResultCode.INVALID_CEILING
    return None


def _account_matches(spec: AccountSpec, account: Account) -> bool:
    return (
        spec.currency == account.currency
        and spec.code == account.code
        and spec.owner_ref == account.owner_ref
        and spec.normal_balance == account.normal_balance
        and spec.debits_must_not_exceed_credits == account.debits_must_not_exceed_credits
        and spec.credits_must_not_exceed_debits == account.credits_must_not_exceed_debits
        and spec.balance_ceiling == account.balance_ceiling
        and canonical_metadata(spec.metadata) == account.metadata
    )

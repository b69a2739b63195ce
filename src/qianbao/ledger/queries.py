"""Ledger reads: accounts, transfers with their hold status, history with balance after, past balances."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection

from qianbao import invalid
from qianbao.ledger.model import (
    PENDING_STATUS_BY_RESOLUTION,
    Account,
    NormalBalance,
    PendingStatus,
    Transfer,
    TransferKind,
    storable_text,
)
from qianbao.ledger.repository import (
    _ACCOUNT_COLUMNS,
    _TRANSFER_COLUMNS,
    LedgerRepository,
    account_from_row,
    transfer_from_row,
)
from qianbao.store.database import Database

MAX_PAGE = 100
# For `HistoryFilter.holds_once` (the listing's table is `t`; `pending_id` has a unique index): a hold
# that was resolved, and the code a transfer is listed under (a resolution's: its hold's).
_NOT_A_RESOLVED_HOLD = (
    f"(t.kind <> '{TransferKind.PENDING.value}'"
    " OR NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id))"
)
_HOLDS_CODE = "COALESCE((SELECT h.code FROM ledger_transfers h WHERE h.id = t.pending_id), t.code)"
_CURSOR = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also accepts "²"


@dataclass(frozen=True, slots=True)
class TransferView:
    transfer: Transfer
    pending_status: PendingStatus | None  # for holds: still pending, or how it was resolved
    resolved_by: str | None  # the id of the post/void/expire transfer


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    transfer: Transfer
    direction: Literal["debit", "credit"]
    balance_after: int  # posted balance on the account's normal side, right after this transfer
    hold: Transfer | None = None  # with `HistoryFilter.holds_once`, for a resolution: the hold it resolves


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Filters `account_history_filtered` applies in SQL (None: no filter on that)."""

    codes: frozenset[str] | None = None  # transfer codes; an empty set matches nothing
    direction: Literal["debit", "credit"] | None = None  # the account's side
    since_us: int | None = None  # created_at >= since_us
    until_us: int | None = None  # created_at < until_us
    counterparty: str | None = None  # the other account of the transfer
    min_amount: int | None = None
    max_amount: int | None = None
    # A hold and what resolved it (post, void, expiry) as one entry: the resolution, where the posted
    # balance changed, carrying its hold (`HistoryEntry.hold`); a resolved hold is left out, and `codes`
    # match a resolution by its hold's code (a void may have a code of its own).
    holds_once: bool = False


class LedgerReader:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._repo = LedgerRepository(db.dialect)
        self._p = "%s" if db.is_postgresql else "?"

    def get_account(self, account_id: str) -> Account | None:
        return self.lookup_accounts([account_id]).get(account_id)

    def lookup_accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        ids = [i for i in ids if storable_text(i)]  # NUL matches nothing, and PostgreSQL refuses it
        if not ids:
            return {}
        with self.db.read() as conn:
            return self.lookup_accounts_in(conn, ids)

    def lookup_accounts_in(self, conn: Connection, ids: Iterable[str]) -> dict[str, Account]:
        """`lookup_accounts` inside a transaction the caller holds (a payment's pre-checks)."""
        ids = [i for i in ids if storable_text(i)]
        if not ids:
            return {}
        sql = f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE {self._repo.in_list('id')}"
        rows = conn.exec_driver_sql(sql, (self._repo.list_param(ids),)).fetchall()
        return {row[0]: account_from_row(row) for row in rows}

    def get_transfer(self, transfer_id: str) -> TransferView | None:
        if not storable_text(transfer_id):
            return None
        p = self._p
        with self.db.read() as conn:
            row = conn.exec_driver_sql(
                f"SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = {p}", (transfer_id,)
            ).first()
            if row is None:
                return None
            transfer = transfer_from_row(row)
            if transfer.kind is not TransferKind.PENDING:
                return TransferView(transfer, None, None)
            resolution = conn.exec_driver_sql(
                f"SELECT id, kind FROM ledger_transfers WHERE pending_id = {p}", (transfer_id,)
            ).first()
        if resolution is None:
            return TransferView(transfer, PendingStatus.PENDING, None)
        return TransferView(
            transfer, PENDING_STATUS_BY_RESOLUTION[TransferKind(resolution[1])], resolution[0]
        )

    def account_history(self, account_id: str, limit: int = 20, cursor: str | None = None) -> HistoryPage:
        """Entries touching the account, newest first; `cursor` continues from a previous page."""
        if not 1 <= limit <= MAX_PAGE:
            raise invalid.out_of_range("limit", 1, MAX_PAGE)
        before = _parse_cursor(cursor)
        account = self.get_account(account_id)
        if account is None:
            return HistoryPage([], None)
        p = self._p
        cols = _TRANSFER_COLUMNS
        # Two index range scans (debit side, credit side), merged; each is already in seq order.
        sql = (
            f"SELECT * FROM (SELECT {cols} FROM ledger_transfers WHERE debit_account_id = {p} AND seq < {p}"
            f" ORDER BY seq DESC LIMIT {p}) d UNION ALL SELECT * FROM (SELECT {cols} FROM ledger_transfers"
            f" WHERE credit_account_id = {p} AND seq < {p} ORDER BY seq DESC LIMIT {p}) c"
            f" ORDER BY seq DESC LIMIT {p}"
        )
        with self.db.read() as conn:
            rows = conn.exec_driver_sql(
                sql, (account_id, before, limit + 1, account_id, before, limit + 1, limit + 1)
            ).fetchall()
        sign = 1 if account.normal_balance is NormalBalance.CREDIT else -1
        entries = []
        for row in rows[:limit]:
            t = transfer_from_row(row)
            if t.debit_account_id == account_id:
                entries.append(HistoryEntry(t, "debit", sign * t.debit_net_after))
            else:
                entries.append(HistoryEntry(t, "credit", sign * t.credit_net_after))
        next_cursor = str(entries[-1].transfer.seq) if len(rows) > limit else None
        return HistoryPage(entries, next_cursor)

    def account_history_filtered(
        self,
        account_id: str,
        limit: int = 20,
        cursor: str | None = None,
        filters: HistoryFilter | None = None,
    ) -> HistoryPage:
        """Like `account_history`, with filters applied in SQL; the cursor is the same kind of position,
        so a page's `next_cursor` continues the same filtered listing when the filters are passed again."""
        if not 1 <= limit <= MAX_PAGE:
            raise invalid.out_of_range("limit", 1, MAX_PAGE)
        before = _parse_cursor(cursor)
        f = filters or HistoryFilter()
        account = self.get_account(account_id)
        if account is None or (f.codes is not None and not f.codes):
            return HistoryPage([], None)
        if f.counterparty is not None and not storable_text(f.counterparty):
            return HistoryPage([], None)
        p = self._p
        sides: list[tuple[str, list[object]]] = []
        for own, other, direction in (
            ("debit_account_id", "credit_account_id", "debit"),
            ("credit_account_id", "debit_account_id", "credit"),
        ):
            if f.direction is not None and f.direction != direction:
                continue
            where = [f"{own} = {p}", f"seq < {p}"]
            params: list[object] = [account_id, before]
            if f.holds_once:
                where.append(_NOT_A_RESOLVED_HOLD)
            if f.codes is not None:
                where.append(self._repo.in_list(_HOLDS_CODE if f.holds_once else "code"))
                params.append(self._repo.list_param(sorted(f.codes)))
            for clause, value in (
                (f"created_at >= {p}", f.since_us),
                (f"created_at < {p}", f.until_us),
                (f"{other} = {p}", f.counterparty),
                (f"amount >= {p}", f.min_amount),
                (f"amount <= {p}", f.max_amount),
            ):
                if value is not None:
                    where.append(clause)
                    params.append(value)
            sql = (
                f"SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers t WHERE {' AND '.join(where)}"
                f" ORDER BY seq DESC LIMIT {p}"
            )
            sides.append((sql, [*params, limit + 1]))
        if len(sides) == 1:
            sql, params = sides[0]
        else:
            (debit_sql, debit_params), (credit_sql, credit_params) = sides
            sql = (
                f"SELECT * FROM ({debit_sql}) d UNION ALL SELECT * FROM ({credit_sql}) c"
                f" ORDER BY seq DESC LIMIT {p}"
            )
            params = [*debit_params, *credit_params, limit + 1]
        with self.db.read() as conn:
            rows = conn.exec_driver_sql(sql, tuple(params)).fetchall()
            transfers = [transfer_from_row(row) for row in rows[:limit]]
            resolved = [t.pending_id for t in transfers if t.pending_id is not None]
            holds = self.transfers_in(conn, resolved) if f.holds_once else {}
        sign = 1 if account.normal_balance is NormalBalance.CREDIT else -1
        entries = []
        for t in transfers:
            hold = None if t.pending_id is None else holds.get(t.pending_id)
            if t.debit_account_id == account_id:
                entries.append(HistoryEntry(t, "debit", sign * t.debit_net_after, hold))
            else:
                entries.append(HistoryEntry(t, "credit", sign * t.credit_net_after, hold))
        next_cursor = str(entries[-1].transfer.seq) if len(rows) > limit else None
        return HistoryPage(entries, next_cursor)

    def transfers_in(self, conn: Connection, ids: list[str]) -> dict[str, Transfer]:
        """Transfers by id, inside a transaction the caller holds (one statement)."""
        ids = [i for i in ids if storable_text(i)]
        if not ids:
            return {}
        sql = f"SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers WHERE {self._repo.in_list('id')}"
        rows = conn.exec_driver_sql(sql, (self._repo.list_param(ids),)).fetchall()
        return {t.id: t for t in map(transfer_from_row, rows)}

    def balance_at(self, account_id: str, at_us: int) -> int | None:
        """Posted balance (normal side) as of an instant; None if the account does not exist."""
        account = self.get_account(account_id)
        if account is None:
            return None
        p = self._p
        # Newest qualifying row on each side (each an index scan backwards), then the newer of the two.
        sql = (
            "SELECT net FROM (SELECT * FROM (SELECT seq, debit_net_after AS net FROM ledger_transfers"
            f" WHERE debit_account_id = {p} AND created_at <= {p} ORDER BY seq DESC LIMIT 1) d"
            " UNION ALL SELECT * FROM (SELECT seq, credit_net_after FROM ledger_transfers"
            f" WHERE credit_account_id = {p} AND created_at <= {p} ORDER BY seq DESC LIMIT 1) c) x"
            " ORDER BY seq DESC LIMIT 1"
        )
        with self.db.read() as conn:
            net = conn.exec_driver_sql(sql, (account_id, at_us, account_id, at_us)).scalar()
        net = 0 if net is None else int(net)
        return net if account.normal_balance is NormalBalance.CREDIT else -net


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 2**63 - 1
    if not _CURSOR.fullmatch(cursor) or int(cursor) > 2**63 - 1:
        raise invalid.cursor()
    return int(cursor)

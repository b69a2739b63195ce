"""Ledger persistence: set-based reads and writes for a batch, one statement per step.

PostgreSQL gets arrays (`= ANY(...)`, `unnest`) so a batch of thousands of transfers is a handful of
statements; SQLite gets `executemany` inside one `BEGIN IMMEDIATE` transaction, which is how it is fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

from qianbao.ledger.model import Account, AccountStatus, NormalBalance, Transfer, TransferKind

_ACCOUNT_COLUMNS = (
    "id, currency, code, owner_ref, normal_balance, debits_must_not_exceed_credits,"
    " credits_must_not_exceed_debits, balance_ceiling, status, debits_posted, credits_posted,"
    " debits_pending, credits_pending, metadata, created_at, last_seq"
)
_TRANSFER_COLUMNS = (
    "seq, id, kind, debit_account_id, credit_account_id, amount, currency, code, pending_id,"
    " timeout_at, metadata, created_at, debit_net_after, credit_net_after"
)


_STATUS = {s.value: s for s in AccountStatus}
_NORMAL = {n.value: n for n in NormalBalance}
_KIND = {k.value: k for k in TransferKind}


def pg_array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal of numbers (or NULLs). psycopg's list adapter runs in Python and showed
    up as a fifth of batch time; a C-level join of `map(str, …)` is several times cheaper."""
    values = list(values)
    if None in values:
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    return "{" + ",".join(map(str, values)) + "}"


def pg_text_array(values: Iterable[str | None]) -> str:
    values = list(values)
    if values and values.count(None) == len(values):  # e.g. pending_id and metadata of plain transfers
        return "{" + ",".join(["NULL"] * len(values)) + "}"
    if None not in values:
        joined = '","'.join(values)  # type: ignore[arg-type]
        # Common case: nothing to escape (the only quotes are the 2 per separator), so one join does it.
        if "\\" not in joined and joined.count('"') == 2 * (len(values) - 1):
            return '{"' + joined + '"}' if values else "{}"
    return (
        "{"
        + ",".join(
            "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values
        )
        + "}"
    )


def _json_load(value: Any) -> Any:
    # psycopg decodes json columns itself; sqlite3 hands back the text.
    return json.loads(value) if isinstance(value, str) else value


def _json_dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def account_from_row(row: Sequence[Any]) -> Account:
    return Account(
        id=row[0],
        currency=row[1],
        code=row[2],
        owner_ref=row[3],
        normal_balance=_NORMAL[row[4]],
        debits_must_not_exceed_credits=bool(row[5]),
        credits_must_not_exceed_debits=bool(row[6]),
        balance_ceiling=row[7],
        status=_STATUS[row[8]],
        debits_posted=row[9],
        credits_posted=row[10],
        debits_pending=row[11],
        credits_pending=row[12],
        metadata=_json_load(row[13]),
        created_at=row[14],
        last_seq=row[15],
    )


_BALANCE_COLUMNS = (
    "id, currency, normal_balance, debits_must_not_exceed_credits, credits_must_not_exceed_debits,"
    " balance_ceiling, status, debits_posted, credits_posted, debits_pending, credits_pending, last_seq"
)


def balance_state_from_row(row: Sequence[Any]) -> Account:
    """The part of an account the transfer rules need (code, owner and metadata left out: hot path)."""
    return Account(row[0], row[1], "", None, _NORMAL[row[2]], bool(row[3]), bool(row[4]), row[5],
                   _STATUS[row[6]], row[7], row[8], row[9], row[10], None, 0, row[11])  # fmt: skip


def transfer_from_row(row: Sequence[Any]) -> Transfer:
    return Transfer(
        seq=row[0],
        id=row[1],
        kind=_KIND[row[2]],
        debit_account_id=row[3],
        credit_account_id=row[4],
        amount=row[5],
        currency=row[6],
        code=row[7],
        pending_id=row[8],
        timeout_at=row[9],
        metadata=_json_load(row[10]),
        created_at=row[11],
        debit_net_after=row[12],
        credit_net_after=row[13],
    )


def _fetch(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    # Straight to the DBAPI cursor: the SQLAlchemy result layer costs more per row than the query here.
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _execute(conn: Connection, sql: str, params: Sequence[Any]) -> int:
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _execute_many(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql, rows)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _sqlite_rows(conn: Connection, columns: str, table: str, key: str, keys: Sequence[str]) -> list[Any]:
    """Rows whose `key` is in `keys`, fetched as one JSON value: a single step, so the sqlite3 module
    releases the GIL once per query instead of once per row (which starved the writer thread of the GIL
    whenever an event loop shared the process)."""
    sql = (
        f"SELECT json_group_array(json_array({columns})) FROM {table}"
        f" WHERE {key} IN (SELECT value FROM json_each(?))"
    )
    packed = _fetch(conn, sql, (json.dumps(list(keys)),))[0][0]
    rows: list[Any] = json.loads(packed)
    return rows


class LedgerRepository:
    """Dialect-aware SQL for the ledger's hot path. Every method runs on the caller's transaction."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"
        self._p = "%s" if self.pg else "?"

    def in_list(self, column: str) -> str:
        # One parameter for the whole list: an array on PostgreSQL, a JSON array on SQLite.
        return f"{column} = ANY(%s::text[])" if self.pg else f"{column} IN (SELECT value FROM json_each(?))"

    def list_param(self, ids: Iterable[str]) -> Any:
        return pg_text_array(ids) if self.pg else json.dumps(list(ids))

    def lock_accounts(self, conn: Connection, ids: Iterable[str]) -> dict[str, Account]:
        """Load (and on PostgreSQL row-lock, in id order) the given accounts."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        sql = f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE {self.in_list('id')} ORDER BY id"
        if self.pg:
            sql += " FOR UPDATE"
        rows = _fetch(conn, sql, (self.list_param(ids),))
        return {row[0]: account_from_row(row) for row in rows}

    def lock_balances(self, conn: Connection, ids: Iterable[str]) -> dict[str, Account]:
        """Like `lock_accounts`, but only what deciding transfers needs."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        if self.pg:
            sql = (
                f"SELECT {_BALANCE_COLUMNS} FROM ledger_accounts"
                " WHERE id = ANY(%s::text[]) ORDER BY id FOR UPDATE"
            )
            rows = _fetch(conn, sql, (pg_text_array(ids),))
        else:
            rows = _sqlite_rows(conn, _BALANCE_COLUMNS, "ledger_accounts", "id", ids)
        return {row[0]: balance_state_from_row(row) for row in rows}

    def transfers_by_id(self, conn: Connection, ids: Iterable[str]) -> dict[str, Transfer]:
        ids = list(set(ids))
        if not ids:
            return {}
        if self.pg:
            sql = f"SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = ANY(%s::text[])"
            rows = _fetch(conn, sql, (pg_text_array(ids),))
        else:
            rows = _sqlite_rows(conn, _TRANSFER_COLUMNS, "ledger_transfers", "id", ids)
        return {row[1]: transfer_from_row(row) for row in rows}

    def resolutions(self, conn: Connection, pending_ids: Iterable[str]) -> dict[str, TransferKind]:
        ids = list(set(pending_ids))
        if not ids:
            return {}
        sql = f"SELECT pending_id, kind FROM ledger_transfers WHERE {self.in_list('pending_id')}"
        rows = _fetch(conn, sql, (self.list_param(ids),))
        return {row[0]: _KIND[row[1]] for row in rows}

    def reserve_seqs(self, conn: Connection, count: int) -> list[int]:
        """Transfer sequence numbers, taken after the account locks so per-account order is apply order."""
        if count == 0:
            return []
        if self.pg:
            rows = _fetch(conn, "SELECT nextval('ledger_transfer_seq') FROM generate_series(1, %s)", (count,))
            return [row[0] for row in rows]
        # SQLite: BEGIN IMMEDIATE holds the only write lock, so the counter row is ours alone.
        top: int = _fetch(
            conn,
            "UPDATE ledger_sequences SET value = value + ? WHERE name = 'transfer' RETURNING value",
            (count,),
        )[0][0]
        return list(range(top - count + 1, top + 1))

    # -- writes: set-based, one statement per batch ---------------------------------------------------

    def insert_transfers(self, conn: Connection, transfers: Sequence[Transfer]) -> None:
        if not transfers:
            return
        if self.pg:
            sql = (
                f"INSERT INTO ledger_transfers ({_TRANSFER_COLUMNS}) SELECT * FROM unnest("
                "%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[],"
                " %s::text[], %s::text[], %s::bigint[], %s::json[], %s::bigint[], %s::bigint[],"
                " %s::bigint[])"
            )
            params: Any = (
                pg_array([t.seq for t in transfers]),
                pg_text_array([t.id for t in transfers]),
                pg_text_array([t.kind for t in transfers]),  # a StrEnum is a str
                pg_text_array([t.debit_account_id for t in transfers]),
                pg_text_array([t.credit_account_id for t in transfers]),
                pg_array([t.amount for t in transfers]),
                pg_text_array([t.currency for t in transfers]),
                pg_text_array([t.code for t in transfers]),
                pg_text_array([t.pending_id for t in transfers]),
                pg_array([t.timeout_at for t in transfers]),
                pg_text_array([_json_dump(t.metadata) for t in transfers]),
                pg_array([t.created_at for t in transfers]),
                pg_array([t.debit_net_after for t in transfers]),
                pg_array([t.credit_net_after for t in transfers]),
            )
        else:
            sql = (
                f"INSERT INTO ledger_transfers ({_TRANSFER_COLUMNS}) SELECT "
                + ", ".join(f"value->>{i}" for i in range(14))
                + " FROM json_each(?)"
            )
            rows = [
                (t.seq, t.id, t.kind.value, t.debit_account_id, t.credit_account_id, t.amount, t.currency,
                 t.code, t.pending_id, t.timeout_at, _json_dump(t.metadata), t.created_at, t.debit_net_after,
                 t.credit_net_after)
                for t in transfers
            ]  # fmt: skip
            params = (json.dumps(rows, separators=(",", ":")),)
        _execute(conn, sql, params)

    def update_balances(self, conn: Connection, accounts: Iterable[Account]) -> None:
        accounts = list(accounts)
        if not accounts:
            return
        if self.pg:
            sql = (
                "UPDATE ledger_accounts AS a SET debits_posted = v.dp, credits_posted = v.cp,"
                " debits_pending = v.dq, credits_pending = v.cq, last_seq = v.ls"
                " FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],"
                " %s::bigint[])"
                " AS v(id, dp, cp, dq, cq, ls) WHERE a.id = v.id"
            )
            params: Any = (
                pg_text_array([a.id for a in accounts]),
                pg_array([a.debits_posted for a in accounts]),
                pg_array([a.credits_posted for a in accounts]),
                pg_array([a.debits_pending for a in accounts]),
                pg_array([a.credits_pending for a in accounts]),
                pg_array([a.last_seq for a in accounts]),
            )
        else:
            sql = (
                "UPDATE ledger_accounts SET debits_posted = v.value->>1, credits_posted = v.value->>2,"
                " debits_pending = v.value->>3, credits_pending = v.value->>4, last_seq = v.value->>5"
                " FROM json_each(?) AS v WHERE ledger_accounts.id = v.value->>0"
            )
            rows = [
                (a.id, a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending, a.last_seq)
                for a in accounts
            ]
            params = (json.dumps(rows, separators=(",", ":")),)
        _execute(conn, sql, params)

    def insert_accounts(self, conn: Connection, accounts: Sequence[Account]) -> None:
        if not accounts:
            return
        p = self._p
        _execute_many(
            conn,
            f"INSERT INTO ledger_accounts ({_ACCOUNT_COLUMNS}) VALUES ({', '.join([p] * 16)})",
            [
                (
                    a.id,
                    a.currency,
                    a.code,
                    a.owner_ref,
                    a.normal_balance.value,
                    a.debits_must_not_exceed_credits,
                    a.credits_must_not_exceed_debits,
                    a.balance_ceiling,
                    a.status.value,
                    a.debits_posted,
                    a.credits_posted,
                    a.debits_pending,
                    a.credits_pending,
                    _json_dump(a.metadata),
                    a.created_at,
                    a.last_seq,
                )
                for a in accounts
            ],  # fmt: skip
        )

    def set_status(self, conn: Connection, account_id: str, status: AccountStatus) -> None:
        p = self._p
        _execute(conn, f"UPDATE ledger_accounts SET status = {p} WHERE id = {p}", (status.value, account_id))

    def set_ceiling(self, conn: Connection, account_id: str, ceiling: int | None) -> None:
        p = self._p
        _execute(
            conn, f"UPDATE ledger_accounts SET balance_ceiling = {p} WHERE id = {p}", (ceiling, account_id)
        )

    def expired_pending_ids(self, conn: Connection, now: int, limit: int, since: int = 0) -> list[str]:
        """Unresolved holds whose timeout is in [since, now], oldest first."""
        p = self._p
        rows = _fetch(
            conn,
            f"SELECT t.id FROM ledger_transfers t WHERE t.timeout_at >= {p}"
            f" AND t.timeout_at <= {p} AND NOT EXISTS (SELECT 1 FROM ledger_transfers r"
            f" WHERE r.pending_id = t.id) ORDER BY t.timeout_at LIMIT {p}",
            (since, now, limit),
        )
        return [row[0] for row in rows]

"""The database itself refuses what the ledger code would never do (GUIDE section 3: invariants hold twice).

Every test goes around the engine with raw SQL, expects the database to refuse, checks the error names
the guard that fired (so a typo in the SQL cannot pass for a refusal) and that nothing changed. Where a
refusal could be mistaken for a broken statement, a control shows the same statement shape is accepted
when it keeps the invariant (inside a transaction that is rolled back).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import AccountSpec, NormalBalance, ResultCode, TransferSpec
from qianbao.store.database import Database
from tests.conftest import unique
from tests.support.ledger import open_accounts

CNY = "CNY"
# SQLite's composite foreign keys / PostgreSQL's statement trigger standing in for them (migration 0001).
MISSING_ACCOUNT = "FOREIGN KEY constraint failed|refers to a missing account or one in another currency"
_ACCOUNT_ROW = (
    "SELECT id, currency, normal_balance, status, debits_posted, credits_posted, debits_pending,"
    " credits_pending, balance_ceiling FROM ledger_accounts WHERE id = ?"
)
_RAW_SEQS = itertools.count(10**15)  # far above the numbers the engine hands out
_TRANSFER_ROW = "SELECT * FROM ledger_transfers WHERE id = ?"
_TRANSFER_COLUMNS = (
    "seq, id, kind, debit_account_id, credit_account_id, amount, currency, code, pending_id, timeout_at,"
    " metadata, created_at, debit_net_after, credit_net_after"
)


def _sql(db: Database, sql: str) -> str:
    return sql.replace("?", "%s") if db.is_postgresql else sql


def row(db: Database, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    with db.read() as conn:
        found = conn.exec_driver_sql(_sql(db, sql), tuple(params)).first()
    return None if found is None else tuple(found)


def refused(db: Database, sql: str, params: Sequence[Any] = (), *, guard: str) -> None:
    """The statement fails with an integrity error whose message matches `guard` (a regex)."""
    with pytest.raises(IntegrityError) as info:
        with db.write() as conn:
            conn.exec_driver_sql(_sql(db, sql), tuple(params))
    assert re.search(guard, str(info.value.orig), re.IGNORECASE), info.value.orig


def accepted(db: Database, sql: str, params: Sequence[Any] = ()) -> None:
    """The statement succeeds on exactly one row (then is rolled back)."""
    with db.engine.connect() as conn:
        tx = conn.begin()
        try:
            assert conn.exec_driver_sql(_sql(db, sql), tuple(params)).rowcount == 1
        finally:
            tx.rollback()


def account_row(db: Database, account_id: str) -> tuple[Any, ...] | None:
    return row(db, _ACCOUNT_ROW, (account_id,))


def transfer_row(db: Database, transfer_id: str) -> tuple[Any, ...] | None:
    return row(db, _TRANSFER_ROW, (transfer_id,))


def count_transfers(db: Database) -> int:
    with db.read() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM ledger_transfers").scalar_one())


def _insert(**overrides: Any) -> tuple[str, tuple[Any, ...]]:
    values: dict[str, Any] = {
        "seq": next(_RAW_SEQS),
        "id": unique("raw"),
        "kind": "posted",
        "debit_account_id": None,
        "credit_account_id": None,
        "amount": 1,
        "currency": CNY,
        "code": "raw",
        "pending_id": None,
        "timeout_at": None,
        "metadata": None,
        "created_at": 0,
        "debit_net_after": 0,
        "credit_net_after": 0,
    }
    values.update(overrides)
    sql = f"INSERT INTO ledger_transfers ({_TRANSFER_COLUMNS}) VALUES ({', '.join('?' * 14)})"
    return sql, tuple(values[c.strip()] for c in _TRANSFER_COLUMNS.split(","))


@pytest.fixture
def wallets(engine: LedgerEngine) -> tuple[str, str, str, str]:
    """(funding, a, b, transfer id): wallets a and b funded with 1000 each, one transfer a -> b of 100."""
    funding, (a, b) = open_accounts(engine, 2, funded=1_000)
    transfer_id = unique("trf")
    [result] = engine.create_transfers([TransferSpec.posted(transfer_id, a, b, 100, CNY)])
    assert result.code is ResultCode.OK
    return funding, a, b, transfer_id


# -- transfers are immutable ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("UPDATE ledger_transfers SET amount = amount + 1 WHERE id = ?", ()),
        ("UPDATE ledger_transfers SET metadata = NULL, code = 'edited' WHERE id = ?", ()),
        ("DELETE FROM ledger_transfers WHERE id = ?", ()),
    ],
    ids=["update_amount", "update_code", "delete"],
)
def test_transfers_cannot_be_updated_or_deleted(
    statement: str, params: tuple[Any, ...], db: Database, wallets: tuple[str, str, str, str]
) -> None:
    transfer_id = wallets[3]
    before = transfer_row(db, transfer_id)
    assert before is not None

    refused(db, statement, (*params, transfer_id), guard="immutable")

    assert transfer_row(db, transfer_id) == before


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("table", ["ledger_transfers", "ledger_accounts"])
def test_truncate_is_refused_on_postgresql(table: str, fresh_engine: LedgerEngine) -> None:
    db = fresh_engine.db
    open_accounts(fresh_engine, 2, funded=1_000)
    with db.read() as conn:
        before = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one()
    assert before > 0

    refused(db, f"TRUNCATE {table}", guard="cannot be deleted" if table == "ledger_accounts" else "immutable")

    with db.read() as conn:
        assert conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one() == before


# -- accounts keep their identity -------------------------------------------------------------------------


def test_accounts_cannot_be_deleted(db: Database, engine: LedgerEngine) -> None:
    # An account without any transfer, so no foreign key could be what refuses it.
    account_id = unique("acct")
    [result] = engine.create_accounts([AccountSpec(account_id, CNY, "test.empty")])
    assert result.code is ResultCode.OK
    before = account_row(db, account_id)

    refused(db, "DELETE FROM ledger_accounts WHERE id = ?", (account_id,), guard="cannot be deleted")

    assert account_row(db, account_id) == before


@pytest.mark.parametrize(
    ("column", "value"),
    [("id", "renamed"), ("currency", "USD"), ("normal_balance", "debit")],
)
def test_account_identity_cannot_change(column: str, value: str, db: Database, engine: LedgerEngine) -> None:
    account_id = unique("acct")
    [result] = engine.create_accounts([AccountSpec(account_id, CNY, "test.empty")])
    assert result.code is ResultCode.OK
    before = account_row(db, account_id)
    new_value = unique(value) if column == "id" else value

    refused(
        db,
        f"UPDATE ledger_accounts SET {column} = ? WHERE id = ?",
        (new_value, account_id),
        guard="cannot change",
    )

    assert account_row(db, account_id) == before
    # Control: the same statement on a mutable column goes through.
    accepted(db, "UPDATE ledger_accounts SET code = ? WHERE id = ?", ("test.renamed", account_id))


# -- balance invariants (CHECK constraints) ---------------------------------------------------------------


def test_raw_update_cannot_overdraw_a_wallet(db: Database, wallets: tuple[str, str, str, str]) -> None:
    _, a, _, _ = wallets  # a: credits 1000, debits 100
    before = account_row(db, a)

    refused(
        db,
        "UPDATE ledger_accounts SET debits_posted = debits_posted + 901 WHERE id = ?",
        (a,),
        guard="ck_ledger_accounts_debits_within_credits",
    )
    refused(
        db,
        "UPDATE ledger_accounts SET debits_pending = 901 WHERE id = ?",
        (a,),
        guard="ck_ledger_accounts_debits_within_credits",
    )

    assert account_row(db, a) == before
    accepted(db, "UPDATE ledger_accounts SET debits_posted = debits_posted + 900 WHERE id = ?", (a,))


def test_raw_update_cannot_exceed_credits_of_a_credit_bounded_account(
    db: Database, engine: LedgerEngine
) -> None:
    asset = unique("asset")
    spec = AccountSpec(
        asset, CNY, "test.asset", normal_balance=NormalBalance.DEBIT, credits_must_not_exceed_debits=True
    )
    [result] = engine.create_accounts([spec])
    assert result.code is ResultCode.OK
    before = account_row(db, asset)

    refused(
        db,
        "UPDATE ledger_accounts SET credits_posted = 1 WHERE id = ?",
        (asset,),
        guard="ck_ledger_accounts_credits_within_debits",
    )

    assert account_row(db, asset) == before
    accepted(db, "UPDATE ledger_accounts SET credits_posted = 1, debits_posted = 1 WHERE id = ?", (asset,))


@pytest.mark.parametrize("normal", [NormalBalance.CREDIT, NormalBalance.DEBIT])
def test_raw_update_cannot_exceed_the_balance_ceiling(
    normal: NormalBalance, db: Database, engine: LedgerEngine
) -> None:
    account_id = unique("capped")
    [result] = engine.create_accounts(
        [AccountSpec(account_id, CNY, "test.capped", normal_balance=normal, balance_ceiling=500)]
    )
    assert result.code is ResultCode.OK
    before = account_row(db, account_id)
    side = "credits" if normal is NormalBalance.CREDIT else "debits"

    refused(
        db,
        f"UPDATE ledger_accounts SET {side}_posted = 501 WHERE id = ?",
        (account_id,),
        guard="ck_ledger_accounts_within_ceiling",
    )
    # Holds coming in count against the ceiling too.
    refused(
        db,
        f"UPDATE ledger_accounts SET {side}_posted = 300, {side}_pending = 201 WHERE id = ?",
        (account_id,),
        guard="ck_ledger_accounts_within_ceiling",
    )
    refused(
        db,
        "UPDATE ledger_accounts SET balance_ceiling = -1 WHERE id = ?",
        (account_id,),
        guard="ck_ledger_accounts_within_ceiling",
    )

    assert account_row(db, account_id) == before
    accepted(
        db,
        f"UPDATE ledger_accounts SET {side}_posted = 300, {side}_pending = 200 WHERE id = ?",
        (account_id,),
    )


@pytest.mark.parametrize("column", ["debits_posted", "credits_posted", "debits_pending", "credits_pending"])
def test_raw_update_cannot_make_a_total_negative(
    column: str, db: Database, wallets: tuple[str, str, str, str]
) -> None:
    funding = wallets[0]  # debit-normal, no overdraft flag: only the non-negative check stands in the way
    before = account_row(db, funding)

    refused(
        db,
        f"UPDATE ledger_accounts SET {column} = -1 WHERE id = ?",
        (funding,),
        guard="ck_ledger_accounts_balances_non_negative",
    )

    assert account_row(db, funding) == before


def test_an_account_cannot_carry_both_overdraft_flags(db: Database, engine: LedgerEngine) -> None:
    account_id = unique("acct")
    [result] = engine.create_accounts(
        [AccountSpec(account_id, CNY, "test.flags", debits_must_not_exceed_credits=True)]
    )
    assert result.code is ResultCode.OK
    before = account_row(db, account_id)

    refused(
        db,
        "UPDATE ledger_accounts SET credits_must_not_exceed_debits = ? WHERE id = ?",
        (True, account_id),
        guard="ck_ledger_accounts_one_flag",
    )

    assert account_row(db, account_id) == before


# -- transfer rows ----------------------------------------------------------------------------------------


def test_a_well_formed_raw_transfer_is_accepted(db: Database, wallets: tuple[str, str, str, str]) -> None:
    # The control for every refusal below: only the one field each of them breaks differs from this.
    _, a, b, _ = wallets
    accepted(db, *_insert(debit_account_id=a, credit_account_id=b))


@pytest.mark.parametrize(
    ("case", "guard"),
    [
        ("amount_zero", "ck_ledger_transfers_amount_positive"),
        ("amount_negative", "ck_ledger_transfers_amount_positive"),
        ("same_account", "ck_ledger_transfers_accounts_differ"),
        ("unknown_debit_account", MISSING_ACCOUNT),
        ("unknown_credit_account", MISSING_ACCOUNT),
        ("currency_of_neither_account", MISSING_ACCOUNT),
        ("unknown_kind", "ck_ledger_transfers_kind"),
        ("resolution_without_pending_id", "ck_ledger_transfers_pending_id_iff_resolution"),
        ("posted_with_pending_id", "ck_ledger_transfers_pending_id_iff_resolution"),
        ("timeout_on_posted", "ck_ledger_transfers_timeout_only_for_pending"),
    ],
)
def test_a_malformed_transfer_is_refused(
    case: str, guard: str, db: Database, engine: LedgerEngine, wallets: tuple[str, str, str, str]
) -> None:
    _, a, b, existing = wallets
    usd = unique("usd")
    [result] = engine.create_accounts([AccountSpec(usd, "USD", "test.usd")])
    assert result.code is ResultCode.OK
    fields: dict[str, Any] = {
        "amount_zero": {"amount": 0},
        "amount_negative": {"amount": -1},
        "same_account": {"credit_account_id": a},
        "unknown_debit_account": {"debit_account_id": unique("missing")},
        "unknown_credit_account": {"credit_account_id": unique("missing")},
        "currency_of_neither_account": {"currency": "USD"},
        "unknown_kind": {"kind": "gift"},
        "resolution_without_pending_id": {"kind": "post_pending"},
        "posted_with_pending_id": {"pending_id": existing},
        "timeout_on_posted": {"timeout_at": 1},
    }[case]
    sql, params = _insert(**{"debit_account_id": a, "credit_account_id": b, **fields})
    transfers_before = count_transfers(db)
    accounts_before = [account_row(db, i) for i in (a, b)]

    refused(db, sql, params, guard=guard)

    assert transfer_row(db, params[1]) is None
    assert count_transfers(db) == transfers_before
    assert [account_row(db, i) for i in (a, b)] == accounts_before


def test_a_transfer_to_an_account_in_another_currency_is_refused(
    db: Database, engine: LedgerEngine, wallets: tuple[str, str, str, str]
) -> None:
    _, a, _, _ = wallets
    usd = unique("usd")
    [result] = engine.create_accounts([AccountSpec(usd, "USD", "test.usd")])
    assert result.code is ResultCode.OK

    for currency in (CNY, "USD"):  # whichever currency the row claims, one side does not match
        sql, params = _insert(debit_account_id=a, credit_account_id=usd, currency=currency)
        refused(db, sql, params, guard=MISSING_ACCOUNT)
        assert transfer_row(db, params[1]) is None


def test_a_transfer_id_is_unique(db: Database, wallets: tuple[str, str, str, str]) -> None:
    _, a, b, existing = wallets
    before = transfer_row(db, existing)

    refused(db, *_insert(id=existing, debit_account_id=b, credit_account_id=a), guard="ledger_transfers")

    assert transfer_row(db, existing) == before


def test_a_hold_is_resolved_at_most_once(
    db: Database, engine: LedgerEngine, wallets: tuple[str, str, str, str]
) -> None:
    _, a, b, _ = wallets
    hold, post = unique("hold"), unique("post")
    results = engine.create_transfers(
        [TransferSpec.pending(hold, a, b, 300, CNY), TransferSpec.post(post, hold, 100)], group_ends=[0, 1]
    )
    assert [r.code for r in results] == [ResultCode.OK, ResultCode.OK]
    transfers_before = count_transfers(db)
    common = {"debit_account_id": a, "credit_account_id": b, "pending_id": hold}

    for kind in ("void_pending", "post_pending", "expire_pending"):
        sql, params = _insert(kind=kind, amount=300 if kind != "post_pending" else 100, **common)
        refused(db, sql, params, guard="pending_id")

    assert count_transfers(db) == transfers_before
    # Control: a second, unresolved hold can take a raw resolution row (the index is per hold).
    other = unique("hold")
    [result] = engine.create_transfers([TransferSpec.pending(other, a, b, 10, CNY)])
    assert result.code is ResultCode.OK
    accepted(db, *_insert(kind="void_pending", amount=10, **{**common, "pending_id": other}))

"""Opening wallets: a wallet row and its ledger account (same id), in the caller's transaction."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from qianbao.errors import Conflict
from qianbao.ids import new_id
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import AccountSpec, ResultCode
from qianbao.wallets.tables import wallets

WALLET_ACCOUNT_CODE = "wallet.user"


def open_wallet(
    conn: Connection,
    ledger: LedgerEngine,
    *,
    user_id: str,
    kind: str,
    name: str,
    purpose: str,
    currency: str,
    balance_cap: int | None,
    now_us: int,
) -> str:
    """A consumer wallet can never go negative; its KYC balance cap is the ledger account's ceiling."""
    wallet_id = new_id("wal")
    spec = AccountSpec(
        id=wallet_id,
        currency=currency,
        code=WALLET_ACCOUNT_CODE,
        owner_ref=user_id,
        debits_must_not_exceed_credits=True,
        balance_ceiling=balance_cap,
    )
    (result,) = ledger.create_accounts_in(conn, [spec])
    if result.code is not ResultCode.OK:
        raise Conflict(f"the wallet's ledger account could not be opened: {result.code}")
    conn.execute(
        insert(wallets).values(
            id=wallet_id,
            user_id=user_id,
            kind=kind,
            name=name,
            purpose=purpose,
            currency=currency,
            created_at=now_us,
        )
    )
    return wallet_id


def wallet_ids_of(conn: Connection, user_id: str) -> list[str]:
    return list(
        conn.execute(
            select(wallets.c.id).where(wallets.c.user_id == user_id).order_by(wallets.c.created_at)
        ).scalars()
    )

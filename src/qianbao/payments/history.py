"""A wallet's history: its ledger entries, newest first, as the API's transactions.

Read-only. The ledger is the source of truth for amounts and balances; transfer records add the memo and
the transfer id, and the counterparty is shown masked (a wallet's owner's name) or as "system".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.identity.users import get_user
from qianbao.ledger.model import TransferKind
from qianbao.ledger.queries import LedgerReader
from qianbao.payments.funding import FUNDING_CODE
from qianbao.payments.inputs import require_user_id
from qianbao.payments.records import records_by_ledger_ids
from qianbao.payments.transfers import MOVE_CODE, P2P_CODE
from qianbao.security.masking import mask_name_for_payee
from qianbao.wallets.service import own_wallet_row, wallet_rows

TRANSACTION_TYPES = {P2P_CODE: "p2p", MOVE_CODE: "wallet_move", FUNDING_CODE: "top_up"}


@dataclass(frozen=True, slots=True)
class Transaction:
    id: str
    type: str
    direction: str
    amount: int
    currency: str
    balance_after: int
    counterparty: dict[str, Any]
    memo: str | None
    status: str
    created_at: int
    transfer_id: str | None


def wallet_history(
    ctx: IdentityContext, principal: Principal, wallet_id: str, *, limit: int = 20, cursor: str | None = None
) -> tuple[list[Transaction], str | None]:
    """The wallet's ledger entries, newest first, with memo and a masked counterparty where known."""
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        own_wallet_row(conn, user_id, wallet_id)
    page = LedgerReader(ctx.db).account_history(wallet_id, limit, cursor)
    others = {
        e.transfer.credit_account_id if e.direction == "debit" else e.transfer.debit_account_id
        for e in page.entries
    }
    with ctx.db.read() as conn:
        other_wallets = wallet_rows(conn, others)
        records = records_by_ledger_ids(conn, ctx.keys, [e.transfer.id for e in page.entries])
        names = {
            uid: get_user(conn, ctx.keys, uid).name for uid in {w.user_id for w in other_wallets.values()}
        }
    result = []
    for entry in page.entries:
        t = entry.transfer
        other = t.credit_account_id if entry.direction == "debit" else t.debit_account_id
        counterparty: dict[str, Any]
        wallet = other_wallets.get(other)
        if wallet is not None:
            counterparty = {
                "kind": "wallet",
                "wallet_id": wallet.id,
                "name_masked": mask_name_for_payee(names[wallet.user_id]),
                "own": wallet.user_id == user_id,
            }
        else:
            counterparty = {"kind": "system", "wallet_id": None, "name_masked": None}
        record = records.get(t.id)
        result.append(
            Transaction(
                id=t.id,
                type=TRANSACTION_TYPES.get(t.code, t.code),
                direction=entry.direction,
                amount=t.amount,
                currency=t.currency,
                balance_after=entry.balance_after,
                counterparty=counterparty,
                memo=None if record is None else record.memo,
                status="pending" if t.kind is TransferKind.PENDING else "succeeded",
                created_at=t.created_at,
                transfer_id=None if record is None else record.id,
            )
        )
    return result, page.next_cursor

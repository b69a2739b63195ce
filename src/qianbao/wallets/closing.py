"""Closing a sub-wallet (`POST /v1/wallets/{id}/close`): its whole balance goes back to the main wallet.

ONE unit of work: lock both ledger accounts (id order, like every ledger batch), check the wallet may be
closed, move the balance with a ledger transfer, close the now empty ledger account and mark the wallet
closed. Either all of it happens or none. The transfer id is derived from the wallet (`wallet.close:<id>`),
so closing twice cannot move money twice, and a repeated close answers what the first one did.

Refused: the main wallet and a wallet with holds pending (`wallet_close_refused`, 409), a locked wallet
(`wallet_locked`, 423), a frozen wallet or a frozen main wallet (`wallet_frozen`, 423). A closed wallet
still answers GET and shows its history; the ledger refuses any further movement on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update

from qianbao import invalid
from qianbao.errors import Locked
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, RequestInfo
from qianbao.ledger.model import AccountStatus, ResultCode, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.payments.engine.declines import error_for
from qianbao.security import audit
from qianbao.store.errors import retried
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets import spend_rules, spending
from qianbao.wallets.errors import WalletCloseRefused, money
from qianbao.wallets.service import WalletRow, WalletView, get_wallet, main_wallet_id, own_wallet_row
from qianbao.wallets.tables import wallets

MOVE_CODE = "wallet.move"  # the same ledger code as a move between own wallets (payments.transfers)


@dataclass(frozen=True, slots=True)
class ClosedWallet:
    wallet: WalletView
    main_wallet_id: str
    moved: int
    transaction_id: str | None  # the ledger transfer that emptied it; None if it was empty


def close_transfer_id(wallet_id: str) -> str:
    return f"wallet.close:{wallet_id}"


def close_wallet(
    ctx: IdentityContext, principal: Principal, wallet_id: str, info: RequestInfo
) -> ClosedWallet:
    if principal.user_id is None:
        raise invalid.needs_user()
    user_id = principal.user_id
    with ctx.db.read() as conn:
        row = own_wallet_row(conn, user_id, wallet_id)
        main_id = main_wallet_id(conn, user_id, row.currency)
    if row.kind == "main" or main_id is None:
        raise WalletCloseRefused("the main wallet cannot be closed", reason="main_wallet")
    if row.closed_at is None:
        retried(lambda: _close(ctx, principal, row, main_id, info))
    return _result(ctx, user_id, row.id, main_id)


def _close(
    ctx: IdentityContext, principal: Principal, row: WalletRow, main_id: str, info: RequestInfo
) -> None:
    user_id = row.user_id
    transfer_id = close_transfer_id(row.id)
    with ctx.uow() as uow:
        conn = uow.conn
        now = ctx.now()
        accounts = ctx.ledger.lock_accounts_in(conn, [row.id, main_id])
        account, main = accounts[row.id], accounts[main_id]
        if account.status is AccountStatus.CLOSED:
            return  # a concurrent close won; its answer is ours
        state = spending.source_state(conn, row.id, now)
        locked = None if state is None else spend_rules.wallet_lock(state.settings, now)
        if locked is not None:  # no money leaves a locked wallet, closing included
            raise error_for(locked, row.currency)
        if account.debits_pending or account.credits_pending:
            raise WalletCloseRefused(
                "money is on hold in this wallet: close it when the holds are settled",
                reason="pending_holds",
                next_step="retry_later",
            )
        if account.status is not AccountStatus.OPEN or main.status in (
            AccountStatus.FROZEN,
            AccountStatus.CLOSED,
        ):
            raise Locked("wallet_frozen", "a wallet of this operation is frozen", next_step="contact_support")
        events: list[OutboxEvent] = []
        moved = account.balance
        if moved > 0:
            spec = TransferSpec.posted(transfer_id, row.id, main_id, moved, row.currency, code=MOVE_CODE)
            (result,) = ctx.ledger.apply_in(conn, [spec])
            if result.code is not ResultCode.OK:
                raise WalletCloseRefused(
                    f"the balance could not be moved to the main wallet ({result.code})", reason=result.code
                )
            events += spending.after_credit(conn, main_id, now)
        ctx.ledger.set_account_status_in(conn, row.id, AccountStatus.CLOSED)  # refuses unless empty
        conn.execute(update(wallets).where(wallets.c.id == row.id).values(closed_at=now))
        actor = audit.Actor(
            "user", user_id, ip=info.ip, device_id=principal.device_id, session_id=principal.session_id
        )
        details = {"wallet_id": row.id, "moved": moved, "to_wallet_id": main_id}
        audit.record(conn, now, "wallet.closed", actor, subject_user_id=user_id, details=details)
        payload = {
            "user_id": user_id,
            "wallet_id": row.id,
            "to_wallet_id": main_id,
            "moved": money(moved, row.currency),
        }
        uow.emit(OutboxEvent("wallet.closed", "wallet", row.id, payload))
        for event in events:
            uow.emit(event)
        uow.commit()


def _result(ctx: IdentityContext, user_id: str, wallet_id: str, main_id: str) -> ClosedWallet:
    moved = LedgerReader(ctx.db).get_transfer(close_transfer_id(wallet_id))
    return ClosedWallet(
        wallet=get_wallet(ctx, user_id, wallet_id),
        main_wallet_id=main_id,
        moved=0 if moved is None else moved.transfer.amount,
        transaction_id=None if moved is None else moved.transfer.id,
    )

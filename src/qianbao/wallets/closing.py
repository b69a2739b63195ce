"""Closing a sub-wallet (`POST /v1/wallets/{id}/close`): its whole balance goes back to the main wallet.

An order in the payment pipeline, so in ONE transaction with its batch: both ledger accounts locked (id
order, like every ledger batch), `decide` (kind CLOSE) asks whether the wallet may be closed and takes
its balance under the lock, the balance moves with a ledger transfer, the now empty ledger account is
closed and the wallet marked closed. Either all of it happens or none. The transfer id is derived from
the wallet (`wallet.close:<id>`), so closing twice cannot move money twice, and a repeated close answers
what the first one did.

Refused: the main wallet and a wallet with holds pending (`wallet_close_refused`, 409), a locked wallet
(`wallet_locked`, 423), a frozen wallet or a frozen main wallet (`wallet_frozen`, 423). A closed wallet
still answers GET and shows its history; the ledger refuses any further movement on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, update

from qianbao import invalid
from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, RequestInfo
from qianbao.ledger.model import AccountStatus, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.facts import Books, Kind, PaymentRequest, TargetWallet
from qianbao.payments.engine.orders import Done, FlowDefaults, HttpKey, OneByOne, Order, Replay, Staged
from qianbao.payments.engine.service import submit_order
from qianbao.security import audit
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.errors import WalletCloseRefused, money
from qianbao.wallets.service import (
    WalletView,
    get_wallet_in,
    main_wallet_id,
    main_wallet_ids,
    no_such_wallet,
    wallet_rows,
)
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


def close_order(
    principal: Principal, wallet_id: str, info: RequestInfo, *, http: HttpKey | None = None
) -> Order:
    """The pipeline's order for a closing: nothing read. Its ledger id is derived from the wallet, so a
    closing already done (by this request's first attempt, or anyone's) is answered as it was."""
    order = Order(CLOSINGS, principal, CloseAsk(wallet_id, info), close_transfer_id(wallet_id), http=http)
    if principal.user_id is None:
        refusal = invalid.needs_user()
        if http is None:
            raise refusal
        return replace(order, payload=None, refusal=refusal)
    return order


def close_wallet(
    ctx: IdentityContext, principal: Principal, wallet_id: str, info: RequestInfo
) -> ClosedWallet:
    """Close one of the caller's sub-wallets through the payment pipeline; what it did (or, closed
    already, what the first closing did)."""
    outcome = submit_order(ctx, close_order(principal, wallet_id, info))
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    with ctx.db.read() as conn:
        return closed_wallet(ctx, conn, outcome.record)


def closed_wallet(ctx: IdentityContext, conn: Connection, closing: Closing) -> ClosedWallet:
    """A closing's answer, read in `conn` (the batch's own, or after it): the wallet, and the transfer
    that emptied it (none for a wallet that was empty)."""
    moved = LedgerReader(ctx.db).transfers_in(conn, [close_transfer_id(closing.wallet_id)])
    transfer = moved.get(close_transfer_id(closing.wallet_id))
    return ClosedWallet(
        wallet=get_wallet_in(ctx, conn, closing.user_id, closing.wallet_id),
        main_wallet_id=closing.main_wallet_id,
        moved=0 if transfer is None else transfer.amount,
        transaction_id=None if transfer is None else transfer.id,
    )


@dataclass(frozen=True, slots=True)
class CloseAsk:
    wallet_id: str
    info: RequestInfo


@dataclass(frozen=True, slots=True)
class Closing:
    """A wallet closed (or found closed): the balance that moved to the main wallet."""

    wallet_id: str
    user_id: str
    main_wallet_id: str
    currency: str
    moved: int
    failed: bool = False  # the ledger refused the move: nothing is closed


class CloseFlow(FlowDefaults):
    """A sub-wallet's closing in the payment pipeline: decided by `decide` (kind CLOSE: not locked, no
    holds, both wallets open; the amount is the balance read under the lock), the balance moved to the
    main wallet, then the emptied ledger account closed, the wallet marked closed and audited."""

    what = "wallet closing"
    ids_name_their_subject = True  # wallet.close:<wallet id>

    def stage(
        self,
        ctx: IdentityContext,  # noqa: ARG002 - the flow's signature
        conn: Connection,
        orders: Sequence[Order],
        now: int,  # noqa: ARG002
    ) -> list[Staged | Replay | QianbaoError]:
        asks: list[CloseAsk] = [o.payload for o in orders]
        if len({a.wallet_id for a in asks}) < len(asks):  # the second is answered after the first
            raise OneByOne("two closings of one wallet in a batch")
        rows = wallet_rows(conn, [a.wallet_id for a in asks])
        mains: dict[tuple[str, str], str] = {}
        for code in sorted({r.currency for r in rows.values()}):
            users = [r.user_id for r in rows.values() if r.currency == code]
            mains |= {(user, code): wallet for user, wallet in main_wallet_ids(conn, users, code).items()}
        staged: list[Staged | Replay | QianbaoError] = []
        for order, ask in zip(orders, asks, strict=True):
            row = rows.get(ask.wallet_id)
            if row is None or row.user_id != order.principal.user_id:
                staged.append(no_such_wallet())
                continue
            main = mains.get((row.user_id, row.currency))
            if row.kind == "main" or main is None:
                staged.append(WalletCloseRefused("the main wallet cannot be closed", reason="main_wallet"))
                continue
            if row.closed_at is not None:
                staged.append(Replay(Closing(row.id, row.user_id, main, row.currency, 0)))
                continue
            request = PaymentRequest(
                kind=Kind.CLOSE,
                payer_user_id=row.user_id,
                source_wallet_id=row.id,
                target_wallet_id=main,
                amount=0,  # the balance, read under the lock: `decide` moves all of it
                currency=row.currency,
            )
            staged.append(Staged(order, request, TargetWallet(main, row.user_id, row.currency)))
        return staged

    def existing(
        self,
        ctx: IdentityContext,  # noqa: ARG002 - the flow's signature
        conn: Connection,
        ledger_ids: Sequence[str],
    ) -> dict[str, Any]:
        """A wallet closed meanwhile (the ledger holds its closing transfer): answered as closed."""
        ids = {ledger_id.removeprefix("wallet.close:"): ledger_id for ledger_id in ledger_ids}
        rows = wallet_rows(conn, list(ids))
        found: dict[str, Any] = {}
        for wallet_id, row in rows.items():
            if row.closed_at is not None:
                main = main_wallet_id(conn, row.user_id, row.currency) or ""
                found[ids[wallet_id]] = Closing(row.id, row.user_id, main, row.currency, 0)
        return found

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]:
        request = staged.request
        if decision.moved == 0:  # an empty wallet: nothing moves, it is only closed
            return []
        assert request.target_wallet_id is not None  # noqa: S101 - staged with the main wallet
        return [
            TransferSpec.posted(
                staged.order.ledger_id,
                request.source_wallet_id,
                request.target_wallet_id,
                decision.moved,
                request.currency,
                code=MOVE_CODE,
            )
        ]

    def record(
        self,
        staged: Staged,
        decision: Approve,
        now: int,  # noqa: ARG002 - the flow's signature
        failure: QianbaoError | None,
    ) -> Closing:
        request = staged.request
        assert request.target_wallet_id is not None  # noqa: S101 - staged with the main wallet
        return Closing(
            request.source_wallet_id,
            request.payer_user_id,
            request.target_wallet_id,
            request.currency,
            decision.moved,
            failed=failure is not None,
        )

    def declined(
        self,
        staged: Staged,  # noqa: ARG002 - the flow's signature
        error: QianbaoError,
        record: Any,  # noqa: ARG002
        books: Books,  # noqa: ARG002
    ) -> QianbaoError:
        """The ledger refused the move the decision approved (the main wallet's own ceiling)."""
        return WalletCloseRefused(
            f"the balance could not be moved to the main wallet ({error.code})", reason=error.code
        )

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]:
        events: list[OutboxEvent] = []
        now = ctx.now()
        closed = [(staged, closing) for staged, closing in written if not closing.failed]
        for _staged, closing in closed:
            ctx.ledger.set_account_status_in(
                conn, closing.wallet_id, AccountStatus.CLOSED
            )  # refuses unless empty
        if closed:
            ids = [closing.wallet_id for _staged, closing in closed]
            conn.execute(update(wallets).where(wallets.c.id.in_(ids)).values(closed_at=now))
        for staged, closing in closed:
            principal, info = staged.order.principal, staged.order.payload.info
            actor = audit.Actor(
                "user",
                closing.user_id,
                ip=info.ip,
                device_id=principal.device_id,
                session_id=principal.session_id,
            )
            details = {
                "wallet_id": closing.wallet_id,
                "moved": closing.moved,
                "to_wallet_id": closing.main_wallet_id,
            }
            audit.record(conn, now, "wallet.closed", actor, subject_user_id=closing.user_id, details=details)
            payload = {
                "user_id": closing.user_id,
                "wallet_id": closing.wallet_id,
                "to_wallet_id": closing.main_wallet_id,
                "moved": money(closing.moved, closing.currency),
            }
            events.append(OutboxEvent("wallet.closed", "wallet", closing.wallet_id, payload))
        return events


CLOSINGS = CloseFlow()

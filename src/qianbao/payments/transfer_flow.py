"""P2P transfers as the payment pipeline stages and writes them (engine/pipeline.py, `Flow`).

Staging a batch of transfers reads, one statement per table for all of them: the paying wallets, the
wallets named by id, the users and main wallets named by phone number (and, once the batch holds its
locks, the records already bound to their ledger ids: replays). A receive code is checked one by one
(its signature and the owner's current name). Writing inserts every record of the batch, paid and
declined, in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.tables import users
from qianbao.identity.users import PHONE
from qianbao.ids import new_id
from qianbao.ledger.model import TransferSpec
from qianbao.ledger.rules import room_under_ceiling
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.declines import stored_decline
from qianbao.payments.engine.facts import Books, Kind, PaymentRequest, TargetWallet
from qianbao.payments.engine.orders import FlowDefaults, Order, Replay, Staged
from qianbao.payments.errors import RecipientNotFound, money_json
from qianbao.payments.receive_qr import qr_recipient
from qianbao.payments.records import TransferRecord, record_row, records_by_ledger_ids, transfer_event
from qianbao.payments.tables import transfers
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.service import WalletRow, no_such_wallet, wallet_rows
from qianbao.wallets.tables import wallets

P2P_CODE = "p2p"
MOVE_CODE = "wallet.move"


@dataclass(frozen=True, slots=True)
class TransferInput:
    """A transfer as asked: the paying wallet, exactly one way of naming the recipient, the money."""

    from_wallet_id: str
    amount: int
    currency: str
    memo: str | None
    to_wallet_id: str | None = None
    to_phone: str | None = None  # normalised E.164
    to_qr: str | None = None


@dataclass(frozen=True, slots=True)
class _Recipient:
    row: WalletRow | None
    refusal: QianbaoError | None = None


def _by_phone(
    ctx: IdentityContext, conn: Connection, phones: set[tuple[str, str]]
) -> dict[tuple[str, str], WalletRow]:
    """The main wallet (in the currency) of each phone number's user: two statements for all of them.
    A closed user, or one without such a wallet, is not found."""
    if not phones:
        return {}
    digests = {ctx.keys.digest(PHONE, phone): phone for phone, _ in phones}
    found = conn.execute(
        select(users.c.id, users.c.phone_index).where(
            users.c.phone_index.in_(sorted(digests)), users.c.status != "closed"
        )
    )
    user_of = {digests[str(r.phone_index)]: str(r.id) for r in found}
    if not user_of:
        return {}
    mains = conn.execute(
        select(wallets.c.id, wallets.c.user_id, wallets.c.currency).where(
            wallets.c.user_id.in_(sorted(set(user_of.values()))), wallets.c.kind == "main"
        )
    )
    main_of = {(str(r.user_id), str(r.currency)): str(r.id) for r in mains}
    ids = {
        (phone, code): main_of[(user_of[phone], code)]
        for phone, code in phones
        if phone in user_of and (user_of[phone], code) in main_of
    }
    rows = wallet_rows(conn, ids.values())
    return {named: rows[wallet_id] for named, wallet_id in ids.items() if wallet_id in rows}


class TransferFlow(FlowDefaults):
    what = "transfer"
    reference = "transfer_id"

    def stage(
        self,
        ctx: IdentityContext,
        conn: Connection,
        orders: Sequence[Order],
        now: int,  # noqa: ARG002 - the flow's signature: other flows check expiries
        *,
        asks: Sequence[TransferInput] | None = None,
    ) -> list[Staged | Replay | QianbaoError]:
        """`asks`: the transfers, when they are not the orders' own payloads (a money request's)."""
        if asks is None:
            asks = [o.payload for o in orders]
        rows = wallet_rows(
            conn, [a.from_wallet_id for a in asks] + [a.to_wallet_id for a in asks if a.to_wallet_id]
        )
        sources = {a.from_wallet_id: rows.get(a.from_wallet_id) for a in asks}
        phones = {
            (a.to_phone, source.currency)
            for a in asks
            if a.to_phone is not None and (source := sources[a.from_wallet_id]) is not None
        }
        by_phone = _by_phone(ctx, conn, phones)
        staged: list[Staged | Replay | QianbaoError] = []
        for order, ask in zip(orders, asks, strict=True):
            payer = str(order.principal.user_id)
            if ask.to_phone is not None:
                try:  # a look-up by phone number, only for what is not a replay (rate-limited)
                    ctx.limiter.hit("recipient_lookup", payer)
                except QianbaoError as refusal:
                    staged.append(refusal)
                    continue
            source = sources[ask.from_wallet_id]
            if source is None or source.user_id != payer:  # someone else's wallet is "not found" too
                staged.append(no_such_wallet())
                continue
            named = self._recipient(ctx, conn, ask, source, rows, by_phone)
            if isinstance(named, QianbaoError):
                staged.append(named)
                continue
            target = (
                None
                if named.row is None
                else TargetWallet(named.row.id, named.row.user_id, named.row.currency)
            )
            by = "phone" if ask.to_phone is not None else "wallet_id" if ask.to_qr is None else "receive_code"
            request = PaymentRequest(
                kind=Kind.P2P,
                payer_user_id=source.user_id,
                source_wallet_id=source.id,
                target_wallet_id=None if target is None else target.wallet_id,
                amount=ask.amount,
                currency=ask.currency,
                named_wallet_id=ask.to_wallet_id,
                recipient_by=by,
                device_trusted=order.principal.device_trusted,
            )
            staged.append(Staged(order, request, target, refusal=named.refusal, extra={"memo": ask.memo}))
        return staged

    @staticmethod
    def _recipient(
        ctx: IdentityContext,
        conn: Connection,
        ask: TransferInput,
        source: WalletRow,
        rows: dict[str, WalletRow],
        by_phone: dict[tuple[str, str], WalletRow],
    ) -> _Recipient | QianbaoError:
        if ask.to_phone is not None:
            return _Recipient(by_phone.get((ask.to_phone, source.currency)))
        if ask.to_wallet_id is not None:
            return _Recipient(rows.get(ask.to_wallet_id))
        try:
            return _Recipient(
                qr_recipient(ctx, conn, ask.to_qr, amount=ask.amount, currency_code=ask.currency)
            )
        except RecipientNotFound:
            return _Recipient(None)
        except QianbaoError as refusal:  # the code's own refusal: answered where the recipient is asked
            return _Recipient(None, refusal)

    def existing(self, ctx: IdentityContext, conn: Connection, ledger_ids: Sequence[str]) -> dict[str, Any]:
        return dict(records_by_ledger_ids(conn, ctx.keys, list(ledger_ids)))

    def seen(self, staged: Staged) -> None:  # noqa: ARG002 - the flow's signature
        return None

    def step_up_params(self, staged: Staged) -> dict[str, Any]:
        request = staged.request
        return {
            "from": request.source_wallet_id,
            "to": request.target_wallet_id,
            "amount": request.amount,
            "currency": request.currency,
        }

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]:  # noqa: ARG002
        request, target = staged.request, staged.target
        assert target is not None  # noqa: S101 - only approved transfers are written to the ledger
        own = target.user_id == request.payer_user_id
        spec = TransferSpec.posted(
            staged.order.ledger_id,
            request.source_wallet_id,
            target.wallet_id,
            request.amount,
            request.currency,
            code=MOVE_CODE if own else P2P_CODE,
        )
        return [spec]

    def record(
        self,
        staged: Staged,
        decision: Approve,  # noqa: ARG002 - the flow's signature
        now: int,
        failure: QianbaoError | None,
    ) -> TransferRecord:
        request, target = staged.request, staged.target
        assert target is not None  # noqa: S101 - a recipient that is not found is refused, not recorded
        return TransferRecord(
            id=new_id("trf"),
            ledger_transfer_id=staged.order.ledger_id,
            from_wallet_id=request.source_wallet_id,
            to_wallet_id=target.wallet_id,
            from_user_id=request.payer_user_id,
            to_user_id=target.user_id,
            amount=request.amount,
            currency=request.currency,
            memo=staged.extra["memo"],
            status="succeeded" if failure is None else "failed",
            failure_code=None if failure is None else failure.code,
            created_at=now,
        )

    def declined(self, staged: Staged, error: QianbaoError, record: Any, books: Books) -> QianbaoError:
        error = super().declined(staged, error, record, books)
        target = staged.target
        own = target is not None and target.user_id == staged.request.payer_user_id
        if (
            own
            and target is not None
            and error.code == "balance_cap_exceeded"
            and "remaining" not in error.extra
        ):
            account = books.accounts.get(target.wallet_id)  # a move between one's own wallets: how much fits
            room = None if account is None else room_under_ceiling(account)
            if room is not None and account is not None:
                error.extra["remaining"] = money_json(room, account.currency)
        return error

    def replay(self, record: Any, order: Order) -> TransferRecord:  # noqa: ARG002
        return replay_transfer(record)

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]:
        rows = [
            record_row(ctx.keys, record, staged.order.principal.scope, staged.order.key)
            for staged, record in written
        ]
        conn.execute(insert(transfers), rows)
        return [transfer_event(record) for _staged, record in written]


def replay_transfer(record: TransferRecord) -> TransferRecord:
    """An earlier outcome bound to the same key: the transfer, or its decline raised again."""
    if record.status != "failed":
        return record
    own = record.to_user_id == record.from_user_id
    raise stored_decline(record.failure_code, record.currency, reveal=own, transfer_id=record.id)


TRANSFERS = TransferFlow()

"""Accepting a money request, in the payment pipeline: a P2P transfer whose recipient, amount and memo
come from the request, which is marked paid in the same batch.

Staging reads the requests (one statement), checks the caller is the payer and the request still
pending, picks the paying wallet (by default the payer's main wallet of its currency, one statement for
the batch), and stages the transfer as `transfer_flow` does, with every P2P rule, limit and step-up.
Writing inserts the transfers, then marks each request paid with a conditional UPDATE on `status =
'pending'` (a request canceled or paid meanwhile refuses the batch, whose orders are then tried alone:
that one is answered `request_not_pending` and pays nothing). A transfer the ledger declines leaves the
request pending, so the payer can top up and accept again.

A record here is an `Accepted`: the transfer and the request as it stands after it, so that a replay
(the same Idempotency-Key, answered from the transfer's record) is checked against the request it paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, select, update

from qianbao.errors import Forbidden, IdempotencyKeyReused, NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ledger.model import TransferSpec
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.facts import Books
from qianbao.payments.engine.orders import Done, FlowDefaults, HttpKey, OneByOne, Order, Replay, Staged
from qianbao.payments.engine.service import submit_order
from qianbao.payments.inputs import ledger_id_for, require_user_id
from qianbao.payments.records import TransferRecord, records_by_ledger_ids
from qianbao.payments.request_tables import money_requests
from qianbao.payments.requests import (
    MoneyRequest,
    RequestView,
    get_request,
    is_request_id,
    not_pending,
    request_event,
    request_from_row,
)
from qianbao.payments.transfer_flow import P2P_CODE, TRANSFERS, TransferInput, replay_transfer
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.service import main_wallet_ids


@dataclass(frozen=True, slots=True)
class AcceptAsk:
    request_id: str
    from_wallet_id: str | None  # None: the payer's main wallet of the request's currency


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request's payment: the transfer, and the request it paid (None: the transfer paid none)."""

    transfer: TransferRecord
    request: MoneyRequest | None


def _requests(conn: Connection, ctx: IdentityContext, ids: Sequence[str]) -> dict[str, MoneyRequest]:
    wanted = sorted({i for i in ids if is_request_id(i)})
    if not wanted:
        return {}
    rows = conn.execute(select(money_requests).where(money_requests.c.id.in_(wanted)))
    return {str(r.id): request_from_row(r, ctx.keys) for r in rows}


def _paying(found: MoneyRequest, user_id: str, now: int) -> QianbaoError | None:
    """Whether the caller may pay this request now (checked in the order the API has always answered)."""
    if user_id not in (found.requester_user_id, found.payer_user_id):
        return NotFound("no such money request")
    if user_id != found.payer_user_id:
        return Forbidden("only the payer can do this with a money request")
    status = found.status(now)
    return None if status == "pending" else not_pending(status)


class AcceptFlow(FlowDefaults):
    """Money-request acceptances: P2P transfers staged from their requests."""

    what = "transfer"
    reference = "transfer_id"

    def stage(
        self, ctx: IdentityContext, conn: Connection, orders: Sequence[Order], now: int
    ) -> list[Staged | Replay | QianbaoError]:
        asks: list[AcceptAsk] = [o.payload for o in orders]
        if len({a.request_id for a in asks}) < len(asks):  # the second is answered after the first
            raise OneByOne("two accepts of one money request in a batch")
        found = _requests(conn, ctx, [a.request_id for a in asks])
        mains: dict[tuple[str, str], str] = {}
        for code in sorted({r.currency for r in found.values()}):
            payers = [r.payer_user_id for r in found.values() if r.currency == code]
            mains |= {(user, code): wallet for user, wallet in main_wallet_ids(conn, payers, code).items()}
        answers: dict[int, Staged | Replay | QianbaoError] = {}
        paying: list[tuple[int, Order, TransferInput, MoneyRequest]] = []
        for i, (order, ask) in enumerate(zip(orders, asks, strict=True)):
            request = found.get(ask.request_id)
            refusal = (
                NotFound("no such money request")
                if request is None
                else _paying(request, str(order.principal.user_id), now)
            )
            if refusal is not None or request is None:
                answers[i] = refusal or NotFound("no such money request")
                continue
            from_wallet = ask.from_wallet_id or mains.get((request.payer_user_id, request.currency))
            if from_wallet is None:
                answers[i] = NotFound(f"you have no {request.currency} wallet to pay from")
                continue
            transfer = TransferInput(
                from_wallet_id=from_wallet,
                amount=request.amount,
                currency=request.currency,
                memo=request.memo,
                to_wallet_id=request.to_wallet_id,
            )
            paying.append((i, order, transfer, request))
        staged = TRANSFERS.stage(
            ctx, conn, [o for _, o, _, _ in paying], now, asks=[t for _, _, t, _ in paying]
        )
        for (i, _order, _transfer, request), item in zip(paying, staged, strict=True):
            answers[i] = (
                replace(item, extra={**item.extra, "money_request": request})
                if isinstance(item, Staged)
                else item
            )
        return [answers[i] for i in range(len(orders))]

    def existing(self, ctx: IdentityContext, conn: Connection, ledger_ids: Sequence[str]) -> dict[str, Any]:
        records = records_by_ledger_ids(conn, ctx.keys, list(ledger_ids))
        ids = [r.id for r in records.values()]
        paid: dict[str, MoneyRequest] = {}
        if ids:
            rows = conn.execute(select(money_requests).where(money_requests.c.transfer_id.in_(ids)))
            paid = {str(r.transfer_id): request_from_row(r, ctx.keys) for r in rows}
        return {ledger_id: Accepted(r, paid.get(r.id)) for ledger_id, r in records.items()}

    def step_up_params(self, staged: Staged) -> dict[str, Any]:
        return TRANSFERS.step_up_params(staged)  # bound like any transfer: from, to, amount, currency

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]:
        return TRANSFERS.chain(staged, decision)

    def record(self, staged: Staged, decision: Approve, now: int, failure: QianbaoError | None) -> Accepted:
        transfer = TRANSFERS.record(staged, decision, now, failure)
        request: MoneyRequest = staged.extra["money_request"]
        if failure is None:
            request = replace(
                request,
                stored_status="paid",
                transfer_id=transfer.id,
                from_wallet_id=transfer.from_wallet_id,
                resolved_at=now,
            )
        return Accepted(transfer, request)

    def declined(self, staged: Staged, error: QianbaoError, record: Any, books: Books) -> QianbaoError:
        return TRANSFERS.declined(staged, error, record.transfer, books)

    def replay(self, record: Any, order: Order) -> Accepted:
        """The transfer an earlier attempt with this key made: it must have paid this request (a declined
        one paid none: its decline is answered again)."""
        if record.transfer.status == "failed":
            replay_transfer(record.transfer)  # raises the stored decline
        if record.request is None or record.request.id != order.payload.request_id:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different transfer")
        return Accepted(replay_transfer(record.transfer), record.request)

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]:
        events = TRANSFERS.write(ctx, conn, [(staged, accepted.transfer) for staged, accepted in written])
        t = money_requests.c
        for _staged, accepted in written:
            transfer, request = accepted.transfer, accepted.request
            if transfer.status != "succeeded" or request is None:
                continue  # a declined transfer leaves the request pending
            changed = conn.execute(
                update(money_requests)
                .where(t.id == request.id, t.status == "pending", t.expires_at > transfer.created_at)
                .values(
                    status="paid",
                    transfer_id=transfer.id,
                    from_wallet_id=transfer.from_wallet_id,
                    resolved_at=transfer.created_at,
                )
            )
            if changed.rowcount != 1:  # canceled, paid or expired since it was read: refuse this one
                row = conn.execute(select(money_requests).where(t.id == request.id)).first()
                status = (
                    "unknown" if row is None else request_from_row(row, ctx.keys).status(transfer.created_at)
                )
                raise not_pending(status)
            events.append(
                request_event(
                    "paid", request, transfer_id=transfer.id, from_wallet_id=transfer.from_wallet_id
                )
            )
        return events


ACCEPTS = AcceptFlow()


def accept_order(
    principal: Principal,
    request_id: str,
    *,
    from_wallet_id: str | None = None,
    idempotency_key: str | None = None,
    step_up: str | None = None,
    http: HttpKey | None = None,
) -> Order:
    """The pipeline's order for paying a request (`request_flow`): nothing read. With an
    Idempotency-Key the transfer's ledger id is derived from (caller scope, key), as for any transfer."""
    ledger_id = ledger_id_for(P2P_CODE, principal.scope, idempotency_key, "trf")
    ask = AcceptAsk(request_id, from_wallet_id)
    order = Order(ACCEPTS, principal, ask, ledger_id, idempotency_key, step_up, http)
    try:
        require_user_id(principal)
    except QianbaoError as refusal:
        if http is None:
            raise
        return replace(order, payload=None, refusal=refusal)
    return order


def accept_request(
    ctx: IdentityContext,
    principal: Principal,
    request_id: str,
    *,
    from_wallet_id: str | None = None,
    idempotency_key: str | None = None,
    step_up: str | None = None,
) -> tuple[RequestView, TransferRecord]:
    """Pay the request from one of the payer's wallets (by default the main wallet of its currency), as
    a P2P transfer in the payment pipeline: limits and step-up apply."""
    order = accept_order(
        principal, request_id, from_wallet_id=from_wallet_id, idempotency_key=idempotency_key, step_up=step_up
    )
    outcome = submit_order(ctx, order)
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    return get_request(ctx, principal, request_id), outcome.record.transfer


__all__ = ["ACCEPTS", "AcceptAsk", "AcceptFlow", "Accepted", "accept_order", "accept_request"]

"""P2P transfers (to a wallet id or a phone number): the transfer use case and recipient look-up.

The money path (API.md, GUIDE §2), for `send_transfer` and `POST /v1/transfers`: the input is checked
and becomes an order of the payment pipeline (`transfer_order`; `transfer_flow` stages it); in its
batch's one transaction the Idempotency-Key is claimed, the payer's wallet and the recipient (a wallet
id, a phone number's main wallet, a receive code's wallet) are read, the state is locked and `decide`
asks every rule in its one order (payments/engine/decide.py). A payment that cannot happen is refused
with its code and no challenge; the payer's own checks come first, and a cap refusal of someone else's
wallet carries no limit, room or tier, so that declines cannot be used to probe the recipient's
balance. One that needs fresh proof spends the Step-Up challenge in the batch, or is answered `401
step_up_required`. Then the ledger transfer, today's outflow, the month's budget, the transfer record,
its outbox event and the stored answer, and COMMIT (engine/pipeline.py).
Moving money between one's own wallets needs no step-up and does not count toward outflow limits.

With an Idempotency-Key the ledger transfer id is derived from (caller scope, key): even a crash between
the ledger commit and the stored HTTP answer cannot pay twice — a re-run finds the record or the ledger
answers `exists`. Ledger transfers carry no metadata: ids and the transfer code only, no personal data.

Around it in this package: `engine` (the decision core), `inputs` (amount, memo, derived ids), `errors`
(payment errors), `records` (the transfers table and its outbox event), `funding` (sandbox funding)
and `history` (a wallet's transactions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from qianbao import invalid
from qianbao.errors import NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.identity.phones import normalise_phone
from qianbao.identity.users import find_user_id_by_phone, get_user
from qianbao.payments.engine.orders import Done, HttpKey, Order
from qianbao.payments.engine.service import submit_order
from qianbao.payments.errors import recipient_not_found
from qianbao.payments.inputs import check_amount, clean_memo, ledger_id_for, require_user_id
from qianbao.payments.records import TransferRecord, record_from_row
from qianbao.payments.tables import transfers
from qianbao.payments.transfer_flow import MOVE_CODE, P2P_CODE, TRANSFERS, TransferInput
from qianbao.security.masking import mask_name_for_payee, mask_phone
from qianbao.wallets.service import main_wallet_id, plausible_id

__all__ = ["MOVE_CODE", "P2P_CODE"]
# A caller's own step in the transfer's batch, after its record is written: raising refuses the transfer.
AppliedHook = Callable[[Connection, TransferRecord], None]


# -- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferRequest:
    from_wallet_id: str
    amount: int
    currency: str
    to_wallet_id: str | None = None
    to_phone: str | None = None
    memo: str | None = None
    to_qr: str | None = None  # a personal receive code's payload (payments.receive_qr)


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: str
    wallet_id: str
    name_masked: str
    phone_masked: str


# -- recipients ------------------------------------------------------------------------------------


def find_recipient(ctx: IdentityContext, principal: Principal, phone_text: str) -> Recipient:
    """Who a phone number pays (masked, for confirmation). Rate-limited per caller against enumeration."""
    phone = normalise_phone(phone_text)
    ctx.limiter.hit("recipient_lookup", principal.user_id or principal.id)
    with ctx.db.read() as conn:
        return _recipient_by_phone(ctx, conn, phone, "CNY")


def _recipient_by_phone(ctx: IdentityContext, conn: Connection, phone: str, currency_code: str) -> Recipient:
    user_id = find_user_id_by_phone(conn, ctx.keys, phone)
    wallet_id = None if user_id is None else main_wallet_id(conn, user_id, currency_code)
    if user_id is None or wallet_id is None:
        raise recipient_not_found("no wallet is registered for this phone number", by="phone")
    user = get_user(conn, ctx.keys, user_id)
    if user.status == "closed":
        raise recipient_not_found("no wallet is registered for this phone number", by="phone")
    return Recipient(user_id, wallet_id, mask_name_for_payee(user.name), mask_phone(phone))


# -- reading ---------------------------------------------------------------------------------------


def get_transfer(ctx: IdentityContext, principal: Principal, transfer_id: str) -> TransferRecord:
    """A transfer the caller paid or received (a failed one only its payer sees); else 404."""
    user_id = require_user_id(principal)
    if not plausible_id(transfer_id):
        raise NotFound("no such transfer")
    with ctx.db.read() as conn:
        row = conn.execute(select(transfers).where(transfers.c.id == transfer_id)).first()
    if row is None:
        raise NotFound("no such transfer")
    record = record_from_row(row, ctx.keys)
    if record.from_user_id != user_id and (record.to_user_id != user_id or record.status == "failed"):
        raise NotFound("no such transfer")
    return record


# -- sending ---------------------------------------------------------------------------------------


def transfer_order(
    principal: Principal,
    request: TransferRequest,
    *,
    idempotency_key: str | None = None,
    step_up: str | None = None,
    on_applied: AppliedHook | None = None,
    http: HttpKey | None = None,
) -> Order:
    """The pipeline's order for a transfer: the input checked (amount, memo, one recipient), nothing
    read. With an Idempotency-Key the ledger transfer id is derived from (caller scope, key). Input
    refused for an HTTP request with a key is answered in the batch, after the key (a replay of a
    stored answer, or a key reused for another request, is answered as such first)."""
    ledger_id = ledger_id_for(P2P_CODE, principal.scope, idempotency_key, "trf")
    try:
        require_user_id(principal)
        check_amount(request.amount, request.currency)
        memo = clean_memo(request.memo)
        if [request.to_wallet_id, request.to_phone, request.to_qr].count(None) != 2:
            raise invalid.exactly_one_of("to", ["wallet_id", "phone", "qr"])
        phone = None if request.to_phone is None else normalise_phone(request.to_phone)
    except QianbaoError as refusal:
        if http is None:
            raise
        return Order(TRANSFERS, principal, None, ledger_id, idempotency_key, step_up, http, refusal=refusal)
    ask = TransferInput(
        from_wallet_id=request.from_wallet_id,
        amount=request.amount,
        currency=request.currency,
        memo=memo,
        to_wallet_id=request.to_wallet_id,
        to_phone=phone,
        to_qr=request.to_qr,
    )
    return Order(TRANSFERS, principal, ask, ledger_id, idempotency_key, step_up, http, on_applied)


def send_transfer(
    ctx: IdentityContext,
    principal: Principal,
    request: TransferRequest,
    *,
    idempotency_key: str | None = None,
    step_up: str | None = None,
    on_applied: AppliedHook | None = None,
) -> TransferRecord:
    """Pay from one of the caller's wallets to a wallet id, a phone number's main wallet or a personal
    receive code's wallet, through the payment pipeline. `on_applied` runs in the batch's transaction
    right after the transfer is recorded (a money request marks itself paid there); if it raises,
    nothing is paid."""
    order = transfer_order(
        principal, request, idempotency_key=idempotency_key, step_up=step_up, on_applied=on_applied
    )
    outcome = submit_order(ctx, order)
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    record: TransferRecord = outcome.record
    return record

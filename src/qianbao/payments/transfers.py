"""P2P transfers (to a wallet id or a phone number): the transfer use case and recipient look-up.

The money path (API.md, GUIDE §2), for `send_transfer`:
  1. in one read transaction: the replay of an earlier outcome of the same key, the payer's own wallet,
     the recipient (a wallet id, a phone number's main wallet, a receive code's wallet), then the
     payment engine's `decide` over state read without locks: every rule in its one order
     (payments/engine/decide.py). A payment that cannot happen is refused with its code and no
     challenge; the payer's own checks come first, and a cap refusal of someone else's wallet carries
     no limit, room or tier, so that declines cannot be used to probe the recipient's balance;
  2. the step-up reasons of the decision → `401 step_up_required` or a pass;
  3. ONE unit of work: the state again with its locks, the replay check, the step-up pass spent, the
     same `decide`, today's outflow counted (atomic conditional upsert), the ledger transfer, the
     budget spending, the transfer record and its outbox event. A decline rolls everything back and
     is then recorded as a `failed` transfer (own transaction), so the Idempotency-Key stays bound to it.
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
from dataclasses import dataclass, replace

from sqlalchemy import Connection, select

from qianbao import invalid
from qianbao.errors import Conflict, NotFound, QianbaoError
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Operation, Principal
from qianbao.identity.phones import normalise_phone
from qianbao.identity.users import find_user_id_by_phone, get_user
from qianbao.ids import new_id
from qianbao.ledger.model import TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.rules import room_under_ceiling
from qianbao.payments.engine.decide import Decline, decide
from qianbao.payments.engine.declines import approved_or_raise, stored_decline
from qianbao.payments.engine.facts import Kind, PaymentRequest, TargetWallet
from qianbao.payments.engine.load import load_books
from qianbao.payments.engine.writes import (
    AlreadyApplied,
    Declined,
    chain_outcome,
    count_outflow,
    count_spend,
    decide_locked,
)
from qianbao.payments.errors import RecipientNotFound, money_json, recipient_not_found
from qianbao.payments.inputs import check_amount, clean_memo, derived_id, require_user_id
from qianbao.payments.receive_qr import qr_recipient
from qianbao.payments.records import (
    TransferRecord,
    insert_record,
    record_by_ledger_id,
    record_from_row,
    records_by_ledger_ids,
    transfer_event,
)
from qianbao.payments.tables import transfers
from qianbao.security.masking import mask_name_for_payee, mask_phone
from qianbao.store.errors import DATABASE_ERRORS, is_retryable, retried
from qianbao.store.outbox import append_events
from qianbao.wallets import spending
from qianbao.wallets.service import WalletRow, main_wallet_id, own_wallet_row, plausible_id, wallet_row

P2P_CODE = "p2p"
MOVE_CODE = "wallet.move"
# A caller's own step inside the transfer's unit of work (e.g. a money request marking itself paid).
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


# -- declines --------------------------------------------------------------------------------------


def _replay(record: TransferRecord) -> TransferRecord:
    if record.status != "failed":
        return record
    own = record.to_user_id == record.from_user_id
    raise stored_decline(record.failure_code, record.currency, reveal=own, transfer_id=record.id)


def _record_failure(ctx: IdentityContext, record: TransferRecord, scope: str, key: str | None) -> None:
    """Bind a decline to its ledger transfer id (and so to the Idempotency-Key), after the rollback."""
    try:
        with ctx.db.write() as conn:
            insert_record(conn, ctx.keys, record, scope, key)
            append_events(conn, [transfer_event(record)], ctx.now())
    except DATABASE_ERRORS as exc:
        # A concurrent attempt with the same key recorded its outcome first: that one stands.
        if not is_retryable(exc):
            raise


def _own_room(ctx: IdentityContext, error: QianbaoError, wallet_id: str) -> None:
    """A move between one's own wallets refused by the ledger's ceiling: say how much more fits."""
    if error.code == "balance_cap_exceeded" and "remaining" not in error.extra:
        account = LedgerReader(ctx.db).lookup_accounts([wallet_id])[wallet_id]
        room = room_under_ceiling(account)
        if room is not None:
            error.extra["remaining"] = money_json(room, account.currency)


# -- sending ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Named:
    """Who the payer named: the wallet found (None: none), how it was named, and, for a receive code
    that cannot be paid as presented (unreadable, altered, another amount…), why."""

    target: TargetWallet | None
    by: str
    refusal: QianbaoError | None = None


def _target(
    ctx: IdentityContext, conn: Connection, request: TransferRequest, phone: str | None, currency: str
) -> _Named:
    by = "phone" if phone is not None else "wallet_id" if request.to_qr is None else "receive_code"
    row: WalletRow | None
    try:
        if phone is not None:
            row = wallet_row(conn, _recipient_by_phone(ctx, conn, phone, currency).wallet_id)
        elif request.to_qr is not None:
            row = qr_recipient(
                ctx, conn, request.to_qr, amount=request.amount, currency_code=request.currency
            )
        else:
            row = wallet_row(conn, str(request.to_wallet_id))
    except RecipientNotFound:
        return _Named(None, by)
    except QianbaoError as refusal:  # the code's own refusal: answered where the recipient is asked
        if request.to_qr is None:
            raise
        return _Named(None, by, refusal)
    return _Named(None if row is None else TargetWallet(row.id, row.user_id, row.currency), by)


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
    receive code's wallet. `on_applied` runs inside the unit of work right after the transfer is
    recorded (a money request marks itself paid there); if it raises, nothing is paid."""
    user_id = require_user_id(principal)
    check_amount(request.amount, request.currency)
    memo = clean_memo(request.memo)
    amount, code = request.amount, request.currency
    if [request.to_wallet_id, request.to_phone, request.to_qr].count(None) != 2:
        raise invalid.exactly_one_of("to", ["wallet_id", "phone", "qr"])
    scope = principal.scope
    ledger_id = (
        derived_id(P2P_CODE, scope, idempotency_key) if idempotency_key else f"{P2P_CODE}:{new_id('trf')}"
    )
    now = ctx.now()
    # The replay look-up, the recipient and the decision before step-up share one read transaction
    # (each transaction is a pool checkout and two round trips more on every payment).
    with ctx.db.read() as conn:
        if idempotency_key is not None:
            done = records_by_ledger_ids(conn, ctx.keys, [ledger_id]).get(ledger_id)
            if done is not None:
                return _replay(done)
        phone = None if request.to_phone is None else normalise_phone(request.to_phone)
        if phone is not None:
            ctx.limiter.hit("recipient_lookup", user_id)
        source = own_wallet_row(conn, user_id, request.from_wallet_id)
        named = _target(ctx, conn, request, phone, source.currency)
        target, by = named.target, named.by
        payment = PaymentRequest(
            kind=Kind.P2P,
            payer_user_id=user_id,
            source_wallet_id=source.id,
            target_wallet_id=None if target is None else target.wallet_id,
            amount=amount,
            currency=code,
            named_wallet_id=request.to_wallet_id,
            recipient_by=by,
            device_trusted=principal.device_trusted,
        )
        books = load_books(ctx, conn, [payment], [] if target is None else [target], now=now, lock=False)
    decision = decide(payment, books, ctx.step_up_policy, now)
    if (
        named.refusal is not None
        and isinstance(decision, Decline)
        and decision.finding.code == "recipient_not_found"
    ):
        raise named.refusal  # the payer's own checks passed: the receive code is what refuses
    approved = approved_or_raise(decision)
    assert target is not None  # noqa: S101 - an approved payment has its recipient
    proof = stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.PAYMENT,
        params={"from": source.id, "to": target.wallet_id, "amount": amount, "currency": code},
        reasons=approved.step_up,
        step_up_header=step_up,
    )
    own = approved.own
    record = TransferRecord(
        id=new_id("trf"),
        ledger_transfer_id=ledger_id,
        from_wallet_id=source.id,
        to_wallet_id=target.wallet_id,
        from_user_id=user_id,
        to_user_id=target.user_id,
        amount=amount,
        currency=code,
        memo=memo,
        status="succeeded",
        failure_code=None,
        created_at=now,
    )
    spec = TransferSpec.posted(
        ledger_id, source.id, target.wallet_id, amount, code, code=MOVE_CODE if own else P2P_CODE
    )
    work = _Work(replace(payment, stepped_up=True), target, record, spec, proof, idempotency_key, on_applied)
    try:
        return retried(lambda: _execute(ctx, principal, work))
    except Declined as declined:
        error = declined.error
        failed = replace(record, status="failed", failure_code=error.code, created_at=ctx.now())
        _record_failure(ctx, failed, scope, idempotency_key)
        error.extra["transfer_id"] = failed.id
        if own:
            _own_room(ctx, error, target.wallet_id)
        raise error from None
    except AlreadyApplied:
        found = record_by_ledger_id(ctx, ledger_id)
        if found is None:
            raise Conflict("this transfer was already applied") from None
        return _replay(found)


@dataclass(frozen=True, slots=True)
class _Work:
    """What the unit of work writes, decided before step-up (and decided again inside it)."""

    payment: PaymentRequest
    target: TargetWallet
    record: TransferRecord
    spec: TransferSpec
    proof: stepup.StepUpPass | None
    key: str | None
    on_applied: AppliedHook | None


def _execute(ctx: IdentityContext, principal: Principal, work: _Work) -> TransferRecord:
    """The unit of work. Leaving it by an exception rolls everything back (the outflow count too)."""
    record, payment = work.record, work.payment
    with ctx.uow() as uow:
        conn = uow.conn
        now = ctx.now()
        # A retry that overlapped its first attempt (same key) finds that transfer once the locks are
        # held, and replays it, before the first attempt's own debit could decline it.
        key = work.key
        approved = decide_locked(
            ctx,
            conn,
            payment,
            [work.target],
            now,
            proof=work.proof,
            applied=None
            if key is None
            else lambda c: bool(records_by_ledger_ids(c, ctx.keys, [work.spec.id])),
        )
        count_outflow(ctx, conn, approved, record.from_user_id, now)
        results = ctx.ledger.apply_in(conn, [work.spec])
        chain_outcome(results, record.currency, reveal=approved.own, what="transfer")
        events = count_spend(conn, approved, record.from_wallet_id, now)
        events += spending.after_credit(conn, record.to_wallet_id, now)
        applied = replace(record, created_at=now)
        insert_record(conn, ctx.keys, applied, principal.scope, work.key)
        if work.on_applied is not None:
            work.on_applied(conn, applied)
        uow.emit(transfer_event(applied))
        for event in events:
            uow.emit(event)
        uow.commit()
        return applied

"""P2P transfers (to a wallet id or a phone number): the transfer use case and recipient look-up.

The money path (API.md, GUIDE §2), for `send_transfer`:
  1. checks that need no lock, in read transactions: the amount, the payer (not frozen), the wallets
     (the payer's own; the recipient's wallet or, by phone, main wallet), currencies;
  2. hard limits BEFORE any step-up, for payments to someone else: the single-payment limit, today's
     remaining allowance, then for everyone the payer's own balance, and only then the recipient's
     balance cap — a request that would break one is refused with that code and no challenge. The payer's
     own checks come first and a cap refusal for someone else's wallet carries no limit, room or tier, so
     that declines cannot be used to probe the recipient's balance;
  3. the step-up policy (amount, new payee, untrusted device) → `401 step_up_required` or a pass;
  4. ONE unit of work: consume the step-up pass, reserve the outflow against the daily limit (atomic
     conditional UPDATE), apply the ledger transfer, write the transfer record and its outbox event.
     If the daily limit or the ledger declines, everything rolls back, and the decline is then recorded
     as a `failed` transfer (own transaction) so the Idempotency-Key stays bound to it.
Moving money between one's own wallets needs no step-up and does not count toward outflow limits.

With an Idempotency-Key the ledger transfer id is derived from (caller scope, key): even a crash between
the ledger commit and the stored HTTP answer cannot pay twice — a re-run finds the record or the ledger
answers `exists`. Ledger transfers carry no metadata: ids and the transfer code only, no personal data.

Around it in this package: `inputs` (amount, memo, derived ids), `errors` (payment errors and the
ledger-code mapping), `records` (the transfers table and its outbox event), `funding` (sandbox funding)
and `history` (a wallet's transactions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Connection, select

from qianbao import invalid
from qianbao.errors import (
    Conflict,
    IdempotencyKeyReused,
    LimitExceeded,
    NotFound,
    QianbaoError,
)
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import check_inflow, reserve_outflow
from qianbao.identity.model import Operation, Principal, StepUpFacts
from qianbao.identity.phones import normalise_phone
from qianbao.identity.users import find_user_id_by_phone, get_user
from qianbao.ids import new_id
from qianbao.ledger.model import AccountStatus, ResultCode, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.payments.errors import (
    LEDGER_DECLINES,
    CurrencyMismatch,
    SameWallet,
    decline_error,
    money_json,
    recipient_cap_error,
    recipient_not_found,
    room_under_cap,
)
from qianbao.payments.guards import AlreadyApplied, Declined, check_hard_limits, ensure_can_pay
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
from qianbao.store.errors import DATABASE_ERRORS, is_retryable
from qianbao.store.outbox import append_events
from qianbao.wallets import spending
from qianbao.wallets.service import WalletRow, main_wallet_id, own_wallet_row, plausible_id, wallet_row

P2P_CODE = "p2p"
MOVE_CODE = "wallet.move"
_RETRIES = 5
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


def _check_payer_then_recipient(
    ctx: IdentityContext,
    conn: Connection,
    source: WalletRow,
    target: WalletRow,
    amount: int,
    code: str,
    *,
    own: bool,
    now: int,
) -> None:
    """The balance checks before step-up, the payer's own first (read-only; the unit of work re-checks).

    Whoever cannot pay the amount hears `insufficient_funds` and nothing about the recipient: answering
    the recipient's cap first would let an empty wallet bisect the recipient's exact balance. A cap
    refusal for someone else's wallet carries no limit, room or tier (`recipient_cap_error`)."""
    accounts = LedgerReader(ctx.db).lookup_accounts_in(conn, [source.id, target.id])
    payer, payee = accounts[source.id], accounts[target.id]
    if payer.status is not AccountStatus.OPEN:  # debit-frozen, frozen or closed: cannot pay out
        raise decline_error("wallet_frozen", currency_code=code)
    if payer.available < amount:
        raise decline_error("insufficient_funds", currency_code=code)
    if payee.status in (AccountStatus.FROZEN, AccountStatus.CLOSED):
        raise decline_error("wallet_frozen", currency_code=code)
    if own:  # the owner may see their own room; the total over their wallets does not change
        room = room_under_cap(payee)
        if room < amount:
            raise decline_error("balance_cap_exceeded", currency_code=code, room=room)
        return
    try:
        check_inflow(conn, ctx.settings, target.user_id, amount, code, now, reveal_room=False, lock=False)
    except LimitExceeded:
        raise recipient_cap_error() from None
    if room_under_cap(payee) < amount:
        raise recipient_cap_error()


def _payer_view(ctx: IdentityContext, error: QianbaoError, source_id: str, amount: int) -> QianbaoError:
    """A decline of a payment to someone else as the payer may see it. The unit of work checks the
    recipient's cap before the ledger checks the payer's balance, so if the balance fell short meanwhile
    that is the answer; otherwise the cap refusal is stripped of the recipient's limit and tier."""
    if error.code != "balance_cap_exceeded":
        return error
    source = LedgerReader(ctx.db).lookup_accounts([source_id])[source_id]
    if source.available < amount:
        return decline_error("insufficient_funds", currency_code=source.currency)
    return recipient_cap_error()


def _replay(record: TransferRecord) -> TransferRecord:
    if record.status != "failed":
        return record
    if record.failure_code == "balance_cap_exceeded" and record.to_user_id != record.from_user_id:
        raise recipient_cap_error(transfer_id=record.id)
    raise decline_error(
        record.failure_code or "conflict", currency_code=record.currency, transfer_id=record.id
    )


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


# -- sending ---------------------------------------------------------------------------------------


def _payee_is_new(conn: Connection, user_id: str, payee_user_id: str) -> bool:
    earlier = conn.execute(
        select(transfers.c.id)
        .where(
            transfers.c.from_user_id == user_id,
            transfers.c.to_user_id == payee_user_id,
            transfers.c.status == "succeeded",
        )
        .limit(1)
    ).first()
    return earlier is None


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
    # All the checks before step-up share one read transaction (each transaction is a pool checkout and
    # two round trips more on every payment).
    with ctx.db.read() as conn:
        if idempotency_key is not None:
            done = records_by_ledger_ids(conn, ctx.keys, [ledger_id]).get(ledger_id)
            if done is not None:
                return _replay(done)
        phone = None if request.to_phone is None else normalise_phone(request.to_phone)
        if phone is not None:
            ctx.limiter.hit("recipient_lookup", user_id)
        ensure_can_pay(conn, user_id)
        source = own_wallet_row(conn, user_id, request.from_wallet_id)
        if request.to_wallet_id == source.id:
            raise SameWallet("choose a different wallet to pay into")
        if code != source.currency:
            raise CurrencyMismatch(f"the wallet holds {source.currency}, not {code}")
        target: WalletRow | None
        if phone is not None:
            target = wallet_row(conn, _recipient_by_phone(ctx, conn, phone, source.currency).wallet_id)
        elif request.to_qr is not None:
            target = qr_recipient(ctx, conn, request.to_qr, amount=amount, currency_code=code)
        else:
            target = wallet_row(conn, str(request.to_wallet_id))
        if target is None:
            raise recipient_not_found("no such recipient wallet", by="wallet_id")
        if target.id == source.id:
            raise SameWallet("choose a different wallet to pay into")
        if target.currency != source.currency:
            raise CurrencyMismatch("the wallets hold different currencies")
        own = target.user_id == user_id
        spending.check_spend(conn, source.id, amount, now, own_move=own)  # wallet_locked, budget_exceeded
        if not own:
            check_hard_limits(conn, ctx, user_id, amount, code, now)
        payee_is_new = not own and _payee_is_new(conn, user_id, target.user_id)
        _check_payer_then_recipient(ctx, conn, source, target, amount, code, own=own, now=now)
    proof = None
    if not own:
        facts = StepUpFacts(Operation.PAYMENT, amount, payee_is_new, principal.device_trusted)
        proof = stepup.require_step_up(
            ctx,
            principal,
            operation=Operation.PAYMENT,
            params={"from": source.id, "to": target.id, "amount": amount, "currency": code},
            reasons=ctx.step_up_policy.reasons(facts),
            step_up_header=step_up,
        )
    record = TransferRecord(
        id=new_id("trf"),
        ledger_transfer_id=ledger_id,
        from_wallet_id=source.id,
        to_wallet_id=target.id,
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
        ledger_id, source.id, target.id, amount, code, code=MOVE_CODE if own else P2P_CODE
    )
    attempt = 0
    while True:
        attempt += 1
        try:
            return _execute(
                ctx, principal, record, spec, proof, own=own, key=idempotency_key, on_applied=on_applied
            )
        except Declined as declined:
            error = declined.error if own else _payer_view(ctx, declined.error, source.id, amount)
            failed = replace(record, status="failed", failure_code=error.code, created_at=ctx.now())
            _record_failure(ctx, failed, scope, idempotency_key)
            error.extra["transfer_id"] = failed.id
            if own and error.code == "balance_cap_exceeded":
                target_account = LedgerReader(ctx.db).lookup_accounts([target.id])[target.id]
                error.extra["remaining"] = money_json(room_under_cap(target_account), code)
            raise error from None
        except AlreadyApplied:
            found = record_by_ledger_id(ctx, ledger_id)
            if found is None:
                raise Conflict("this transfer was already applied") from None
            return _replay(found)
        except DATABASE_ERRORS as exc:
            if attempt >= _RETRIES or not is_retryable(exc):
                raise


def _execute(
    ctx: IdentityContext,
    principal: Principal,
    record: TransferRecord,
    spec: TransferSpec,
    proof: stepup.StepUpPass | None,
    *,
    own: bool,
    key: str | None,
    on_applied: AppliedHook | None = None,
) -> TransferRecord:
    """The unit of work. Leaving it by an exception rolls everything back (the outflow reservation too)."""
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, proof)
        ensure_can_pay(conn, record.from_user_id)
        now = ctx.now()
        if not own:
            try:
                reserve_outflow(conn, ctx.settings, record.from_user_id, record.amount, record.currency, now)
                check_inflow(
                    conn, ctx.settings, record.to_user_id, record.amount, record.currency, now,
                    reveal_room=record.to_user_id == record.from_user_id,
                )  # fmt: skip
            except LimitExceeded as exc:
                raise Declined(exc) from None
        try:  # a lock or a blocking budget may have come since the pre-check
            spending.check_spend(conn, record.from_wallet_id, record.amount, now, own_move=own)
        except QianbaoError as exc:
            raise Declined(exc) from None
        (result,) = ctx.ledger.apply_in(conn, [spec])
        if result.code is ResultCode.EXISTS:
            raise AlreadyApplied
        if result.code is ResultCode.EXISTS_WITH_DIFFERENT_FIELDS:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different transfer")
        if result.code is not ResultCode.OK:
            declined = LEDGER_DECLINES.get(result.code, str(result.code))
            raise Declined(decline_error(declined, currency_code=record.currency))
        try:  # spending counts against the payer's monthly budget; a move between own wallets does not
            events = (
                []
                if own
                else spending.record_spend(conn, record.from_wallet_id, record.amount, record.currency, now)
            )
        except QianbaoError as exc:
            raise Declined(exc) from None
        events += spending.after_credit(conn, record.to_wallet_id, now)
        applied = replace(record, created_at=now)
        insert_record(conn, ctx.keys, applied, principal.scope, key)
        if on_applied is not None:
            on_applied(conn, applied)
        uow.emit(transfer_event(applied))
        for event in events:
            uow.emit(event)
        uow.commit()
        return applied

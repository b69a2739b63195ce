"""P2P transfers (to a wallet id or a phone number), a wallet's history, and sandbox funding.

The money path (API.md, GUIDE §2), for `send_transfer`:
  1. checks that need no lock, in read transactions: the amount, the payer (not frozen), the wallets
     (the payer's own; the recipient's wallet or, by phone, main wallet), currencies;
  2. hard limits BEFORE any step-up, for payments to someone else: the single-payment limit, today's
     remaining allowance, then for everyone the balance and the recipient's balance cap — a request that
     would break one is refused with that code and no challenge;
  3. the step-up policy (amount, new payee, untrusted device) → `401 step_up_required` or a pass;
  4. ONE unit of work: consume the step-up pass, reserve the outflow against the daily limit (atomic
     conditional UPDATE), apply the ledger transfer, write the transfer record and its outbox event.
     If the daily limit or the ledger declines, everything rolls back, and the decline is then recorded
     as a `failed` transfer (own transaction) so the Idempotency-Key stays bound to it.
Moving money between one's own wallets needs no step-up and does not count toward outflow limits.

With an Idempotency-Key the ledger transfer id is derived from (caller scope, key): even a crash between
the ledger commit and the stored HTTP answer cannot pay twice — a re-run finds the record or the ledger
answers `exists`. Ledger transfers carry no metadata: ids and the transfer code only, no personal data.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, insert, select

from qianbao.errors import (
    Conflict,
    IdempotencyKeyReused,
    InvalidInput,
    LimitExceeded,
    Locked,
    NotFound,
    QianbaoError,
)
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import check_inflow, check_single, limit_status, limits_for, reserve_outflow
from qianbao.identity.model import Operation, Principal, StepUpFacts
from qianbao.identity.phones import normalise_phone
from qianbao.identity.users import credential_row, find_user_id_by_phone, get_user
from qianbao.ids import new_id
from qianbao.ledger.model import Account, AccountStatus, ResultCode, TransferKind, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.system_accounts import SANDBOX_FUNDING, system_account_id, system_account_specs
from qianbao.money import Money, UnknownCurrencyError, currency, format_money
from qianbao.payments.tables import transfers
from qianbao.security.masking import mask_name_for_payee, mask_phone
from qianbao.store.errors import DATABASE_ERRORS, is_retryable
from qianbao.store.outbox import OutboxEvent, append_events
from qianbao.wallets.service import (
    WalletRow,
    main_wallet_id,
    own_wallet_row,
    plausible_id,
    wallet_row,
    wallet_rows,
)

P2P_CODE = "p2p"
MOVE_CODE = "wallet.move"
FUNDING_CODE = "sandbox.funding"
MAX_PAYMENT = 10**15
MAX_MEMO_LENGTH = 140
_RETRIES = 5
TRANSACTION_TYPES = {P2P_CODE: "p2p", MOVE_CODE: "wallet_move", FUNDING_CODE: "top_up"}


# -- errors (codes in API.md) ------------------------------------------------------------------------


class PaymentDeclined(QianbaoError):
    """A business rule or the ledger declined the payment: insufficient_funds, balance_cap_exceeded,
    wallet_frozen (the code is the API's, see api/problems.py)."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


class SameWallet(InvalidInput):
    code = "same_wallet"


class CurrencyMismatch(InvalidInput):
    code = "currency_mismatch"


class RecipientNotFound(NotFound):
    code = "recipient_not_found"


# -- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferRequest:
    from_wallet_id: str
    amount: int
    currency: str
    to_wallet_id: str | None = None
    to_phone: str | None = None
    memo: str | None = None


@dataclass(frozen=True, slots=True)
class TransferRecord:
    id: str
    ledger_transfer_id: str
    from_wallet_id: str
    to_wallet_id: str
    from_user_id: str
    to_user_id: str
    amount: int
    currency: str
    memo: str | None
    status: str
    failure_code: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: str
    wallet_id: str
    name_masked: str
    phone_masked: str


@dataclass(frozen=True, slots=True)
class Funding:
    transaction_id: str
    wallet_id: str
    amount: int
    currency: str
    created_at: int


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


# -- input -----------------------------------------------------------------------------------------


def check_amount(amount: object, currency_code: object) -> None:
    """A payment amount: whole minor units, 1 to 10^15, in a known currency (422 validation_error)."""
    if type(amount) is not int or not 0 < amount <= MAX_PAYMENT:
        raise InvalidInput(
            f"amount must be a whole number of minor units from 1 to {MAX_PAYMENT}", field="amount"
        )
    try:
        currency(currency_code)
    except (UnknownCurrencyError, TypeError) as exc:
        raise InvalidInput("currency is not a known ISO 4217 code", field="currency") from exc


def clean_memo(memo: str | None) -> str | None:
    if memo is None:
        return None
    if not isinstance(memo, str) or len(memo) > MAX_MEMO_LENGTH:
        raise InvalidInput(f"memo must be up to {MAX_MEMO_LENGTH} characters", field="memo")
    cleaned = unicodedata.normalize("NFC", memo.strip())
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise InvalidInput("memo must not contain control characters", field="memo")
    return cleaned or None


def derived_id(prefix: str, scope: str, key: str) -> str:
    """A ledger transfer id bound to (caller scope, Idempotency-Key): the same key can never pay twice."""
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    return f"{prefix}:{digest}"


def _user_id(principal: Principal) -> str:
    if principal.user_id is None:
        raise InvalidInput("this operation needs a user")
    return principal.user_id


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
        raise RecipientNotFound("no wallet is registered for this phone number")
    user = get_user(conn, ctx.keys, user_id)
    if user.status == "closed":
        raise RecipientNotFound("no wallet is registered for this phone number")
    return Recipient(user_id, wallet_id, mask_name_for_payee(user.name), mask_phone(phone))


# -- records ---------------------------------------------------------------------------------------


def _record(row: Any) -> TransferRecord:
    return TransferRecord(
        id=row.id,
        ledger_transfer_id=row.ledger_transfer_id,
        from_wallet_id=row.from_wallet_id,
        to_wallet_id=row.to_wallet_id,
        from_user_id=row.from_user_id,
        to_user_id=row.to_user_id,
        amount=int(row.amount),
        currency=row.currency,
        memo=row.memo,
        status=row.status,
        failure_code=row.failure_code,
        created_at=int(row.created_at),
    )


def records_by_ledger_ids(conn: Connection, ledger_ids: list[str]) -> dict[str, TransferRecord]:
    if not ledger_ids:
        return {}
    rows = conn.execute(select(transfers).where(transfers.c.ledger_transfer_id.in_(ledger_ids)))
    return {r.ledger_transfer_id: _record(r) for r in rows}


def _record_by_ledger_id(ctx: IdentityContext, ledger_id: str) -> TransferRecord | None:
    with ctx.db.read() as conn:
        return records_by_ledger_ids(conn, [ledger_id]).get(ledger_id)


def _insert_record(conn: Connection, record: TransferRecord, scope: str, key: str | None) -> None:
    conn.execute(
        insert(transfers).values(
            id=record.id,
            ledger_transfer_id=record.ledger_transfer_id,
            from_wallet_id=record.from_wallet_id,
            to_wallet_id=record.to_wallet_id,
            from_user_id=record.from_user_id,
            to_user_id=record.to_user_id,
            amount=record.amount,
            currency=record.currency,
            memo=record.memo,
            status=record.status,
            failure_code=record.failure_code,
            created_at=record.created_at,
            idempotency_scope=scope if key is not None else None,
            idempotency_key=key,
        )
    )


def _event(record: TransferRecord) -> OutboxEvent:
    # Ids and amounts only: no names, phone numbers or memo (free text may hold personal data).
    payload = {
        "transfer_id": record.id,
        "status": record.status,
        "from_wallet_id": record.from_wallet_id,
        "to_wallet_id": record.to_wallet_id,
        "from_user_id": record.from_user_id,
        "to_user_id": record.to_user_id,
        "amount": {"amount": record.amount, "currency": record.currency},
        "failure_code": record.failure_code,
    }
    return OutboxEvent(f"transfer.{record.status}", "transfer", record.id, payload)


def get_transfer(ctx: IdentityContext, principal: Principal, transfer_id: str) -> TransferRecord:
    """A transfer the caller paid or received (a failed one only its payer sees); else 404."""
    user_id = _user_id(principal)
    if not plausible_id(transfer_id):
        raise NotFound("no such transfer")
    with ctx.db.read() as conn:
        row = conn.execute(select(transfers).where(transfers.c.id == transfer_id)).first()
    if row is None:
        raise NotFound("no such transfer")
    record = _record(row)
    if record.from_user_id != user_id and (record.to_user_id != user_id or record.status == "failed"):
        raise NotFound("no such transfer")
    return record


# -- declines --------------------------------------------------------------------------------------


def _room(account: Account) -> int:
    """How much more the account may receive under its ceiling (incoming holds count)."""
    if account.balance_ceiling is None:
        return MAX_PAYMENT
    return max(0, account.balance_ceiling - account.balance - account.credits_pending)


def _money(amount: int, currency_code: str) -> dict[str, object]:
    return {"amount": amount, "currency": currency_code}


def _declined(code: str, *, currency_code: str, room: int | None = None, **extra: Any) -> QianbaoError:
    if code == "insufficient_funds":
        return PaymentDeclined(code, "the wallet's available balance is too low", **extra)
    if code == "balance_cap_exceeded":
        if room is not None:
            extra["remaining"] = _money(room, currency_code)
        return PaymentDeclined(code, "the receiving wallet would go over its balance cap", **extra)
    if code == "wallet_frozen":
        return PaymentDeclined(code, "a wallet of this transfer is frozen or closed", **extra)
    if code == "currency_mismatch":
        return CurrencyMismatch("the wallets hold different currencies", **extra)
    if code in ("limit_exceeded_single", "limit_exceeded_daily"):
        return LimitExceeded(code, "the payment is over a KYC limit", **extra)
    return Conflict(f"the ledger refused the transfer ({code})", **extra)


_LEDGER_DECLINES = {
    ResultCode.EXCEEDS_CREDITS: "insufficient_funds",
    ResultCode.EXCEEDS_CEILING: "balance_cap_exceeded",
    ResultCode.ACCOUNT_FROZEN: "wallet_frozen",
    ResultCode.ACCOUNT_CLOSED: "wallet_frozen",
    ResultCode.CURRENCY_MISMATCH: "currency_mismatch",
}


def _status_problem(source: Account, target: Account) -> str | None:
    if source.status is not AccountStatus.OPEN:  # debit-frozen, frozen or closed: cannot pay out
        return "wallet_frozen"
    if target.status in (AccountStatus.FROZEN, AccountStatus.CLOSED):
        return "wallet_frozen"
    return None


class _AlreadyApplied(Exception):  # noqa: N818 - internal control flow
    """The ledger already holds this transfer id: an earlier attempt with the same key committed."""


class _Declined(Exception):  # noqa: N818 - internal control flow
    """The daily limit or the ledger declined the transfer inside the unit of work (rolled back)."""

    def __init__(self, error: QianbaoError) -> None:
        super().__init__(error.code)
        self.error = error


def _replay(record: TransferRecord) -> TransferRecord:
    if record.status != "failed":
        return record
    raise _declined(record.failure_code or "conflict", currency_code=record.currency, transfer_id=record.id)


def _record_failure(ctx: IdentityContext, record: TransferRecord, scope: str, key: str | None) -> None:
    """Bind a decline to its ledger transfer id (and so to the Idempotency-Key), after the rollback."""
    try:
        with ctx.db.write() as conn:
            _insert_record(conn, record, scope, key)
            append_events(conn, [_event(record)], ctx.now())
    except DATABASE_ERRORS as exc:
        # A concurrent attempt with the same key recorded its outcome first: that one stands.
        if not is_retryable(exc):
            raise


# -- sending ---------------------------------------------------------------------------------------


def _ensure_can_pay(conn: Connection, user_id: str) -> None:
    if str(credential_row(conn, user_id).status) != "active":
        raise Locked("account_frozen", "the account is frozen: payments are not possible")


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


def _check_hard_limits(
    conn: Connection, ctx: IdentityContext, user_id: str, amount: int, currency_code: str, now: int
) -> None:
    """Single-payment limit and today's remaining allowance, read-only (reserve_outflow re-checks
    atomically in the unit of work)."""
    tier, limits, _cooling = limits_for(conn, ctx.settings, user_id, now)
    check_single(limits, tier, amount, currency_code)
    status = limit_status(conn, ctx.settings, user_id, currency_code, now)
    if status.remaining_today is not None and amount > status.remaining_today:
        daily = status.limits.daily_outflow or 0
        raise LimitExceeded(
            "limit_exceeded_daily",
            f"the daily outflow limit of tier {tier} is {format_money(Money(daily, currency_code))};"
            f" {format_money(Money(status.remaining_today, currency_code))} remains today",
            limit=_money(daily, currency_code),
            remaining=_money(status.remaining_today, currency_code),
            kyc_tier=tier,
            next_step="verify_identity" if tier > 1 else "try_tomorrow",
        )


def send_transfer(
    ctx: IdentityContext,
    principal: Principal,
    request: TransferRequest,
    *,
    idempotency_key: str | None = None,
    step_up: str | None = None,
) -> TransferRecord:
    """Pay from one of the caller's wallets to a wallet id or a phone number's main wallet."""
    user_id = _user_id(principal)
    check_amount(request.amount, request.currency)
    memo = clean_memo(request.memo)
    amount, code = request.amount, request.currency
    if (request.to_wallet_id is None) == (request.to_phone is None):
        raise InvalidInput("to needs exactly one of wallet_id or phone", field="to")
    scope = principal.scope
    ledger_id = (
        derived_id(P2P_CODE, scope, idempotency_key) if idempotency_key else f"{P2P_CODE}:{new_id('trf')}"
    )
    if idempotency_key is not None:
        done = _record_by_ledger_id(ctx, ledger_id)
        if done is not None:
            return _replay(done)
    phone = None if request.to_phone is None else normalise_phone(request.to_phone)
    if phone is not None:
        ctx.limiter.hit("recipient_lookup", user_id)
    now = ctx.now()
    with ctx.db.read() as conn:
        _ensure_can_pay(conn, user_id)
        source = own_wallet_row(conn, user_id, request.from_wallet_id)
        if request.to_wallet_id == source.id:
            raise SameWallet("choose a different wallet to pay into")
        if code != source.currency:
            raise CurrencyMismatch(f"the wallet holds {source.currency}, not {code}")
        target: WalletRow | None
        if phone is not None:
            target = wallet_row(conn, _recipient_by_phone(ctx, conn, phone, source.currency).wallet_id)
        else:
            target = wallet_row(conn, str(request.to_wallet_id))
        if target is None:
            raise RecipientNotFound("no such recipient wallet")
        if target.id == source.id:
            raise SameWallet("choose a different wallet to pay into")
        if target.currency != source.currency:
            raise CurrencyMismatch("the wallets hold different currencies")
        own = target.user_id == user_id
        if not own:
            _check_hard_limits(conn, ctx, user_id, amount, code, now)
            check_inflow(conn, ctx.settings, target.user_id, amount, code, now, reveal_room=False, lock=False)
        payee_is_new = not own and _payee_is_new(conn, user_id, target.user_id)
    accounts = LedgerReader(ctx.db).lookup_accounts([source.id, target.id])
    problem = _status_problem(accounts[source.id], accounts[target.id])
    if problem is not None:
        raise _declined(problem, currency_code=code)
    if accounts[source.id].available < amount:
        raise _declined("insufficient_funds", currency_code=code)
    if _room(accounts[target.id]) < amount:
        raise _declined(
            "balance_cap_exceeded", currency_code=code, room=_room(accounts[target.id]) if own else None
        )
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
            return _execute(ctx, principal, record, spec, proof, own=own, key=idempotency_key)
        except _Declined as declined:
            error = declined.error
            failed = replace(record, status="failed", failure_code=error.code, created_at=ctx.now())
            _record_failure(ctx, failed, scope, idempotency_key)
            error.extra["transfer_id"] = failed.id
            if own and error.code == "balance_cap_exceeded":
                target_account = LedgerReader(ctx.db).lookup_accounts([target.id])[target.id]
                error.extra["remaining"] = _money(_room(target_account), code)
            raise error from None
        except _AlreadyApplied:
            found = _record_by_ledger_id(ctx, ledger_id)
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
) -> TransferRecord:
    """The unit of work. Leaving it by an exception rolls everything back (the outflow reservation too)."""
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, proof)
        _ensure_can_pay(conn, record.from_user_id)
        now = ctx.now()
        if not own:
            try:
                reserve_outflow(conn, ctx.settings, record.from_user_id, record.amount, record.currency, now)
                check_inflow(
                    conn, ctx.settings, record.to_user_id, record.amount, record.currency, now,
                    reveal_room=record.to_user_id == record.from_user_id,
                )  # fmt: skip
            except LimitExceeded as exc:
                raise _Declined(exc) from None
        (result,) = ctx.ledger.apply_in(conn, [spec])
        if result.code is ResultCode.EXISTS:
            raise _AlreadyApplied
        if result.code is ResultCode.EXISTS_WITH_DIFFERENT_FIELDS:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different transfer")
        if result.code is not ResultCode.OK:
            declined = _LEDGER_DECLINES.get(result.code, str(result.code))
            raise _Declined(_declined(declined, currency_code=record.currency))
        applied = replace(record, created_at=now)
        _insert_record(conn, applied, principal.scope, key)
        uow.emit(_event(applied))
        uow.commit()
        return applied


# -- sandbox funding ---------------------------------------------------------------------------------


def ensure_sandbox_funding_account(ctx: IdentityContext, currency_code: str) -> str:
    """The sandbox funding account (and the other system accounts) exist on a fresh database too."""
    funding = system_account_id(SANDBOX_FUNDING, currency_code)
    if LedgerReader(ctx.db).get_account(funding) is None:
        for result in ctx.ledger.create_accounts(system_account_specs(currency_code, sandbox=True)):
            if result.code not in (ResultCode.OK, ResultCode.EXISTS):
                raise Conflict(f"system account {result.id} could not be created: {result.code}")
    return funding


def sandbox_fund(
    ctx: IdentityContext,
    principal: Principal,
    *,
    wallet_id: str,
    amount: int,
    currency_code: str,
    idempotency_key: str | None = None,
) -> Funding:
    """Sandbox only: credit one's own wallet from the sandbox funding account (the balance cap applies)."""
    if not ctx.settings.is_sandbox:
        raise NotFound("sandbox funding exists only in sandbox mode")
    user_id = _user_id(principal)
    check_amount(amount, currency_code)
    with ctx.db.read() as conn:
        wallet = own_wallet_row(conn, user_id, wallet_id)
    if wallet.currency != currency_code:
        raise CurrencyMismatch(f"the wallet holds {wallet.currency}, not {currency_code}")
    funding = ensure_sandbox_funding_account(ctx, currency_code)
    if idempotency_key is not None:
        transfer_id = derived_id("sandbox", principal.scope, idempotency_key)
    else:
        transfer_id = f"sandbox:{new_id('fnd')}"
    spec = TransferSpec.posted(transfer_id, funding, wallet.id, amount, currency_code, code=FUNDING_CODE)
    with ctx.uow() as uow:
        check_inflow(uow.conn, ctx.settings, user_id, amount, currency_code, ctx.now(), reveal_room=True)
        (result,) = ctx.ledger.apply_in(uow.conn, [spec])
        uow.commit()
    if result.code is ResultCode.EXISTS_WITH_DIFFERENT_FIELDS:
        raise IdempotencyKeyReused("this Idempotency-Key was used for a different funding")
    if not result.succeeded:
        room = None
        if result.code is ResultCode.EXCEEDS_CEILING:
            room = _room(LedgerReader(ctx.db).lookup_accounts([wallet.id])[wallet.id])
        raise _declined(
            _LEDGER_DECLINES.get(result.code, str(result.code)), currency_code=currency_code, room=room
        )
    created = result.transfer.created_at if result.transfer is not None else ctx.now()
    return Funding(transfer_id, wallet.id, amount, currency_code, created)


# -- history ---------------------------------------------------------------------------------------


def wallet_history(
    ctx: IdentityContext, principal: Principal, wallet_id: str, *, limit: int = 20, cursor: str | None = None
) -> tuple[list[Transaction], str | None]:
    """The wallet's ledger entries, newest first, with memo and a masked counterparty where known."""
    user_id = _user_id(principal)
    with ctx.db.read() as conn:
        own_wallet_row(conn, user_id, wallet_id)
    page = LedgerReader(ctx.db).account_history(wallet_id, limit, cursor)
    others = {
        e.transfer.credit_account_id if e.direction == "debit" else e.transfer.debit_account_id
        for e in page.entries
    }
    with ctx.db.read() as conn:
        other_wallets = wallet_rows(conn, others)
        records = records_by_ledger_ids(conn, [e.transfer.id for e in page.entries])
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

"""KYC tiers, modelled on the e-CNY wallet: 4 (phone only) → 3 (name and ID number) → 2 (a bank account in
that name) → 1 (enhanced verification, reviewed by an operator). Each tier's limits are `settings.kyc_tiers`.

Outside checks are ports (`NameIdVerifier`, `BankAccountVerifier`) called before the unit of work; the
sandbox adapters below stand in for the real providers (a public-security name/ID check, a bank's account
verification). A tier change, in one transaction: the user row, every wallet's balance ceiling (the
ledger enforces the tier's balance cap), a `kyc_applications` row, the audit event `kyc.tier_changed` and
an outbox event. Personal data is stored encrypted (blind index for the ID number) and shown masked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from sqlalchemy import Connection, insert, select, text, update
from stdnum import luhn
from stdnum.cn import ric

from qianbao.clock import from_us
from qianbao.config import Settings, TierLimits
from qianbao.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import IdNumberInUse, KycRejected
from qianbao.identity.limits import LOCAL_OFFSET, limit_status, limits_for
from qianbao.identity.model import Operation, Principal, RequestInfo, StepUpFacts
from qianbao.identity.signup import clean_name
from qianbao.identity.tables import KYC_STATUSES, kyc_applications, users
from qianbao.identity.users import ID_NUMBER, credential_row
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.keyring import KeyRing
from qianbao.security.masking import mask_account_number, mask_id_number, mask_name
from qianbao.store.outbox import OutboxEvent
from qianbao.store.unit_of_work import UnitOfWork
from qianbao.wallets.accounts import wallet_ids_of

IDENTITY_TIER = 3
BANK_ACCOUNT_TIER = 2
ENHANCED_TIER = 1
MIN_AGE_YEARS = 16  # resident ID cards are compulsory from 16; younger people cannot verify here
MAX_AGE_YEARS = 130
MAX_NOTE_LENGTH = 200
SYSTEM_DECIDER = "system"
CURRENCY = "CNY"  # tier limits are CNY amounts
MAX_PAGE = 100
_APPLICATION_ID = re.compile(r"kyc_[0-9a-z]{26}")
# The sandbox name/ID check fails for names containing one of these (how testers provoke kyc_rejected).
SANDBOX_MISMATCH_MARKERS = ("不符", "mismatch")


# -- ports and their sandbox adapters ---------------------------------------------------------------


class NameIdVerifier(Protocol):
    """Does this real name belong to this resident ID number? (The public-security identity check.)"""

    def matches(self, name: str, id_number: str) -> bool: ...


class BankAccountVerifier(Protocol):
    """Is this bank account held in this name by the holder of this ID number? (A bank's verification.)"""

    def verify(self, *, account_number: str, account_name: str, id_number: str) -> bool: ...


class SandboxNameIdVerifier:
    """Sandbox: every name matches, except names containing "不符" or "mismatch" (any case)."""

    def matches(self, name: str, id_number: str) -> bool:
        del id_number
        folded = name.casefold()
        return not any(marker in folded for marker in SANDBOX_MISMATCH_MARKERS)


class SandboxBankAccountVerifier:
    """Sandbox: every well-formed account number (12-19 digits, valid Luhn check) is accepted."""

    def verify(self, *, account_number: str, account_name: str, id_number: str) -> bool:
        del account_name, id_number
        return luhn.is_valid(account_number)


@dataclass(frozen=True, slots=True)
class KycPorts:
    name_id: NameIdVerifier
    bank_account: BankAccountVerifier


def ports_for(settings: Settings) -> KycPorts:
    """The verification providers: the sandbox adapters in sandbox mode. Production has no provider yet,
    so it refuses (503) rather than pretending to verify anyone."""
    if settings.is_sandbox:
        return KycPorts(SandboxNameIdVerifier(), SandboxBankAccountVerifier())
    raise ServiceUnavailable("no identity verification provider is configured")


# -- views -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    user_id: str
    target_tier: int
    status: str
    reason: str | None
    created_at: int
    decided_at: int | None
    decided_by: str | None
    name_masked: str | None
    id_number_masked: str | None
    account_number_masked: str | None


@dataclass(frozen=True, slots=True)
class KycStatus:
    tier: int
    currency: str
    limits: TierLimits
    used_today: int
    remaining_today: int | None
    cooling_off: bool
    applications: list[Application]


def _open(keys: KeyRing, cipher: str | None, column: str, mask: Any) -> str | None:
    if cipher is None:
        return None
    masked: str = mask(keys.decrypt(cipher, context=context("kyc_applications", column)))
    return masked


def _application(keys: KeyRing, row: Any) -> Application:
    return Application(
        id=row.id,
        user_id=row.user_id,
        target_tier=int(row.target_tier),
        status=row.status,
        reason=row.reason,
        created_at=int(row.created_at),
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        name_masked=_open(keys, row.name_cipher, "name_cipher", mask_name),
        id_number_masked=_open(keys, row.id_number_cipher, "id_number_cipher", mask_id_number),
        account_number_masked=_open(
            keys, row.account_number_cipher, "account_number_cipher", mask_account_number
        ),
    )


def kyc_status(ctx: IdentityContext, user_id: str) -> KycStatus:
    with ctx.db.read() as conn:
        status = limit_status(conn, ctx.settings, user_id, CURRENCY, ctx.now())
        rows = conn.execute(
            select(kyc_applications)
            .where(kyc_applications.c.user_id == user_id)
            .order_by(kyc_applications.c.created_at.desc(), kyc_applications.c.id.desc())
            .limit(20)
        ).all()
    return KycStatus(
        tier=status.tier,
        currency=CURRENCY,
        limits=status.limits,
        used_today=status.used_today,
        remaining_today=status.remaining_today,
        cooling_off=status.cooling_off,
        applications=[_application(ctx.keys, r) for r in rows],
    )


# -- input -----------------------------------------------------------------------------------------


def local_today(now_us: int) -> date:
    return (from_us(now_us) + LOCAL_OFFSET).date()


def clean_id_number(value: str, now_us: int) -> str:
    """A valid resident ID number (checksum, birth date, place code) of someone aged 16 or more,
    compacted and upper-case (`11010119900307451x` → `11010119900307451X`). Errors never echo it."""
    if not isinstance(value, str) or not value.strip() or len(value) > 32 or not value.isascii():
        raise InvalidInput("id_number must be an 18-character resident ID number", field="id_number")
    number = "".join(value.split()).replace("-", "").upper()
    if not ric.is_valid(number):
        raise InvalidInput(
            "id_number is not a valid resident ID number", field="id_number", reason="invalid_id_number"
        )
    birth = ric.get_birth_date(number)
    today = local_today(now_us)
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    if birth > today or age > MAX_AGE_YEARS:
        raise InvalidInput(
            "id_number has an impossible birth date", field="id_number", reason="invalid_birth_date"
        )
    if age < MIN_AGE_YEARS:
        raise InvalidInput(
            f"identity verification needs an age of at least {MIN_AGE_YEARS}",
            field="id_number",
            reason="too_young",
        )
    return str(number)


def clean_account_number(value: str) -> str:
    """12 to 19 ASCII digits (spaces and dashes ignored) with a valid Luhn check digit."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidInput("account_number must be 12 to 19 digits", field="account_number")
    digits = "".join(value.split()).replace("-", "")
    if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
        raise InvalidInput("account_number must be 12 to 19 digits", field="account_number")
    if not luhn.is_valid(digits):
        raise InvalidInput(
            "account_number fails its check digit", field="account_number", reason="invalid_check_digit"
        )
    return digits


def clean_note(note: str | None) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH or not note.isprintable():
        raise InvalidInput(f"note must be up to {MAX_NOTE_LENGTH} printable characters", field="note")
    return note.strip() or None


# -- use cases -------------------------------------------------------------------------------------


def _user_id(principal: Principal) -> str:
    if principal.user_id is None:
        raise InvalidInput("this operation needs a user")
    return principal.user_id


def _actor(principal: Principal, info: RequestInfo) -> audit.Actor:
    return audit.Actor(
        principal.kind.value,
        principal.id,
        ip=info.ip,
        device_id=principal.device_id,
        session_id=principal.session_id,
    )


def _current_tier(ctx: IdentityContext, user_id: str) -> int:
    with ctx.db.read() as conn:
        return int(credential_row(conn, user_id).kyc_tier)


def sync_balance_caps(ctx: IdentityContext, conn: Connection, user_id: str) -> int | None:
    """Set every wallet's ledger ceiling to the user's balance cap now in force (after a tier change)."""
    _tier, limits, _cooling = limits_for(conn, ctx.settings, user_id, ctx.now())
    for wallet_id in wallet_ids_of(conn, user_id):
        ctx.ledger.set_balance_ceiling_in(conn, wallet_id, limits.balance_cap)
    return limits.balance_cap


def _change_tier(
    ctx: IdentityContext,
    uow: UnitOfWork,
    *,
    user_id: str,
    from_tier: int,
    to_tier: int,
    actor: audit.Actor,
    application_id: str,
    values: Mapping[str, Any] | None = None,
) -> None:
    now = ctx.now()
    conn = uow.conn
    conn.execute(
        update(users).where(users.c.id == user_id).values(kyc_tier=to_tier, updated_at=now, **(values or {}))
    )
    sync_balance_caps(ctx, conn, user_id)
    details = {"from_tier": from_tier, "to_tier": to_tier, "application_id": application_id}
    audit.record(conn, now, "kyc.tier_changed", actor, subject_user_id=user_id, details=details)
    uow.emit(OutboxEvent("kyc.tier_changed", "user", user_id, {"user_id": user_id, **details}))


def _encrypt(ctx: IdentityContext, value: str | None, column: str) -> str | None:
    if value is None:
        return None
    return ctx.keys.encrypt(value, context=context("kyc_applications", column))


def _record_rejection(
    ctx: IdentityContext,
    user_id: str,
    actor: audit.Actor,
    *,
    target_tier: int,
    reason: str,
    name: str | None = None,
    id_number: str | None = None,
    account_number: str | None = None,
) -> None:
    """A declined verification is kept (encrypted) for fraud review and audited; in its own transaction."""
    now = ctx.now()
    application_id = new_id("kyc")
    with ctx.db.write() as conn:
        conn.execute(
            insert(kyc_applications).values(
                id=application_id,
                user_id=user_id,
                target_tier=target_tier,
                status="rejected",
                name_cipher=_encrypt(ctx, name, "name_cipher"),
                id_number_cipher=_encrypt(ctx, id_number, "id_number_cipher"),
                account_number_cipher=_encrypt(ctx, account_number, "account_number_cipher"),
                reason=reason,
                created_at=now,
                decided_at=now,
                decided_by=SYSTEM_DECIDER,
            )
        )
        audit.record(
            conn,
            now,
            "kyc.rejected",
            actor,
            subject_user_id=user_id,
            outcome="failure",
            details={"application_id": application_id, "target_tier": target_tier, "reason": reason},
        )


def _lock_id_number(conn: Connection, index: str) -> None:
    """Serialise verifications of one ID number, so two accounts cannot both claim it at once. (SQLite's
    write lock already serialises every writer; PostgreSQL takes a transaction-scoped advisory lock.)"""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"kyc:{index}".encode()).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def verify_identity(
    ctx: IdentityContext,
    principal: Principal,
    *,
    name: str,
    id_number: str,
    info: RequestInfo,
    ports: KycPorts | None = None,
) -> KycStatus:
    """Tier 4 → 3: the real name and resident ID number, checked by the name/ID verifier."""
    user_id = _user_id(principal)
    clean = clean_name(name)
    number = clean_id_number(id_number, ctx.now())
    ports = ports or ports_for(ctx.settings)
    tier = _current_tier(ctx, user_id)
    if tier <= IDENTITY_TIER:
        raise Conflict("the identity is already verified", kyc_tier=tier)
    actor = _actor(principal, info)
    if not ports.name_id.matches(clean, number):
        _record_rejection(
            ctx,
            user_id,
            actor,
            target_tier=IDENTITY_TIER,
            reason="name_id_mismatch",
            name=clean,
            id_number=number,
        )
        raise KycRejected("the name does not match the ID number", reason="name_id_mismatch")
    index = ctx.keys.digest(ID_NUMBER, number)
    try:
        with ctx.uow() as uow:
            conn = uow.conn
            _lock_id_number(conn, index)
            tier = int(credential_row(conn, user_id, lock=True).kyc_tier)
            if tier <= IDENTITY_TIER:
                raise Conflict("the identity is already verified", kyc_tier=tier)
            taken = conn.execute(
                select(users.c.id).where(users.c.id_number_index == index, users.c.id != user_id).limit(1)
            ).first()
            if taken is not None:
                raise IdNumberInUse("this ID number is already verified for another account")
            now = ctx.now()
            application_id = new_id("kyc")
            conn.execute(
                insert(kyc_applications).values(
                    id=application_id,
                    user_id=user_id,
                    target_tier=IDENTITY_TIER,
                    status="approved",
                    name_cipher=_encrypt(ctx, clean, "name_cipher"),
                    id_number_cipher=_encrypt(ctx, number, "id_number_cipher"),
                    created_at=now,
                    decided_at=now,
                    decided_by=SYSTEM_DECIDER,
                )
            )
            _change_tier(
                ctx,
                uow,
                user_id=user_id,
                from_tier=tier,
                to_tier=IDENTITY_TIER,
                actor=actor,
                application_id=application_id,
                values={
                    "name_cipher": ctx.keys.encrypt(clean, context=context("users", "name_cipher")),
                    "id_number_cipher": ctx.keys.encrypt(
                        number, context=context("users", "id_number_cipher")
                    ),
                    "id_number_index": index,
                },
            )
            uow.commit()
    except IdNumberInUse:
        _record_rejection(
            ctx,
            user_id,
            actor,
            target_tier=IDENTITY_TIER,
            reason="id_number_in_use",
            name=clean,
            id_number=number,
        )
        raise
    return kyc_status(ctx, user_id)


def verify_bank_account(
    ctx: IdentityContext,
    principal: Principal,
    *,
    account_number: str,
    account_name: str,
    info: RequestInfo,
    ports: KycPorts | None = None,
    step_up_header: str | None = None,
) -> KycStatus:
    """Tier 3 → 2: a bank account held in the verified real name. Adding a bank account needs step-up."""
    user_id = _user_id(principal)
    digits = clean_account_number(account_number)
    try:
        holder = clean_name(account_name)
    except InvalidInput as exc:
        raise InvalidInput(exc.detail.replace("name", "account_name", 1), field="account_name") from exc
    ports = ports or ports_for(ctx.settings)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
    tier = int(row.kyc_tier)
    if tier > IDENTITY_TIER or row.id_number_cipher is None:
        raise Conflict("verify your identity (name and ID number) first", next_step="verify_identity")
    if tier <= BANK_ACCOUNT_TIER:
        raise Conflict("a bank account is already verified", kyc_tier=tier)
    real_name = ctx.keys.decrypt(str(row.name_cipher), context=context("users", "name_cipher"))
    number = ctx.keys.decrypt(str(row.id_number_cipher), context=context("users", "id_number_cipher"))
    actor = _actor(principal, info)
    reason = "account_name_mismatch" if holder != real_name else None
    proof = None
    if reason is None:
        # Checked after the cheap refusals, so a doomed request never asks for a challenge.
        facts = StepUpFacts(Operation.ADD_BANK_ACCOUNT, device_trusted=principal.device_trusted)
        proof = stepup.require_step_up(
            ctx,
            principal,
            operation=Operation.ADD_BANK_ACCOUNT,
            params={
                "account": ctx.keys.digest("account_number", digits),
                "holder": ctx.keys.digest("name", holder),
            },
            reasons=ctx.step_up_policy.reasons(facts),
            step_up_header=step_up_header,
        )
        if not ports.bank_account.verify(account_number=digits, account_name=holder, id_number=number):
            reason = "bank_account_rejected"
    if reason is not None:
        _record_rejection(
            ctx,
            user_id,
            actor,
            target_tier=BANK_ACCOUNT_TIER,
            reason=reason,
            name=holder,
            account_number=digits,
        )
        raise KycRejected("the bank account could not be verified in your verified name", reason=reason)
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, proof)
        tier = int(credential_row(conn, user_id, lock=True).kyc_tier)
        if tier != IDENTITY_TIER:
            raise Conflict("the KYC tier changed meanwhile: reload and try again", kyc_tier=tier)
        now = ctx.now()
        application_id = new_id("kyc")
        conn.execute(
            insert(kyc_applications).values(
                id=application_id,
                user_id=user_id,
                target_tier=BANK_ACCOUNT_TIER,
                status="approved",
                name_cipher=_encrypt(ctx, holder, "name_cipher"),
                account_number_cipher=_encrypt(ctx, digits, "account_number_cipher"),
                created_at=now,
                decided_at=now,
                decided_by=SYSTEM_DECIDER,
            )
        )
        _change_tier(
            ctx,
            uow,
            user_id=user_id,
            from_tier=tier,
            to_tier=BANK_ACCOUNT_TIER,
            actor=actor,
            application_id=application_id,
        )
        uow.commit()
    return kyc_status(ctx, user_id)


def apply_enhanced(ctx: IdentityContext, principal: Principal, info: RequestInfo) -> Application:
    """Tier 2 → 1 is not automatic: this files an application that an operator reviews."""
    user_id = _user_id(principal)
    with ctx.uow() as uow:
        conn = uow.conn
        tier = int(credential_row(conn, user_id, lock=True).kyc_tier)
        if tier == ENHANCED_TIER:
            raise Conflict("enhanced verification is already done", kyc_tier=tier)
        if tier != BANK_ACCOUNT_TIER:
            raise Conflict("verify a bank account first", kyc_tier=tier, next_step="verify_bank_account")
        pending = conn.execute(
            select(kyc_applications.c.id).where(
                kyc_applications.c.user_id == user_id,
                kyc_applications.c.target_tier == ENHANCED_TIER,
                kyc_applications.c.status == "pending",
            )
        ).first()
        if pending is not None:
            raise Conflict(
                "an enhanced verification application is already under review", application_id=pending.id
            )
        now = ctx.now()
        application_id = new_id("kyc")
        conn.execute(
            insert(kyc_applications).values(
                id=application_id,
                user_id=user_id,
                target_tier=ENHANCED_TIER,
                status="pending",
                created_at=now,
            )
        )
        audit.record(
            conn,
            now,
            "kyc.application_submitted",
            _actor(principal, info),
            subject_user_id=user_id,
            details={"application_id": application_id, "target_tier": ENHANCED_TIER},
        )
        uow.emit(
            OutboxEvent(
                "kyc.application_submitted",
                "kyc_application",
                application_id,
                {"application_id": application_id, "user_id": user_id, "target_tier": ENHANCED_TIER},
            )
        )
        row = conn.execute(select(kyc_applications).where(kyc_applications.c.id == application_id)).one()
        uow.commit()
    return _application(ctx.keys, row)


def list_applications(
    ctx: IdentityContext, *, status: str | None, limit: int = 20, cursor: str | None = None
) -> tuple[list[Application], str | None]:
    """The review queue, oldest first; `cursor` is the last id of the previous page."""
    if status is not None and status not in KYC_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(KYC_STATUSES)}", field="status")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    query = select(kyc_applications).order_by(kyc_applications.c.id).limit(limit + 1)
    if status is not None:
        query = query.where(kyc_applications.c.status == status)
    if cursor:
        if not _APPLICATION_ID.fullmatch(cursor):
            raise InvalidInput("cursor is not valid", field="cursor")
        query = query.where(kyc_applications.c.id > cursor)
    with ctx.db.read() as conn:
        rows = conn.execute(query).all()
    page = [_application(ctx.keys, r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


def decide_application(
    ctx: IdentityContext,
    operator: Principal,
    application_id: str,
    *,
    approve: bool,
    note: str | None,
    info: RequestInfo,
) -> Application:
    """An operator approves (tier 1: no limits, no balance cap) or rejects an enhanced application.

    Any operator may decide for now; role checks arrive with operator roles."""
    note = clean_note(note)
    if not isinstance(application_id, str) or not _APPLICATION_ID.fullmatch(application_id):
        raise NotFound("no such application")
    actor = _actor(operator, info)
    with ctx.uow() as uow:
        conn = uow.conn
        row = conn.execute(
            select(kyc_applications).where(kyc_applications.c.id == application_id).with_for_update()
        ).first()
        if row is None:
            raise NotFound("no such application")
        if row.status != "pending":
            raise Conflict(f"the application was already {row.status}", application_status=row.status)
        user_id = str(row.user_id)
        tier = int(credential_row(conn, user_id, lock=True).kyc_tier)
        now = ctx.now()
        if approve:
            if tier != BANK_ACCOUNT_TIER or int(row.target_tier) != ENHANCED_TIER:
                raise Conflict(
                    "the user's tier changed since the application: it cannot be approved", kyc_tier=tier
                )
            _change_tier(
                ctx,
                uow,
                user_id=user_id,
                from_tier=tier,
                to_tier=ENHANCED_TIER,
                actor=actor,
                application_id=application_id,
            )
        conn.execute(
            update(kyc_applications)
            .where(kyc_applications.c.id == application_id)
            .values(
                status="approved" if approve else "rejected",
                reason=note,
                decided_at=now,
                decided_by=operator.id,
            )
        )
        details = {"application_id": application_id, "approved": approve, "target_tier": int(row.target_tier)}
        audit.record(conn, now, "kyc.application_decided", actor, subject_user_id=user_id, details=details)
        uow.emit(
            OutboxEvent(
                "kyc.application_decided", "kyc_application", application_id, {"user_id": user_id, **details}
            )
        )
        decided = conn.execute(select(kyc_applications).where(kyc_applications.c.id == application_id)).one()
        uow.commit()
    return _application(ctx.keys, decided)

"""KYC tiers, modelled on the e-CNY wallet: 4 (phone only) → 3 (name and ID number) → 2 (a bank account in
that name) → 1 (enhanced verification, reviewed by an operator). Each tier's limits are `settings.kyc_tiers`.

This module holds the user-facing flows and status: verifying identity (→ 3) and a bank account (→ 2),
filing the enhanced application (→ 1), and the caller's tier, limits and applications. Outside checks are
ports (`identity/kyc_ports.py`, sandbox adapters there) called before the unit of work. The tier change
and the `kyc_applications` records are in `identity/kyc_records.py` (shared with operator review,
`identity/kyc_review.py`). Personal data is stored encrypted (blind index for the ID number) and shown
masked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, insert, select, text
from stdnum import luhn
from stdnum.cn import ric

from qianbao import invalid
from qianbao.clock import from_us
from qianbao.errors import Conflict, InvalidInput
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import IdNumberInUse, KycRejected
from qianbao.identity.kyc_ports import KycPorts, ports_for
from qianbao.identity.kyc_records import (
    BANK_ACCOUNT_TIER,
    ENHANCED_TIER,
    IDENTITY_TIER,
    Application,
    actor_of,
    application_view,
    change_tier,
    insert_decided_application,
    record_rejection,
)
from qianbao.identity.limits import LOCAL_OFFSET, limit_status
from qianbao.identity.model import Operation, Principal, RequestInfo, StepUpFacts, TierLimits
from qianbao.identity.signup import clean_name
from qianbao.identity.tables import kyc_applications, users
from qianbao.identity.users import ID_NUMBER, credential_row
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.store.outbox import OutboxEvent

MIN_AGE_YEARS = 16  # resident ID cards are compulsory from 16; younger people cannot verify here
MAX_AGE_YEARS = 130
CURRENCY = "CNY"  # tier limits are CNY amounts


# -- status ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KycStatus:
    tier: int
    currency: str
    limits: TierLimits
    used_today: int
    remaining_today: int | None
    cooling_off: bool
    applications: list[Application]


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
        applications=[application_view(ctx.keys, r) for r in rows],
    )


# -- input -----------------------------------------------------------------------------------------


def local_today(now_us: int) -> date:
    return (from_us(now_us) + LOCAL_OFFSET).date()


def clean_id_number(value: str, now_us: int) -> str:
    """A valid resident ID number (checksum, birth date, place code) of someone aged 16 or more,
    compacted and upper-case (`11010119900307451x` → `11010119900307451X`). Errors never echo it."""
    if not isinstance(value, str) or not value.strip() or len(value) > 32 or not value.isascii():
        raise invalid.because(
            "id_number", "id_number must be an 18-character resident ID number", field="id_number"
        )
    number = "".join(value.split()).replace("-", "").upper()
    if not ric.is_valid(number):
        raise invalid.because(
            "id_number",
            "id_number is not a valid resident ID number",
            field="id_number",
            reason="invalid_id_number",
        )
    birth = ric.get_birth_date(number)
    today = local_today(now_us)
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    if birth > today or age > MAX_AGE_YEARS:
        raise invalid.because(
            "birth_date",
            "id_number has an impossible birth date",
            field="id_number",
            reason="invalid_birth_date",
        )
    if age < MIN_AGE_YEARS:
        raise invalid.because(
            "too_young",
            f"identity verification needs an age of at least {MIN_AGE_YEARS}",
            field="id_number",
            params={"years": MIN_AGE_YEARS},
            reason="too_young",
        )
    return str(number)


def clean_account_number(value: str) -> str:
    """12 to 19 ASCII digits (spaces and dashes ignored) with a valid Luhn check digit."""
    if not isinstance(value, str) or len(value) > 40:
        raise _card_digits()
    digits = "".join(value.split()).replace("-", "")
    if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
        raise _card_digits()
    if not luhn.is_valid(digits):
        raise invalid.because(
            "check_digit",
            "account_number fails its check digit",
            field="account_number",
            reason="invalid_check_digit",
        )
    return digits


def _card_digits() -> InvalidInput:
    return invalid.because(
        "digits_count",
        "account_number must be 12 to 19 digits",
        field="account_number",
        params={"min": 12, "max": 19},
    )


# -- use cases -------------------------------------------------------------------------------------


def _user_id(principal: Principal) -> str:
    if principal.user_id is None:
        raise invalid.needs_user()
    return principal.user_id


def _current_tier(ctx: IdentityContext, user_id: str) -> int:
    with ctx.db.read() as conn:
        return int(credential_row(conn, user_id).kyc_tier)


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
    actor = actor_of(principal, info)
    if not ports.name_id.matches(clean, number):
        record_rejection(
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
            application_id = insert_decided_application(
                ctx, conn, user_id=user_id, target_tier=IDENTITY_TIER, status="approved", now=now,
                name=clean, id_number=number,
            )  # fmt: skip
            change_tier(
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
        record_rejection(
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
        raise invalid.renamed(exc, "account_name") from exc
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
    actor = actor_of(principal, info)
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
        record_rejection(
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
        application_id = insert_decided_application(
            ctx, conn, user_id=user_id, target_tier=BANK_ACCOUNT_TIER, status="approved", now=now,
            name=holder, account_number=digits,
        )  # fmt: skip
        change_tier(
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
            actor_of(principal, info),
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
    return application_view(ctx.keys, row)

"""Recovering an account whose phone number is lost, and resetting the password, both signed out.

- **Lost old number**: a code sent to the new number, the ID number on file (only users who passed tier-3
  KYC have one), the payment PIN and a second factor (a TOTP code or a recovery code). Every session ends,
  every device becomes unknown again, and the account cools off (see `identity/number_change.py`).
  Whatever fails, the answer is the same `recovery_not_possible` (the audit log records the real reason for
  operators), so the endpoint tells a stranger nothing about an ID number. The second factor is checked
  *before* the PIN, so that a stranger who knows someone's ID number cannot lock their PIN by guessing.
- **Password reset**: a `password_reset` code and, when TOTP is enrolled, a second factor. Every session
  ends.

Changing the number while signed in is `identity/phone_change.py`.

SQLite rule: every check that counts (codes, TOTP, PIN) runs in its own short transaction before the
operation's unit of work opens; failures are audited after it, never inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from qianbao import invalid
from qianbao.errors import InvalidInput, Locked
from qianbao.identity import pin as pins
from qianbao.identity import proofs
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import (
    PhoneTaken,
    RecoveryNotPossible,
    SecondFactorInvalid,
    SecondFactorRequired,
    VerificationFailed,
)
from qianbao.identity.model import RequestInfo
from qianbao.identity.number_change import PhoneChanged, clean_new_phone, notify_phone_changed, set_phone
from qianbao.identity.phones import normalise_phone
from qianbao.identity.sessions import revoke_all_sessions
from qianbao.identity.signup import check_code, check_password, send_code, use_code
from qianbao.identity.sms_quota import count_sms
from qianbao.identity.tables import devices, recovery_codes, users
from qianbao.identity.totp import hash_recovery_code
from qianbao.identity.users import ID_NUMBER, credential_row, find_user_id_by_phone, has_passkeys
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.masking import mask_phone
from qianbao.store.outbox import OutboxEvent

SECOND_FACTOR_METHODS = ("totp", "recovery_code")
MAX_ID_NUMBER_LENGTH = 32
# Recovery attempts are limited per IP and per ID number. They borrow the failed-sign-in rules' limits
# (10 per account and 50 per IP in 15 minutes) under their own identifiers, so the counts are separate.
RECOVERY_ID_RULE = "recovery_id"
RECOVERY_IP_RULE = "recovery_ip"
GENERIC_FAILURE = "identity verification failed"

_RECOVERY_TEXT = (
    "您正在找回钱包账户，验证码 {code}，{minutes} 分钟内有效，请勿告诉他人。"
    " Your qianbao account recovery code is {code}."
)


@dataclass(frozen=True, slots=True)
class SecondFactorProof:
    """A second factor sent with a recovery or reset: `method` is "totp" or "recovery_code"."""

    method: str
    code: str


@dataclass(frozen=True, slots=True)
class PasswordReset:
    user_id: str
    sessions_revoked: int


class _Refused(Exception):
    """Internal: a recovery check failed (`reason` goes to the audit log only)."""

    def __init__(self, reason: str, user_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_id = user_id


# --- input ------------------------------------------------------------------------------------------------


def normalise_id_number(text: object) -> str:
    """An ID number as the blind index expects it: upper-case, without spaces or dashes."""
    if not isinstance(text, str):
        raise invalid.not_text("id_number")
    cleaned = "".join(text.split()).replace("-", "").upper()  # as KYC stores it (identity/kyc.py)
    if not 1 <= len(cleaned) <= MAX_ID_NUMBER_LENGTH or not (cleaned.isascii() and cleaned.isalnum()):
        raise invalid.because(
            "id_number",
            f"id_number must be 1 to {MAX_ID_NUMBER_LENGTH} letters and digits",
            field="id_number",
        )
    return cleaned


def _second_factor(proof: SecondFactorProof) -> SecondFactorProof:
    if proof.method not in SECOND_FACTOR_METHODS:
        raise invalid.one_of("second_factor.method", SECOND_FACTOR_METHODS)
    if not isinstance(proof.code, str) or not proof.code or len(proof.code) > 64:
        raise invalid.required("second_factor.code")
    return proof


# --- second factors ---------------------------------------------------------------------------------------


def _recovery_code_usable(conn: Connection, user_id: str, code: str) -> bool:
    found = conn.execute(
        select(recovery_codes.c.code_hash).where(
            recovery_codes.c.user_id == user_id,
            recovery_codes.c.code_hash == hash_recovery_code(code),
            recovery_codes.c.used_at.is_(None),
        )
    ).first()
    return found is not None


def _spend_recovery_code(conn: Connection, user_id: str, code: str, now: int) -> bool:
    """Mark a recovery code used in the caller's transaction; False if it was used meanwhile."""
    done = conn.execute(
        update(recovery_codes)
        .where(
            recovery_codes.c.user_id == user_id,
            recovery_codes.c.code_hash == hash_recovery_code(code),
            recovery_codes.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return int(done.rowcount) == 1


def _second_factor_ok(ctx: IdentityContext, user_id: str, proof: SecondFactorProof) -> bool:
    """Check (not spend) a second factor. A TOTP step is remembered at once (its own transaction); a
    recovery code is spent later, in the operation's unit of work."""
    if proof.method == "totp":
        return proofs.check_totp(ctx, user_id, proof.code)
    with ctx.db.read() as conn:
        return _recovery_code_usable(conn, user_id, proof.code)


# --- lost old number (signed out) ---------------------------------------------------------------------


def request_recovery_code(ctx: IdentityContext, new_phone_text: str, info: RequestInfo) -> None:
    """`POST /v1/recovery/phone`: a code to the new number (a notice instead if it has an account).

    Always the same answer, so it reveals nothing about who is registered."""
    new_phone = clean_new_phone(new_phone_text)
    count_sms(ctx.limiter, "recovery_new_phone", new_phone, info.ip)
    with ctx.uow() as uow:
        existing = find_user_id_by_phone(uow.conn, ctx.keys, new_phone)
        if existing is not None:
            ctx.notifier.send(
                uow.conn,
                to=new_phone,
                template="recovery.number_registered",
                user_id=existing,
                text="【钱包 qianbao】本号码已注册钱包账户，不能用于找回其他账户。如非本人操作请忽略。"
                " This number already has a qianbao account, so it cannot be used to recover another one.",
            )
        else:
            send_code(ctx, uow.conn, new_phone, "recovery_new_phone", template_text=_RECOVERY_TEXT)
        audit.record(
            uow.conn,
            ctx.now(),
            "phone.recovery_code_requested",
            audit.Actor("anonymous", ip=info.ip),
            details={"new_phone": mask_phone(new_phone)},
        )
        uow.commit()


def recover_phone(
    ctx: IdentityContext,
    *,
    id_number: str,
    new_phone_text: str,
    new_code: str,
    pin: str,
    second_factor: SecondFactorProof,
    info: RequestInfo,
) -> PhoneChanged:
    """`POST /v1/recovery/phone/confirm`: identity re-verified → the account moves to the new number.

    Raises RecoveryNotPossible (one message for every failure) after auditing the real reason."""
    clean_id = normalise_id_number(id_number)
    new_phone = clean_new_phone(new_phone_text)
    pins.check_pin_format(pin)  # a typing slip is said as such; only a six-digit PIN can count
    proof = _second_factor(second_factor)
    id_index = ctx.keys.digest(ID_NUMBER, clean_id)
    if info.ip:
        ctx.limiter.hit(RECOVERY_IP_RULE, "recovery", info.ip)
    ctx.limiter.hit(RECOVERY_ID_RULE, "recovery", id_index)
    try:
        return _recover(ctx, id_index, new_phone, new_code, pin, proof, info)
    except _Refused as refused:
        with ctx.db.write() as conn:
            audit.record(
                conn,
                ctx.now(),
                "phone.recovered",
                audit.Actor("anonymous", ip=info.ip),
                subject_user_id=refused.user_id,
                outcome="failure",
                details={
                    "reason": refused.reason,
                    "new_phone": mask_phone(new_phone),
                    "second_factor": proof.method,
                },
            )
        raise RecoveryNotPossible(GENERIC_FAILURE) from None


def _recover(
    ctx: IdentityContext,
    id_index: str,
    new_phone: str,
    new_code: str,
    pin: str,
    proof: SecondFactorProof,
    info: RequestInfo,
) -> PhoneChanged:
    # 1. The new number is in the requester's hands.
    try:
        verification_id = check_code(ctx, new_phone, "recovery_new_phone", new_code)
    except VerificationFailed:
        raise _Refused("new_phone_code") from None
    # 2. Whose identity this is: exactly one open account that completed tier-3 KYC.
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(users.c.id, users.c.kyc_tier, users.c.status).where(users.c.id_number_index == id_index)
        ).all()
        open_rows = [r for r in rows if r.status != "closed"]
        taken = find_user_id_by_phone(conn, ctx.keys, new_phone)
        row = open_rows[0] if len(open_rows) == 1 else None
        enrolled = row is not None and (
            credential_row(conn, row.id).totp_enabled_at is not None
            or proofs.unused_recovery_codes(conn, row.id) > 0
        )
    if row is None:
        ctx.hasher.dummy_verify(pin)  # about as slow as a real PIN check
        raise _Refused("identity_unknown" if not open_rows else "identity_ambiguous")
    user_id = str(row.id)
    if row.kyc_tier > 3 or row.status != "active":
        raise _Refused("not_eligible", user_id)
    if taken is not None:
        raise _Refused("new_phone_taken", user_id)
    if not enrolled:
        raise _Refused("no_second_factor", user_id)
    # 3. The second factor before the PIN: only someone holding it can make the PIN count (and lock).
    if not _second_factor_ok(ctx, user_id, proof):
        raise _Refused("second_factor", user_id)
    # 4. The payment PIN, with its lockout.
    try:
        pin_ok = pins.verify_pin(ctx, user_id, pin).correct
    except Locked:
        raise _Refused("pin_locked", user_id) from None
    except InvalidInput:
        raise _Refused("no_pin", user_id) from None
    if not pin_ok:
        raise _Refused("pin", user_id)
    now = ctx.now()
    try:
        with ctx.uow() as uow:
            conn = uow.conn
            try:
                use_code(conn, verification_id, now)
            except VerificationFailed:
                raise _Refused("new_phone_code", user_id) from None
            if proof.method == "recovery_code" and not _spend_recovery_code(conn, user_id, proof.code, now):
                raise _Refused("second_factor", user_id)
            current = credential_row(conn, user_id)
            old_phone = ctx.keys.decrypt(current.phone_cipher, context=context("users", "phone_cipher"))
            until = set_phone(ctx, conn, user_id, new_phone, now)
            revoked = revoke_all_sessions(conn, user_id, now, except_session=None, reason="phone_recovered")
            # The lost phone may be in someone else's hands: no device stays trusted.
            conn.execute(
                update(devices)
                .where(devices.c.user_id == user_id, devices.c.trusted_at.is_not(None))
                .values(trusted_at=None)
            )
            notify_phone_changed(ctx, conn, user_id, old_phone, new_phone, recovered=True)
            audit.record(
                conn,
                now,
                "phone.recovered",
                audit.Actor("anonymous", ip=info.ip),
                subject_user_id=user_id,
                details={
                    "old_phone": mask_phone(old_phone),
                    "new_phone": mask_phone(new_phone),
                    "second_factor": proof.method,
                    "sessions_revoked": revoked,
                    "cooling_off_until": until,
                },
            )
            uow.emit(
                OutboxEvent(
                    "user.phone_changed",
                    "user",
                    user_id,
                    {"user_id": user_id, "cooling_off_until": until, "recovered": True},
                )
            )
            uow.commit()
    except PhoneTaken:
        raise _Refused("new_phone_taken", user_id) from None
    return PhoneChanged(user_id, mask_phone(new_phone), until, revoked)


# --- password reset (signed out) ----------------------------------------------------------------------


def reset_password(
    ctx: IdentityContext,
    *,
    phone_text: str,
    code: str,
    new_password: str,
    second_factor: SecondFactorProof | None,
    info: RequestInfo,
) -> PasswordReset:
    """`POST /v1/recovery/password`: a `password_reset` code (+ a second factor if TOTP is enrolled)."""
    phone = normalise_phone(phone_text)
    if not isinstance(new_password, str) or not new_password:
        raise invalid.required("new_password")
    proof = None if second_factor is None else _second_factor(second_factor)
    verification_id = check_code(ctx, phone, "password_reset", code)
    with ctx.db.read() as conn:
        user_id = find_user_id_by_phone(conn, ctx.keys, phone)
        row = None if user_id is None else credential_row(conn, user_id)
    if user_id is None or row is None or row.status == "closed":
        # Codes go only to registered numbers: this one lost its account since.
        raise VerificationFailed("no valid code: ask for a new one", field="code")
    if row.totp_enabled_at is not None and proof is None:
        raise SecondFactorRequired(
            "this account has a second factor: send second_factor (totp or recovery_code)",
            methods=list(SECOND_FACTOR_METHODS),
        )
    if row.totp_enabled_at is None:
        with ctx.db.read() as conn:
            passkey_only = has_passkeys(conn, user_id)
        if passkey_only:
            # The SMS code alone is not enough where a passkey is enrolled; a passkey signs in without
            # the password, and PUT /v1/me/password then sets a new one.
            raise SecondFactorRequired(
                "this account has a passkey: sign in with it, then use PUT /v1/me/password",
                methods=["passkey"],
            )
    # The second factor comes before the password policy: the policy's answer (e.g. that the password
    # contains the user's name) must not be an oracle for someone who holds only the phone.
    if proof is not None and not _second_factor_ok(ctx, user_id, proof):
        with ctx.db.write() as conn:
            audit.record(
                conn,
                ctx.now(),
                "password.reset",
                audit.Actor("anonymous", ip=info.ip),
                subject_user_id=user_id,
                outcome="failure",
                details={"reason": "second_factor", "second_factor": proof.method},
            )
        raise SecondFactorInvalid("the second factor is not correct", method=proof.method)
    name = ctx.keys.decrypt(row.name_cipher, context=context("users", "name_cipher"))
    try:
        check_password(new_password, phone=phone, name=name)
    except InvalidInput as exc:
        exc.extra["field"] = "new_password"
        raise
    password_hash = ctx.hasher.hash(new_password)
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        use_code(conn, verification_id, now)
        if proof is not None and proof.method == "recovery_code":
            if not _spend_recovery_code(conn, user_id, proof.code, now):
                raise SecondFactorInvalid("the recovery code was already used", method=proof.method)
        conn.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash, updated_at=now)
        )
        revoked = revoke_all_sessions(conn, user_id, now, except_session=None, reason="password_reset")
        ctx.notifier.send(
            conn,
            to=phone,
            template="security.password_reset",
            user_id=user_id,
            text="【钱包 qianbao】您的登录密码已重置，所有设备已退出登录。如非本人操作，请立即联系客服。"
            " Your qianbao password was reset and every device was signed out."
            " If this wasn't you, contact customer service now.",
        )
        audit.record(
            conn,
            now,
            "password.reset",
            audit.Actor("user", user_id, ip=info.ip),
            subject_user_id=user_id,
            details={"second_factor": None if proof is None else proof.method, "sessions_revoked": revoked},
        )
        uow.commit()
    # Earlier failed sign-ins no longer matter: the password they guessed at is gone.
    ctx.limiter.reset("password_account", phone)
    return PasswordReset(user_id, revoked)

"""TOTP as a second factor: enrolling an authenticator app, confirming it, turning it off, and the recovery
codes that come with it.

Enrolment takes two steps: `start_totp_enrolment` stores a pending secret (encrypted, not yet in force) and
shows it as text, otpauth:// URI and QR code; `confirm_totp` enables it with a code from the app and answers
a set of single-use recovery codes, shown once. The first factor needs no step-up; anything else follows
the change rules in `identity/second_factors.py` (step-up bound to the action, audit, SMS).

Secrets: the TOTP secret is stored encrypted, recovery codes only as hashes (`hash_recovery_code`), and
neither ever reaches the audit log, the outbox or an idempotency record. The codes are spent elsewhere:
by step-up (`identity/stepup.py`) and by lost-number recovery and password reset (`identity/recovery.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, update

from qianbao.errors import Conflict, NotFound
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import SecondFactorInvalid
from qianbao.identity.model import Principal, RequestInfo
from qianbao.identity.second_factors import (
    PHONE,
    actor_of,
    check_still_no_second_factor,
    first_enrolment_step_up,
    notify,
    step_up_for,
    user_id_of,
)
from qianbao.identity.tables import recovery_codes, users
from qianbao.identity.totp import (
    hash_recovery_code,
    new_recovery_codes,
    new_totp_secret,
    provisioning_qr_svg,
    provisioning_uri,
    verify_totp,
)
from qianbao.identity.users import credential_row, has_passkeys
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.masking import mask_phone

TOTP_SECRET = context("users", "totp_secret_cipher")


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    secret: str
    otpauth_uri: str
    qr_svg: str


def _replace_recovery_codes(conn: Connection, user_id: str, codes: list[str], now: int) -> None:
    conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    conn.execute(
        insert(recovery_codes),
        [{"user_id": user_id, "code_hash": hash_recovery_code(c), "created_at": now} for c in codes],
    )


def start_totp_enrolment(
    ctx: IdentityContext, principal: Principal, info: RequestInfo, step_up_header: str | None
) -> TotpEnrolment:
    """A new pending TOTP secret (stored encrypted, not yet enabled) for the user's authenticator app.

    When the account already has a second factor this is a security change: it needs step-up, and an
    enabled TOTP is switched off (with its recovery codes) until the new secret is confirmed."""
    user_id = user_id_of(principal)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
        passkey = has_passkeys(conn, user_id)
    enabled = row.totp_enabled_at is not None
    if enabled or passkey:
        step_up = step_up_for(ctx, principal, {"action": "totp.enrol"}, step_up_header)
    else:
        step_up = first_enrolment_step_up(ctx, principal, {"action": "totp.enrol"}, step_up_header)
    secret = new_totp_secret()
    phone = ctx.keys.decrypt(row.phone_cipher, context=PHONE)
    # The label is masked: the QR code shows it and ends up in screenshots and authenticator backups.
    uri = provisioning_uri(secret, account_name=mask_phone(phone), issuer="qianbao")
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, step_up)
        if step_up is None:
            check_still_no_second_factor(conn, user_id)
        conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(
                totp_secret_cipher=ctx.keys.encrypt(secret, context=TOTP_SECRET),
                totp_enabled_at=None,
                totp_last_step=None,
                updated_at=now,
            )
        )
        actor = actor_of(principal, info)
        if enabled:
            conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
            audit.record(
                conn, now, "totp.disabled", actor, subject_user_id=user_id, details={"reason": "re_enrol"}
            )
            notify(
                ctx,
                conn,
                row,
                "security.totp_disabled",
                "您的身份验证器已被替换，新验证器确认前二次验证暂停。",
                "Your authenticator app is being replaced; two-step verification is off until you "
                "confirm the new one.",
            )
        audit.record(conn, now, "totp.enrolment_started", actor, subject_user_id=user_id)
        uow.commit()
    return TotpEnrolment(secret, uri, provisioning_qr_svg(uri))


def confirm_totp(ctx: IdentityContext, principal: Principal, code: str, info: RequestInfo) -> list[str]:
    """Enable the pending TOTP secret with a code from the app; returns a new set of recovery codes
    (shown once; stored only as hashes, replacing any older set)."""
    user_id = user_id_of(principal)
    ctx.limiter.hit("otp_verify", f"totp_confirm:{user_id}")
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
    if row.totp_enabled_at is not None:
        raise Conflict("TOTP is already enabled", reason="totp_enabled")
    if row.totp_secret_cipher is None:
        raise Conflict("no TOTP enrolment is pending: start one with POST /v1/me/totp", reason="no_enrolment")
    secret = ctx.keys.decrypt(row.totp_secret_cipher, context=TOTP_SECRET)
    now = ctx.now()
    step = verify_totp(secret, code, at_s=now / 1_000_000, last_used_step=row.totp_last_step)
    if step is None:
        raise SecondFactorInvalid(
            "the code does not match: check the app's clock and try again", method="totp"
        )
    codes = new_recovery_codes()
    with ctx.uow() as uow:
        conn = uow.conn
        done = conn.execute(
            update(users)
            .where(
                users.c.id == user_id,
                users.c.totp_enabled_at.is_(None),
                users.c.totp_secret_cipher == row.totp_secret_cipher,
            )
            .values(totp_enabled_at=now, totp_last_step=step, updated_at=now)
        )
        if done.rowcount != 1:
            raise Conflict("the TOTP enrolment changed meanwhile: start again", reason="no_enrolment")
        _replace_recovery_codes(conn, user_id, codes, now)
        audit.record(
            conn,
            now,
            "totp.enabled",
            actor_of(principal, info),
            subject_user_id=user_id,
            details={"recovery_codes": len(codes)},
        )
        notify(
            ctx,
            conn,
            row,
            "security.totp_enabled",
            "您已开启身份验证器二次验证。",
            "Two-step verification with an authenticator app is now on for your account.",
        )
        uow.commit()
    return codes


def disable_totp(
    ctx: IdentityContext, principal: Principal, info: RequestInfo, step_up_header: str | None
) -> None:
    """Turn TOTP off and delete the recovery codes (step-up); a pending enrolment is simply dropped."""
    user_id = user_id_of(principal)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
    if row.totp_secret_cipher is None:
        raise NotFound("TOTP is not set up")
    enabled = row.totp_enabled_at is not None
    step_up = step_up_for(ctx, principal, {"action": "totp.disable"}, step_up_header) if enabled else None
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, step_up)
        query = update(users).where(users.c.id == user_id, users.c.totp_secret_cipher.is_not(None))
        if not enabled:
            query = query.where(users.c.totp_enabled_at.is_(None))
        done = conn.execute(
            query.values(totp_secret_cipher=None, totp_enabled_at=None, totp_last_step=None, updated_at=now)
        )
        if done.rowcount != 1:
            raise Conflict("TOTP changed meanwhile: try again")
        actor = actor_of(principal, info)
        if enabled:
            conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
            audit.record(conn, now, "totp.disabled", actor, subject_user_id=user_id)
            notify(
                ctx,
                conn,
                row,
                "security.totp_disabled",
                "您已关闭身份验证器二次验证，恢复码已作废。",
                "Two-step verification with an authenticator app is now off; your recovery codes "
                "no longer work.",
            )
        else:
            audit.record(conn, now, "totp.enrolment_cancelled", actor, subject_user_id=user_id)
        uow.commit()


def regenerate_recovery_codes(
    ctx: IdentityContext, principal: Principal, info: RequestInfo, step_up_header: str | None
) -> list[str]:
    """A new set of recovery codes replacing the old one (step-up). They come with TOTP."""
    user_id = user_id_of(principal)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
    if row.totp_enabled_at is None:
        raise Conflict("recovery codes come with TOTP: enable TOTP first", reason="totp_not_enabled")
    step_up = step_up_for(ctx, principal, {"action": "recovery_codes.regenerate"}, step_up_header)
    codes = new_recovery_codes()
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, step_up)
        _replace_recovery_codes(conn, user_id, codes, now)
        audit.record(
            conn,
            now,
            "recovery_codes.regenerated",
            actor_of(principal, info),
            subject_user_id=user_id,
            details={"recovery_codes": len(codes)},
        )
        notify(
            ctx,
            conn,
            row,
            "security.recovery_codes_regenerated",
            "您已生成新的恢复码，旧恢复码已作废。",
            "You created new recovery codes; the old ones no longer work.",
        )
        uow.commit()
    return codes

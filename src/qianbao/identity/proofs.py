"""Checking a second factor: a TOTP code, a recovery code or a passkey assertion, for one user.

Each check records what must never be accepted twice (the TOTP time step, a spent recovery code, the
passkey's sign count) in its own short transaction. Step-up and account recovery both use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, func, select, update

from qianbao.identity import passkeys as webauthn
from qianbao.identity.context import IdentityContext
from qianbao.identity.tables import passkeys, recovery_codes, users
from qianbao.identity.totp import (
    RECOVERY_CODE_ALPHABET,
    hash_recovery_code,
    normalize_recovery_code,
    verify_totp,
)
from qianbao.identity.users import credential_row
from qianbao.security import audit
from qianbao.security.fields import context


def check_totp(ctx: IdentityContext, user_id: str, code: str) -> bool:
    """Verify a TOTP code and remember its time step (a code is never accepted twice)."""
    with ctx.db.write() as conn:
        row = credential_row(conn, user_id, lock=True)
        if row.totp_secret_cipher is None or row.totp_enabled_at is None:
            return False
        secret = ctx.keys.decrypt(row.totp_secret_cipher, context=context("users", "totp_secret_cipher"))
        step = verify_totp(secret, code, at_s=ctx.now() / 1_000_000, last_used_step=row.totp_last_step)
        if step is None:
            return False
        conn.execute(update(users).where(users.c.id == user_id).values(totp_last_step=step))
        return True


def unused_recovery_codes(conn: Connection, user_id: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(recovery_codes)
            .where(recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None))
        ).scalar_one()
    )


def check_recovery_code(ctx: IdentityContext, user_id: str, code: str) -> bool:
    """Spend one of the user's recovery codes (each works once); audited and notified by SMS."""
    normalized = normalize_recovery_code(code)
    if len(normalized) != 10 or any(c not in RECOVERY_CODE_ALPHABET for c in normalized):
        return False
    now = ctx.now()
    with ctx.db.write() as conn:
        spent = conn.execute(
            update(recovery_codes)
            .where(
                recovery_codes.c.user_id == user_id,
                recovery_codes.c.code_hash == hash_recovery_code(normalized),
                recovery_codes.c.used_at.is_(None),
            )
            .values(used_at=now)
        )
        if spent.rowcount != 1:
            return False
        left = unused_recovery_codes(conn, user_id)
        audit.record(
            conn,
            now,
            "recovery_code.used",
            audit.Actor("user", user_id),
            subject_user_id=user_id,
            details={"remaining": left},
        )
        row = credential_row(conn, user_id)
        ctx.notifier.send(
            conn,
            to=ctx.keys.decrypt(row.phone_cipher, context=context("users", "phone_cipher")),
            template="security.recovery_code_used",
            user_id=user_id,
            text=f"【钱包 qianbao】您使用了一个恢复码，还剩 {left} 个。如非本人操作，请立即联系客服。"
            f" A qianbao recovery code was used; {left} left. If this wasn't you, contact support.",
        )
        return True


def check_passkey(
    ctx: IdentityContext, user_id: str, credential: Mapping[str, Any] | str, challenge: bytes
) -> bool:
    credential_id = webauthn.b64url(webauthn.credential_id_of(credential))
    with ctx.db.write() as conn:
        row = conn.execute(
            select(passkeys).where(passkeys.c.credential_id == credential_id, passkeys.c.user_id == user_id)
        ).first()
        if row is None:
            return False
        try:
            count = webauthn.verify_authentication(
                ctx.relying_party,
                credential,
                expected_challenge=challenge,
                public_key=webauthn.from_b64url(row.public_key),
                current_sign_count=row.sign_count,
            )
        except webauthn.PasskeyError:
            return False
        conn.execute(
            update(passkeys).where(passkeys.c.id == row.id).values(sign_count=count, last_used_at=ctx.now())
        )
        return True

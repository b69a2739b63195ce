"""Changing the password while signed in: a security change, so it always needs step-up.

It also serves users who sign in with a passkey and no longer know their password (a password reset by
SMS alone is refused to them). Other sessions end, the user is notified, the change is audited.
"""

from __future__ import annotations

from sqlalchemy import update

from qianbao import invalid
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Operation, Principal, RequestInfo, StepUpFacts
from qianbao.identity.sessions import revoke_all_sessions
from qianbao.identity.signup import check_password
from qianbao.identity.tables import users
from qianbao.identity.users import credential_row
from qianbao.security import audit
from qianbao.security.fields import context


def change_password(
    ctx: IdentityContext,
    principal: Principal,
    new_password: str,
    info: RequestInfo,
    step_up_header: str | None,
) -> int:
    """Set a new password; returns how many other sessions were ended."""
    if principal.user_id is None:
        raise invalid.needs_user()
    user_id = principal.user_id
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
    phone = ctx.keys.decrypt(row.phone_cipher, context=context("users", "phone_cipher"))
    name = ctx.keys.decrypt(row.name_cipher, context=context("users", "name_cipher"))
    check_password(new_password, phone=phone, name=name)  # refused before any challenge is opened
    facts = StepUpFacts(Operation.CHANGE_PASSWORD, device_trusted=principal.device_trusted)
    proof = stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.CHANGE_PASSWORD,
        params={"password": ctx.keys.digest("password_change", new_password)},
        reasons=ctx.step_up_policy.reasons(facts),
        step_up_header=step_up_header,
    )
    password_hash = ctx.hasher.hash(new_password)
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, proof)
        conn.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash, updated_at=now)
        )
        ended = revoke_all_sessions(
            conn, user_id, now, except_session=principal.session_id, reason="password_changed"
        )
        actor = audit.Actor(
            "user", user_id, ip=info.ip, device_id=principal.device_id, session_id=principal.session_id
        )
        audit.record(
            conn, now, "password.changed", actor, subject_user_id=user_id, details={"sessions_ended": ended}
        )
        ctx.notifier.send(
            conn,
            to=phone,
            template="security.password_changed",
            user_id=user_id,
            text="【钱包 qianbao】您的登录密码已修改，其他设备已退出登录。如非本人操作，请立即联系客服。"
            " Your qianbao password was changed and other devices were signed out."
            " If this wasn't you, contact support.",
        )
        uow.commit()
    ctx.limiter.reset("password_account", phone)
    return ended

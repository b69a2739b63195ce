"""Users created through the real sign-up use case, for tests that drive services directly (races)."""

from __future__ import annotations

from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind, RequestInfo
from qianbao.identity.signup import register_user, send_code
from tests.support.api import STRONG_PASSWORD, new_phone


def register(ctx: IdentityContext, name: str) -> tuple[str, str]:
    """A signed-up user (tier 4): (user id, main wallet id)."""
    phone = new_phone()
    with ctx.uow() as uow:
        send_code(ctx, uow.conn, phone, "signup")
        uow.commit()
    with ctx.db.read() as conn:
        code = ctx.notifier.sent_to(conn, phone)[0].code
    assert code is not None
    user = register_user(
        ctx,
        phone_text=phone,
        code=code,
        password=STRONG_PASSWORD,
        name=name,
        device_key=None,
        info=RequestInfo(),
    )
    return user.id, user.main_wallet_id


def register_principal(ctx: IdentityContext, name: str) -> tuple[Principal, str]:
    """A signed-up user acting on a trusted device: (principal, main wallet id)."""
    user_id, wallet_id = register(ctx, name)
    principal = Principal(
        PrincipalKind.USER, user_id, user_id, device_id=f"dev-{user_id}", device_trusted=True
    )
    return principal, wallet_id

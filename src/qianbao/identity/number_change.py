"""What every change of an account's phone number shares, whether the signed-in user changes it
(`identity/phone_change.py`) or a signed-out user recovers an account whose number is lost
(`identity/recovery.py`): checking the new number, storing it, and telling both numbers.

After a change or a recovery the account cools off for `cooling_off_s` (24 hours): single and daily payment
limits are divided by `cooling_off_limit_divisor` (see `identity/limits.py`). Both numbers are told by SMS,
the old one too: it may be in a thief's hands, and its owner must learn what happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, update
from sqlalchemy.exc import IntegrityError

from qianbao import invalid
from qianbao.errors import InvalidInput
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import PhoneTaken
from qianbao.identity.phones import normalise_phone
from qianbao.identity.tables import users
from qianbao.identity.users import PHONE
from qianbao.security.fields import context
from qianbao.security.masking import mask_phone


@dataclass(frozen=True, slots=True)
class PhoneChanged:
    user_id: str
    phone_masked: str
    cooling_off_until: int
    sessions_revoked: int


def clean_new_phone(text: str) -> str:
    """The new number in E.164; an invalid one is `InvalidInput` on the field `new_phone`."""
    try:
        return normalise_phone(text)
    except InvalidInput as exc:
        raise invalid.phone("new_phone") from exc


def set_phone(ctx: IdentityContext, conn: Connection, user_id: str, phone: str, now: int) -> int:
    """Store the new number and start cooling-off; returns the end of cooling-off."""
    until = now + ctx.settings.cooling_off_s * 1_000_000
    try:
        conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(
                phone_cipher=ctx.keys.encrypt(phone, context=context("users", "phone_cipher")),
                phone_index=ctx.keys.digest(PHONE, phone),
                cooling_off_until=until,
                updated_at=now,
            )
        )
    except IntegrityError as exc:  # another account took the number since it was checked
        raise PhoneTaken("the new number already has an account") from exc
    return until


def notify_phone_changed(
    ctx: IdentityContext, conn: Connection, user_id: str, old_phone: str, new_phone: str, *, recovered: bool
) -> None:
    """Tell the old number and the new one, in the caller's transaction."""
    hours = max(1, ctx.settings.cooling_off_s // 3600)
    new_masked = mask_phone(new_phone)
    how_zh, how_en = ("通过身份核验找回账户，", "after an identity check ") if recovered else ("", "")
    ctx.notifier.send(
        conn,
        to=old_phone,
        template="security.phone_changed_old",
        user_id=user_id,
        text=f"【钱包 qianbao】您的钱包账户{how_zh}绑定手机号已更换为 {new_masked}。"
        "如非本人操作，请立即联系客服。"
        f" Your qianbao account's phone number was changed {how_en}to {new_masked}."
        " If this wasn't you, contact customer service now.",
    )
    ctx.notifier.send(
        conn,
        to=new_phone,
        template="security.phone_changed_new",
        user_id=user_id,
        text=f"【钱包 qianbao】本号码已绑定您的钱包账户。为保障资金安全，{hours} 小时内支付限额降低。"
        f" This number is now linked to your qianbao account; payment limits are lower for {hours} hours.",
    )

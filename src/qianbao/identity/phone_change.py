"""Changing the phone number (换号) while signed in.

A step-up (`Operation.CHANGE_PHONE`, bound to the new number's blind index) unlocks sending one code to the
old number and one to the new; both codes confirm the change. The user's other sessions end and the
account cools off (see `identity/number_change.py`). A frozen account cannot change its number.

SQLite rule: every check that counts (the step-up, both codes) runs in its own short transaction before the
operation's unit of work opens.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from qianbao import invalid
from qianbao.errors import Forbidden, InvalidInput, Locked
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import PhoneTaken, VerificationFailed
from qianbao.identity.model import Operation, Principal, RequestInfo, StepUpFacts
from qianbao.identity.number_change import PhoneChanged, clean_new_phone, notify_phone_changed, set_phone
from qianbao.identity.sessions import revoke_all_sessions
from qianbao.identity.signup import check_code, send_code, use_code
from qianbao.identity.tables import verifications
from qianbao.identity.users import PHONE, credential_row, find_user_id_by_phone
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.masking import mask_phone
from qianbao.store.outbox import OutboxEvent

_OLD_NUMBER_TEXT = (
    "您正在更换钱包绑定的手机号，验证码 {code}，{minutes} 分钟内有效。"
    "如非本人操作，请勿告诉他人并立即修改密码。"
    " Code {code} confirms changing your qianbao phone number. If this wasn't you, don't share it."
)
_NEW_NUMBER_TEXT = (
    "验证码 {code}，用于将本号码绑定到您的钱包账户，{minutes} 分钟内有效，请勿告诉他人。"
    " Your qianbao code to link this number is {code}."
)


def _user_id(principal: Principal) -> str:
    if principal.user_id is None:
        raise Forbidden("this endpoint is for signed-in users")
    return principal.user_id


def _checked_code(ctx: IdentityContext, phone: str, purpose: str, code: str, field: str) -> str:
    try:
        return check_code(ctx, phone, purpose, code)
    except VerificationFailed as exc:
        raise VerificationFailed(exc.detail, field=field) from exc


def _changeable(status: str) -> None:
    if status == "frozen":
        raise Locked("account_frozen", "a frozen account cannot change its phone number")


def request_phone_change(
    ctx: IdentityContext,
    principal: Principal,
    new_phone_text: str,
    info: RequestInfo,
    step_up_header: str | None,
) -> None:
    """`POST /v1/me/phone-change`: after a step-up, send a code to the old number and one to the new."""
    user_id = _user_id(principal)
    new_phone = clean_new_phone(new_phone_text)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
    _changeable(row.status)
    old_phone = ctx.keys.decrypt(row.phone_cipher, context=context("users", "phone_cipher"))
    if new_phone == old_phone:
        raise _same_phone()
    reasons = ctx.step_up_policy.reasons(
        StepUpFacts(Operation.CHANGE_PHONE, device_trusted=principal.device_trusted)
    )
    # Bound to the new number's blind index (a plain hash of a phone number could be reversed).
    proof = stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.CHANGE_PHONE,
        params={"new_phone": ctx.keys.digest(PHONE, new_phone)},
        reasons=reasons,
        step_up_header=step_up_header,
    )
    # Only after the step-up: whether a number is registered is not for any signed-in caller to probe.
    with ctx.db.read() as conn:
        if find_user_id_by_phone(conn, ctx.keys, new_phone) is not None:
            raise PhoneTaken("the new number already has an account")
    # The old number's sends are bounded by the step-up each pair needs; the new number is the caller's
    # choice, so it gets the usual per-number limits (against SMS pumping).
    ctx.limiter.hit("otp_send_phone", new_phone)
    if info.ip:
        ctx.limiter.hit("otp_send_ip", info.ip)
    with ctx.uow() as uow:
        stepup.consume(ctx, uow.conn, proof)
        send_code(
            ctx, uow.conn, old_phone, "phone_change_old", user_id=user_id, template_text=_OLD_NUMBER_TEXT
        )
        send_code(
            ctx, uow.conn, new_phone, "phone_change_new", user_id=user_id, template_text=_NEW_NUMBER_TEXT
        )
        audit.record(
            uow.conn,
            ctx.now(),
            "phone.change_requested",
            _actor(principal, info),
            subject_user_id=user_id,
            details={"new_phone": mask_phone(new_phone)},
        )
        uow.commit()


def confirm_phone_change(
    ctx: IdentityContext,
    principal: Principal,
    *,
    new_phone_text: str,
    old_code: str,
    new_code: str,
    info: RequestInfo,
) -> PhoneChanged:
    """`POST /v1/me/phone-change/confirm`: both codes right → the number changes, cooling-off starts."""
    user_id = _user_id(principal)
    new_phone = clean_new_phone(new_phone_text)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
        taken = find_user_id_by_phone(conn, ctx.keys, new_phone)
    _changeable(row.status)
    old_phone = ctx.keys.decrypt(row.phone_cipher, context=context("users", "phone_cipher"))
    if new_phone == old_phone:
        raise _same_phone()
    # Both codes first, so this endpoint cannot be used to probe which numbers are registered.
    old_verification = _checked_code(ctx, old_phone, "phone_change_old", old_code, "old_code")
    new_verification = _checked_code(ctx, new_phone, "phone_change_new", new_code, "new_code")
    if taken is not None:
        raise PhoneTaken("the new number already has an account")
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        _spend_own_codes(conn, user_id, (old_verification, new_verification), now)
        until = set_phone(ctx, conn, user_id, new_phone, now)
        revoked = revoke_all_sessions(
            conn, user_id, now, except_session=principal.session_id, reason="phone_changed"
        )
        notify_phone_changed(ctx, conn, user_id, old_phone, new_phone, recovered=False)
        audit.record(
            conn,
            now,
            "phone.changed",
            _actor(principal, info),
            subject_user_id=user_id,
            details={
                "old_phone": mask_phone(old_phone),
                "new_phone": mask_phone(new_phone),
                "sessions_revoked": revoked,
                "cooling_off_until": until,
            },
        )
        uow.emit(
            OutboxEvent(
                "user.phone_changed", "user", user_id, {"user_id": user_id, "cooling_off_until": until}
            )
        )
        uow.commit()
    return PhoneChanged(user_id, mask_phone(new_phone), until, revoked)


def _spend_own_codes(conn: Connection, user_id: str, verification_ids: Sequence[str], now: int) -> None:
    """Spend codes that were sent for this user's change (not another user's change to the same number)."""
    owners = dict(
        conn.execute(
            select(verifications.c.id, verifications.c.user_id).where(
                verifications.c.id.in_(verification_ids)
            )
        ).all()
    )
    for verification_id in verification_ids:
        if owners.get(verification_id) != user_id:
            raise VerificationFailed("the code was not sent for this change: ask for new codes", field="code")
        use_code(conn, verification_id, now)


def _actor(principal: Principal, info: RequestInfo) -> audit.Actor:
    return audit.Actor(
        principal.kind.value,
        principal.id,
        ip=info.ip,
        device_id=principal.device_id,
        session_id=principal.session_id,
    )


def _same_phone() -> InvalidInput:
    return invalid.because(
        "same_phone", "new_phone is this account's number already", field="new_phone", reason="same_phone"
    )

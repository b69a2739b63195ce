"""Second factors a user manages: TOTP (with its recovery codes) and passkeys; sign-in with a passkey.

Enrolling the first factor needs no step-up (it only makes the account stronger, and the user is told by
SMS); replacing or removing a factor, a new set of recovery codes, and adding a factor next to an existing
one are security changes (`Operation.CHANGE_SECOND_FACTOR`), each challenge bound to its exact action.
Every change is audited and notified by SMS.

SQLite rule: step-up decisions and checks that count (TOTP) happen before the operation's unit of work,
which then consumes the step-up pass and writes everything in one transaction.

Secrets: the TOTP secret is stored encrypted, recovery codes only as hashes (`hash_recovery_code`), and
neither ever reaches the audit log, the outbox or an idempotency record.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from qianbao.errors import Conflict, InvalidInput, NotFound, RateLimited, Unauthenticated
from qianbao.identity import passkeys as webauthn
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import PasskeyAlreadyRegistered, SecondFactorInvalid
from qianbao.identity.model import Operation, Principal, RequestInfo, StepUpFacts
from qianbao.identity.sessions import IssuedSession, clean_device_key, issue_session
from qianbao.identity.tables import ceremonies, passkeys, recovery_codes, users
from qianbao.identity.totp import (
    hash_recovery_code,
    new_recovery_codes,
    new_totp_secret,
    provisioning_qr_svg,
    provisioning_uri,
    verify_totp,
)
from qianbao.identity.users import credential_row, has_passkeys
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.masking import mask_name, mask_phone

CEREMONY_TTL_S: Final = 300  # a WebAuthn ceremony must be finished within 5 minutes
REGISTER: Final = "passkey_register"
SIGN_IN: Final = "passkey_signin"
MAX_PASSKEYS: Final = 20
MAX_PASSKEY_NAME: Final = 64
TOTP_SECRET = context("users", "totp_secret_cipher")
PHONE = context("users", "phone_cipher")


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True, slots=True)
class PasskeyView:
    id: str
    name: str
    created_at: int
    last_used_at: int | None


# --- helpers -------------------------------------------------------------------------------------------


def _user_id(principal: Principal) -> str:
    if principal.user_id is None:
        raise InvalidInput("this operation needs a user")
    return principal.user_id


def _actor(principal: Principal, info: RequestInfo) -> audit.Actor:
    return audit.Actor(
        "user", principal.user_id, ip=info.ip, device_id=principal.device_id, session_id=principal.session_id
    )


def _step_up(
    ctx: IdentityContext, principal: Principal, action: Mapping[str, str], header: str | None
) -> stepup.StepUpPass | None:
    """Step-up for a second-factor change, bound to this exact action (a proof for one change cannot be
    spent on another)."""
    facts = StepUpFacts(Operation.CHANGE_SECOND_FACTOR, device_trusted=principal.device_trusted)
    return stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.CHANGE_SECOND_FACTOR,
        params=dict(action),
        reasons=ctx.step_up_policy.reasons(facts),
        step_up_header=header,
    )


def _notify(ctx: IdentityContext, conn: Connection, row: Any, template: str, zh: str, en: str) -> None:
    ctx.notifier.send(
        conn,
        to=ctx.keys.decrypt(row.phone_cipher, context=PHONE),
        template=template,
        user_id=row.id,
        text=f"【钱包 qianbao】{zh}如非本人操作，请立即联系客服。 {en} If this wasn't you, contact support.",
    )


def _check_still_no_second_factor(conn: Connection, user_id: str) -> None:
    """Inside the unit of work of a change allowed without step-up because the account had no second
    factor: lock the user's row and make sure that still holds (a concurrent enrolment must not let two
    factors in without step-up)."""
    row = credential_row(conn, user_id, lock=True)
    if row.totp_enabled_at is not None or has_passkeys(conn, user_id):
        raise Conflict("a second factor was added meanwhile: try again", reason="second_factor_added")


def _replace_recovery_codes(conn: Connection, user_id: str, codes: list[str], now: int) -> None:
    conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    conn.execute(
        insert(recovery_codes),
        [{"user_id": user_id, "code_hash": hash_recovery_code(c), "created_at": now} for c in codes],
    )


# --- TOTP and recovery codes ---------------------------------------------------------------------------


def start_totp_enrolment(
    ctx: IdentityContext, principal: Principal, info: RequestInfo, step_up_header: str | None
) -> TotpEnrolment:
    """A new pending TOTP secret (stored encrypted, not yet enabled) for the user's authenticator app.

    When the account already has a second factor this is a security change: it needs step-up, and an
    enabled TOTP is switched off (with its recovery codes) until the new secret is confirmed."""
    user_id = _user_id(principal)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
        passkey = has_passkeys(conn, user_id)
    enabled = row.totp_enabled_at is not None
    step_up = None
    if enabled or passkey:
        step_up = _step_up(ctx, principal, {"action": "totp.enrol"}, step_up_header)
    secret = new_totp_secret()
    phone = ctx.keys.decrypt(row.phone_cipher, context=PHONE)
    # The label is masked: the QR code shows it and ends up in screenshots and authenticator backups.
    uri = provisioning_uri(secret, account_name=mask_phone(phone), issuer="qianbao")
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, step_up)
        if step_up is None:
            _check_still_no_second_factor(conn, user_id)
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
        actor = _actor(principal, info)
        if enabled:
            conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
            audit.record(
                conn, now, "totp.disabled", actor, subject_user_id=user_id, details={"reason": "re_enrol"}
            )
            _notify(
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
    user_id = _user_id(principal)
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
            _actor(principal, info),
            subject_user_id=user_id,
            details={"recovery_codes": len(codes)},
        )
        _notify(
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
    user_id = _user_id(principal)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
    if row.totp_secret_cipher is None:
        raise NotFound("TOTP is not set up")
    enabled = row.totp_enabled_at is not None
    step_up = _step_up(ctx, principal, {"action": "totp.disable"}, step_up_header) if enabled else None
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
        actor = _actor(principal, info)
        if enabled:
            conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
            audit.record(conn, now, "totp.disabled", actor, subject_user_id=user_id)
            _notify(
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
    user_id = _user_id(principal)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
    if row.totp_enabled_at is None:
        raise Conflict("recovery codes come with TOTP: enable TOTP first", reason="totp_not_enabled")
    step_up = _step_up(ctx, principal, {"action": "recovery_codes.regenerate"}, step_up_header)
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
            _actor(principal, info),
            subject_user_id=user_id,
            details={"recovery_codes": len(codes)},
        )
        _notify(
            ctx,
            conn,
            row,
            "security.recovery_codes_regenerated",
            "您已生成新的恢复码，旧恢复码已作废。",
            "You created new recovery codes; the old ones no longer work.",
        )
        uow.commit()
    return codes


# --- passkeys ------------------------------------------------------------------------------------------


def _user_handle(user_id: str) -> bytes:
    """What authenticators store as the passkey's user: the opaque user id, never a phone or a name."""
    return user_id.encode("ascii")


def _new_ceremony(conn: Connection, kind: str, user_id: str | None, challenge: bytes, now: int) -> str:
    ceremony_id = new_id("cer")
    conn.execute(
        insert(ceremonies).values(
            id=ceremony_id,
            kind=kind,
            user_id=user_id,
            challenge=webauthn.b64url(challenge),
            created_at=now,
            expires_at=now + CEREMONY_TTL_S * 1_000_000,
        )
    )
    return ceremony_id


def _consume_ceremony(conn: Connection, ceremony_id: str, now: int) -> bool:
    done = conn.execute(
        update(ceremonies)
        .where(
            ceremonies.c.id == ceremony_id,
            ceremonies.c.consumed_at.is_(None),
            ceremonies.c.expires_at > now,
        )
        .values(consumed_at=now)
    )
    return done.rowcount == 1


def _client_challenge(credential: Mapping[str, Any]) -> str:
    """The challenge the browser signed (from clientDataJSON), to find the ceremony it answers."""
    response = credential.get("response")
    client_data = response.get("clientDataJSON") if isinstance(response, Mapping) else None
    if not isinstance(client_data, str):
        raise webauthn.PasskeyError("credential has no response.clientDataJSON", reason="malformed")
    try:
        challenge = json.loads(webauthn.from_b64url(client_data)).get("challenge")
    except (ValueError, AttributeError, RecursionError) as exc:  # hostile JSON (bad UTF-8, deep nesting)
        raise webauthn.PasskeyError("clientDataJSON is not a JSON object", reason="malformed") from exc
    if not isinstance(challenge, str) or not 1 <= len(challenge) <= 128:
        raise webauthn.PasskeyError("clientDataJSON has no valid challenge", reason="malformed")
    return challenge


def _clean_passkey_name(name: str | None, count: int) -> str:
    if name is None:
        return f"Passkey {count + 1}"
    clean = name.strip()
    if not 1 <= len(clean) <= MAX_PASSKEY_NAME or not clean.isprintable():
        raise InvalidInput(f"name must be 1 to {MAX_PASSKEY_NAME} printable characters", field="name")
    return clean


def passkey_registration_options(ctx: IdentityContext, principal: Principal) -> dict[str, Any]:
    """WebAuthn creation options for a new passkey; the challenge is kept for 5 minutes, single use."""
    user_id = _user_id(principal)
    with ctx.db.read() as conn:
        row = credential_row(conn, user_id)
        existing = list(
            conn.execute(select(passkeys.c.credential_id).where(passkeys.c.user_id == user_id)).scalars()
        )
    if len(existing) >= MAX_PASSKEYS:
        raise Conflict(f"an account can have at most {MAX_PASSKEYS} passkeys", reason="too_many_passkeys")
    phone = mask_phone(ctx.keys.decrypt(row.phone_cipher, context=PHONE))
    name = mask_name(ctx.keys.decrypt(row.name_cipher, context=context("users", "name_cipher")))
    options, challenge = webauthn.registration_options(
        ctx.relying_party,
        user_handle=_user_handle(user_id),
        user_name=phone,
        display_name=f"{name} ({phone})",
        exclude_credential_ids=[webauthn.from_b64url(c) for c in existing],
    )
    with ctx.db.write() as conn:
        _new_ceremony(conn, REGISTER, user_id, challenge, ctx.now())
    return options


def add_passkey(
    ctx: IdentityContext,
    principal: Principal,
    credential: Mapping[str, Any],
    name: str | None,
    info: RequestInfo,
    step_up_header: str | None,
) -> PasskeyView:
    """Register the passkey the authenticator created for our options. With a second factor already in
    place (TOTP or a passkey) this needs step-up, bound to this credential."""
    user_id = _user_id(principal)
    challenge = _client_challenge(credential)
    now = ctx.now()
    with ctx.db.read() as conn:
        ceremony = conn.execute(
            select(ceremonies).where(
                ceremonies.c.kind == REGISTER,
                ceremonies.c.user_id == user_id,
                ceremonies.c.challenge == challenge,
            )
        ).first()
        row = credential_row(conn, user_id)
        count = int(
            conn.execute(
                select(func.count()).select_from(passkeys).where(passkeys.c.user_id == user_id)
            ).scalar_one()
        )
    if ceremony is None:
        raise webauthn.PasskeyError(
            "this passkey does not answer a registration we started: ask for options again",
            reason="challenge_mismatch",
        )
    if ceremony.consumed_at is not None or ceremony.expires_at <= now:
        raise webauthn.PasskeyError(
            "the registration expired or was already used: ask for options again", reason="ceremony_expired"
        )
    if count >= MAX_PASSKEYS:
        raise Conflict(f"an account can have at most {MAX_PASSKEYS} passkeys", reason="too_many_passkeys")
    label = _clean_passkey_name(name, count)
    new = webauthn.verify_registration(
        ctx.relying_party, credential, expected_challenge=webauthn.from_b64url(ceremony.challenge)
    )
    credential_id = webauthn.b64url(new.credential_id)
    with ctx.db.read() as conn:
        taken = conn.execute(select(passkeys.c.id).where(passkeys.c.credential_id == credential_id)).first()
    if taken is not None:
        raise PasskeyAlreadyRegistered("this passkey is already registered")
    step_up = None
    if count or row.totp_enabled_at is not None:
        step_up = _step_up(
            ctx, principal, {"action": "passkey.add", "credential_id": credential_id}, step_up_header
        )
    passkey_id = new_id("pky")
    now = ctx.now()
    try:
        with ctx.uow() as uow:
            conn = uow.conn
            if not _consume_ceremony(conn, ceremony.id, now):
                raise webauthn.PasskeyError(
                    "the registration expired or was already used: ask for options again",
                    reason="ceremony_expired",
                )
            stepup.consume(ctx, conn, step_up)
            if step_up is None:
                _check_still_no_second_factor(conn, user_id)
            conn.execute(
                insert(passkeys).values(
                    id=passkey_id,
                    user_id=user_id,
                    credential_id=credential_id,
                    public_key=webauthn.b64url(new.public_key),
                    sign_count=new.sign_count,
                    aaguid=new.aaguid,
                    transports=list(new.transports),
                    name=label,
                    created_at=now,
                )
            )
            audit.record(
                conn,
                now,
                "passkey.added",
                _actor(principal, info),
                subject_user_id=user_id,
                details={"passkey_id": passkey_id, "aaguid": new.aaguid, "backed_up": new.backed_up},
            )
            _notify(
                ctx,
                conn,
                row,
                "security.passkey_added",
                "您的账户添加了一个新的通行密钥。",
                "A new passkey was added to your account.",
            )
            uow.commit()
    except IntegrityError as exc:  # the same passkey registered concurrently: the unique index decided
        raise PasskeyAlreadyRegistered("this passkey is already registered") from exc
    return PasskeyView(passkey_id, label, now, None)


def list_passkeys(ctx: IdentityContext, principal: Principal) -> list[PasskeyView]:
    user_id = _user_id(principal)
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(passkeys.c.id, passkeys.c.name, passkeys.c.created_at, passkeys.c.last_used_at)
            .where(passkeys.c.user_id == user_id)
            .order_by(passkeys.c.created_at, passkeys.c.id)
        ).all()
    return [PasskeyView(r.id, r.name, r.created_at, r.last_used_at) for r in rows]


def remove_passkey(
    ctx: IdentityContext, principal: Principal, passkey_id: str, info: RequestInfo, step_up_header: str | None
) -> None:
    """Delete one of one's passkeys (step-up; 404 for anyone else's)."""
    user_id = _user_id(principal)
    with ctx.db.read() as conn:
        found = conn.execute(
            select(passkeys.c.id).where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id)
        ).first()
        row = credential_row(conn, user_id)
    if found is None:
        raise NotFound("no such passkey")
    step_up = _step_up(ctx, principal, {"action": "passkey.remove", "passkey_id": passkey_id}, step_up_header)
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        stepup.consume(ctx, conn, step_up)
        done = conn.execute(
            delete(passkeys).where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id)
        )
        if done.rowcount != 1:
            raise NotFound("no such passkey")
        audit.record(
            conn,
            now,
            "passkey.removed",
            _actor(principal, info),
            subject_user_id=user_id,
            details={"passkey_id": passkey_id},
        )
        _notify(
            ctx,
            conn,
            row,
            "security.passkey_removed",
            "您的账户删除了一个通行密钥。",
            "A passkey was removed from your account.",
        )
        uow.commit()


# --- signing in with a passkey -------------------------------------------------------------------------


def passkey_sign_in_options(ctx: IdentityContext) -> tuple[str, dict[str, Any]]:
    """(ceremony id, request options) for usernameless sign-in: any discoverable passkey of this site."""
    options, challenge = webauthn.authentication_options(ctx.relying_party)
    with ctx.db.write() as conn:
        ceremony_id = _new_ceremony(conn, SIGN_IN, None, challenge, ctx.now())
    return ceremony_id, options


def sign_in_with_passkey(
    ctx: IdentityContext,
    *,
    ceremony_id: str,
    credential: Mapping[str, Any],
    device_key: str | None,
    info: RequestInfo,
    transport: str = "bearer",
) -> IssuedSession:
    """Check an assertion against the ceremony's challenge and the stored passkey; a session on success.

    Every failure is the same 401 (it never says whether the passkey or the account exists), is audited,
    counts against the IP's sign-in failures and spends the ceremony (one ceremony, one attempt)."""
    clean_device_key(device_key)
    if info.ip and not ctx.limiter.check("password_ip", info.ip):
        ctx.limiter.hit("password_ip", info.ip)  # raises RateLimited with Retry-After
    now = ctx.now()
    owner: str | None = None
    reason = "ceremony_invalid"
    sign_count = 0
    passkey = ceremony = user = None
    try:
        credential_id = webauthn.b64url(webauthn.credential_id_of(credential))
        with ctx.db.read() as conn:
            ceremony = conn.execute(
                select(ceremonies).where(ceremonies.c.id == ceremony_id, ceremonies.c.kind == SIGN_IN)
            ).first()
            passkey = conn.execute(select(passkeys).where(passkeys.c.credential_id == credential_id)).first()
            if passkey is not None:
                owner = str(passkey.user_id)
                user = credential_row(conn, owner)
        if ceremony is None or ceremony.consumed_at is not None or ceremony.expires_at <= now:
            reason = "ceremony_invalid"
        elif passkey is None or user is None:
            reason = "unknown_passkey"
        elif user.status == "closed":
            reason = "account_closed"
        else:
            sign_count = webauthn.verify_authentication(
                ctx.relying_party,
                credential,
                expected_challenge=webauthn.from_b64url(ceremony.challenge),
                public_key=webauthn.from_b64url(passkey.public_key),
                current_sign_count=passkey.sign_count,
                expected_user_handle=_user_handle(owner or ""),
            )
            reason = ""
    except webauthn.PasskeyError as exc:
        reason = exc.reason
    if reason or passkey is None or ceremony is None or user is None:
        _sign_in_failed(ctx, ceremony_id, owner, reason or "malformed", info)
        raise Unauthenticated("the passkey could not be verified: try again")
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        if not _consume_ceremony(conn, ceremony.id, now):
            raise Unauthenticated("the passkey could not be verified: try again")
        conn.execute(
            update(passkeys)
            .where(passkeys.c.id == passkey.id)
            .values(sign_count=sign_count, last_used_at=now)
        )
        issued = issue_session(
            ctx,
            conn,
            user_id=str(user.id),
            phone=ctx.keys.decrypt(user.phone_cipher, context=PHONE),
            device_key=device_key,
            info=info,
            auth_method="passkey",
            transport=transport,
        )
        uow.commit()
    return issued


def _sign_in_failed(
    ctx: IdentityContext, ceremony_id: str, owner: str | None, reason: str, info: RequestInfo
) -> None:
    now = ctx.now()
    with ctx.db.write() as conn:
        _consume_ceremony(conn, ceremony_id, now)
        audit.record(
            conn,
            now,
            "session.sign_in",
            audit.Actor("anonymous", ip=info.ip, device_id=None),
            subject_user_id=owner,
            outcome="failure",
            details={"method": "passkey", "reason": reason},
        )
    if info.ip:
        with contextlib.suppress(RateLimited):  # the 401 is the answer either way
            ctx.limiter.hit("password_ip", info.ip)

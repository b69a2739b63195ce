"""Passkeys (WebAuthn): registering, listing and removing them, and passwordless sign-in with one.

Every WebAuthn exchange is a ceremony: the challenge we hand out is stored (`ceremonies`), valid for
`CEREMONY_TTL_S` and single use. Sign-in is usernameless (any discoverable passkey of this site) and gives
every failure the same 401, never saying whether a passkey or an account exists. The passkey's user handle
is the opaque user id, never a phone number or a name. Adding a passkey next to another second factor,
and removing one, follow the change rules in `identity/second_factors.py` (step-up, audit, SMS).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from qianbao import invalid
from qianbao.errors import Conflict, NotFound, RateLimited, Unauthenticated
from qianbao.identity import passkeys as webauthn
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import PasskeyAlreadyRegistered
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
from qianbao.identity.sessions import IssuedSession, clean_device_key, issue_session
from qianbao.identity.tables import ceremonies, passkeys
from qianbao.identity.users import credential_row
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.masking import mask_name, mask_phone

CEREMONY_TTL_S: Final = 300  # a WebAuthn ceremony must be finished within 5 minutes
REGISTER: Final = "passkey_register"
SIGN_IN: Final = "passkey_signin"
MAX_PASSKEYS: Final = 20
MAX_PASSKEY_NAME: Final = 64


@dataclass(frozen=True, slots=True)
class PasskeyView:
    id: str
    name: str
    created_at: int
    last_used_at: int | None


# --- registering, listing and removing passkeys --------------------------------------------------------


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
        raise invalid.text_length("name", MAX_PASSKEY_NAME, printable=True)
    return clean


def passkey_registration_options(ctx: IdentityContext, principal: Principal) -> dict[str, Any]:
    """WebAuthn creation options for a new passkey; the challenge is kept for 5 minutes, single use."""
    user_id = user_id_of(principal)
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
    user_id = user_id_of(principal)
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
    action = {"action": "passkey.add", "credential_id": credential_id}
    if count or row.totp_enabled_at is not None:
        step_up = step_up_for(ctx, principal, action, step_up_header)
    else:
        step_up = first_enrolment_step_up(ctx, principal, action, step_up_header)
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
                check_still_no_second_factor(conn, user_id)
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
                actor_of(principal, info),
                subject_user_id=user_id,
                details={"passkey_id": passkey_id, "aaguid": new.aaguid, "backed_up": new.backed_up},
            )
            notify(
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
    user_id = user_id_of(principal)
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
    user_id = user_id_of(principal)
    with ctx.db.read() as conn:
        found = conn.execute(
            select(passkeys.c.id).where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id)
        ).first()
        row = credential_row(conn, user_id)
    if found is None:
        raise NotFound("no such passkey")
    step_up = step_up_for(
        ctx, principal, {"action": "passkey.remove", "passkey_id": passkey_id}, step_up_header
    )
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
            actor_of(principal, info),
            subject_user_id=user_id,
            details={"passkey_id": passkey_id},
        )
        notify(
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

"""Step-up authentication: challenges bound to one operation, proved with PIN, TOTP, a recovery code,
passkey or SMS.

Flow (docs/security.md): an operation the policy flags is answered `401 step_up_required` with a
`challenge_id` and the allowed `methods`; the client proves one at `POST /v1/challenges/{id}/verify` and
repeats the request with `Step-Up: <challenge_id>`. The challenge is bound to the operation and its
parameters (a SHA-256 "binding"), short-lived, and consumed in the operation's own transaction, so it
unlocks that one request once. A successful proof also makes the device known.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, insert, select, update

from qianbao import invalid
from qianbao.clock import rfc3339
from qianbao.errors import NotFound, StepUpRequired
from qianbao.identity import passkeys as webauthn
from qianbao.identity import pin as pins
from qianbao.identity import proofs
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import ChallengeInvalid, wrong_proof
from qianbao.identity.model import Method, Operation, Principal, RequestInfo
from qianbao.identity.sessions import trust_device
from qianbao.identity.sms_quota import count_sms
from qianbao.identity.tables import challenges, passkeys
from qianbao.identity.users import credential_row
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context

MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class ChallengeView:
    id: str
    operation: str
    methods: list[str]
    reasons: list[str]
    status: str
    expires_at: int


def binding_of(operation: Operation | str, params: Mapping[str, Any]) -> str:
    canonical = json.dumps({"op": str(operation), "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def available_methods(conn: Connection, user_id: str, operation: Operation | str) -> list[str]:
    row = credential_row(conn, user_id)
    methods: list[str] = []
    if row.pin_hash is not None and operation != Operation.SIGN_IN:
        methods.append(Method.PIN.value)
    if row.totp_enabled_at is not None:
        methods.append(Method.TOTP.value)
    if proofs.unused_recovery_codes(conn, user_id):
        methods.append(Method.RECOVERY_CODE.value)
    if conn.execute(select(passkeys.c.id).where(passkeys.c.user_id == user_id).limit(1)).first():
        methods.append(Method.PASSKEY.value)
    # SMS proves the phone, not the person: it is offered unless a stronger factor exists for sign-in.
    if operation != Operation.SIGN_IN or not methods:
        methods.append(Method.SMS.value)
    return methods


@dataclass(frozen=True, slots=True)
class StepUpPass:
    """A proved challenge the operation will consume in its own transaction (`consume`)."""

    user_id: str
    challenge_id: str
    binding: str
    session_id: str | None = None


def require_step_up(
    ctx: IdentityContext,
    principal: Principal,
    *,
    operation: Operation,
    params: Mapping[str, Any],
    reasons: Sequence[str],
    step_up_header: str | None,
    user_id: str | None = None,
) -> StepUpPass | None:
    """Before the operation's transaction: None (no step-up needed), a pass to consume, or StepUpRequired.

    The refusal's challenge is written in its own transaction, so it survives the refusal."""
    if not reasons:
        return None
    subject = user_id or principal.user_id
    if subject is None:
        raise invalid.needs_user()
    binding = binding_of(operation, params)
    if step_up_header:
        return StepUpPass(subject, step_up_header, binding, principal.session_id)
    challenge = create_challenge(
        ctx,
        subject,
        operation=operation,
        binding=binding,
        reasons=list(reasons),
        session_id=principal.session_id,
    )
    raise StepUpRequired(
        "this operation needs you to confirm it is you",
        challenge_id=challenge.id,
        methods=challenge.methods,
        reasons=challenge.reasons,
        expires_at=rfc3339(challenge.expires_at),
        expires_at_us=challenge.expires_at,  # kept for clients that read it (issue 3)
    )


def consume(ctx: IdentityContext, conn: Connection, step_up: StepUpPass | None) -> None:
    """Spend the proved challenge inside the operation's transaction (no-op without one)."""
    if step_up is not None:
        consume_challenge(
            ctx, conn, step_up.user_id, step_up.challenge_id, step_up.binding, session_id=step_up.session_id
        )


def create_challenge(
    ctx: IdentityContext,
    user_id: str,
    *,
    operation: Operation | str,
    binding: str,
    reasons: list[str],
    session_id: str | None,
) -> ChallengeView:
    ctx.limiter.hit("challenge_create", user_id)
    now = ctx.now()
    challenge_id = new_id("chl")
    expires = now + ctx.settings.challenge_ttl_s * 1_000_000
    with ctx.db.write() as conn:
        methods = available_methods(conn, user_id, operation)
        conn.execute(
            insert(challenges).values(
                id=challenge_id,
                user_id=user_id,
                session_id=session_id,
                operation=str(operation),
                binding=binding,
                methods=methods,
                reasons=reasons,
                status="pending",
                created_at=now,
                expires_at=expires,
            )
        )
        audit.record(
            conn,
            now,
            "step_up.challenged",
            audit.Actor("user", user_id, session_id=session_id),
            subject_user_id=user_id,
            details={"challenge_id": challenge_id, "operation": str(operation), "reasons": reasons},
        )
    return ChallengeView(challenge_id, str(operation), methods, reasons, "pending", expires)


def consume_challenge(
    ctx: IdentityContext,
    conn: Connection,
    user_id: str,
    challenge_id: str,
    binding: str,
    *,
    session_id: str | None = None,
) -> None:
    """Spend a verified challenge: the same user, the same session (or none, for sign-in), the same
    operation and parameters, once, before it expires."""
    now = ctx.now()
    used = conn.execute(
        update(challenges)
        .where(
            challenges.c.id == challenge_id,
            challenges.c.user_id == user_id,
            _same_session(session_id),
            challenges.c.binding == binding,
            challenges.c.status == "verified",
            challenges.c.expires_at > now,
        )
        .values(status="consumed", consumed_at=now)
    )
    if used.rowcount != 1:
        raise ChallengeInvalid(
            "the Step-Up challenge is not verified, has expired, was used, or was for another request"
        )


def get_challenge(ctx: IdentityContext, principal: Principal, challenge_id: str) -> ChallengeView:
    with ctx.db.read() as conn:
        row = _own(conn, principal, challenge_id)
    status = row.status if row.expires_at > ctx.now() or row.status != "pending" else "expired"
    return ChallengeView(row.id, row.operation, list(row.methods), list(row.reasons), status, row.expires_at)


def _same_session(session_id: str | None) -> ColumnElement[bool]:
    """A challenge belongs to the session that met it: another session of the same user (say, one signed
    in with a stolen password) can neither prove nor spend it."""
    if session_id is None:
        return challenges.c.session_id.is_(None)
    return challenges.c.session_id == session_id


def _own(conn: Connection, principal: Principal, challenge_id: str) -> Any:
    row = conn.execute(
        select(challenges).where(
            challenges.c.id == challenge_id,
            challenges.c.user_id == principal.user_id,
            _same_session(principal.session_id),
        )
    ).first()
    if row is None:
        raise NotFound("no such challenge")
    return row


def _usable(ctx: IdentityContext, row: Any, method: str) -> None:
    if row.status != "pending" or row.expires_at <= ctx.now():
        raise ChallengeInvalid("the challenge is no longer open: repeat the request for a new one")
    if method not in row.methods:
        raise invalid.one_of("method", row.methods)


def send_sms(ctx: IdentityContext, principal: Principal, challenge_id: str) -> None:
    """Send a one-time code for an SMS proof of this challenge."""
    with ctx.uow() as uow:
        row = _own(uow.conn, principal, challenge_id)
        _usable(ctx, row, Method.SMS.value)
        user = credential_row(uow.conn, row.user_id)
        phone = ctx.keys.decrypt(user.phone_cipher, context=context("users", "phone_cipher"))
        # The step-up quota alone: anonymous sign-up or recovery requests for this number cannot spend it.
        count_sms(ctx.limiter, "step_up", phone)
        code = f"{secrets.randbelow(1_000_000):06d}"
        uow.conn.execute(
            update(challenges)
            .where(challenges.c.id == challenge_id)
            .values(sms_code_hash=ctx.keys.digest(f"challenge:{challenge_id}", code))
        )
        ctx.notifier.send(
            uow.conn,
            to=phone,
            template="otp.step_up",
            code=code,
            user_id=row.user_id,
            text=f"【钱包 qianbao】确认码 {code}，用于确认您的操作，请勿告诉他人。"
            f" Your qianbao confirmation code is {code}.",
        )
        uow.commit()


def passkey_options(ctx: IdentityContext, principal: Principal, challenge_id: str) -> dict[str, Any]:
    """WebAuthn request options for proving this challenge with a passkey."""
    with ctx.db.write() as conn:
        row = _own(conn, principal, challenge_id)
        _usable(ctx, row, Method.PASSKEY.value)
        ids = [
            webauthn.from_b64url(c)
            for c in conn.execute(
                select(passkeys.c.credential_id).where(passkeys.c.user_id == row.user_id)
            ).scalars()
        ]
        options, raw = webauthn.authentication_options(ctx.relying_party, allow_credential_ids=ids)
        conn.execute(
            update(challenges)
            .where(challenges.c.id == challenge_id)
            .values(webauthn_challenge=webauthn.b64url(raw))
        )
    return options


def verify_challenge(
    ctx: IdentityContext,
    principal: Principal,
    challenge_id: str,
    method: str,
    proof: Mapping[str, Any],
    info: RequestInfo,
) -> ChallengeView:
    """Check one proof. Wrong proofs count (five end the challenge); PIN failures also count to lockout, and
    a wrong PIN's message says how many more the lock allows. A proof that is missing, or a PIN that is
    not six digits, is bad input and counts toward neither."""
    ctx.limiter.hit("challenge_verify", principal.user_id or principal.id)
    with ctx.db.read() as conn:
        row = _own(conn, principal, challenge_id)
    _usable(ctx, row, method)
    pin = _check_pin(ctx, row, proof) if method == Method.PIN.value else None
    ok = pin.correct if pin is not None else _check_proof(ctx, row, method, proof)
    now = ctx.now()
    actor = audit.Actor(
        "user", row.user_id, ip=info.ip, device_id=principal.device_id, session_id=principal.session_id
    )
    with ctx.db.write() as conn:
        if not ok:
            # Counted in SQL, not from the row read above: concurrent wrong proofs must all count.
            conn.execute(
                update(challenges)
                .where(challenges.c.id == challenge_id, challenges.c.status == "pending")
                .values(
                    attempts=challenges.c.attempts + 1,
                    status=case((challenges.c.attempts + 1 >= MAX_ATTEMPTS, "failed"), else_="pending"),
                )
            )
            audit.record(
                conn,
                now,
                "step_up.verify",
                actor,
                subject_user_id=row.user_id,
                outcome="failure",
                details={"challenge_id": challenge_id, "method": method},
            )
        else:
            verified = conn.execute(
                update(challenges)
                .where(
                    challenges.c.id == challenge_id,
                    challenges.c.status == "pending",
                    challenges.c.expires_at > now,
                )
                .values(status="verified", verified_at=now, verified_method=method)
            )
            if verified.rowcount != 1:  # it expired, failed or was verified meanwhile
                raise ChallengeInvalid("the challenge is no longer open: repeat the request for a new one")
            if principal.device_id is not None:
                trust_device(conn, principal.device_id, now)
            audit.record(
                conn,
                now,
                "step_up.verify",
                actor,
                subject_user_id=row.user_id,
                details={"challenge_id": challenge_id, "method": method},
            )
    if not ok:
        if pin is None:
            raise wrong_proof(method)
        raise wrong_proof(method, pin_attempts_left=pin.attempts_left, pin_locked_until=pin.locked_until)
    return get_challenge(ctx, principal, challenge_id)


def _check_pin(ctx: IdentityContext, row: Any, proof: Mapping[str, Any]) -> pins.PinCheck:
    pin = proof.get("pin")
    if pin is None:
        raise invalid.required("pin")
    return pins.verify_pin(ctx, row.user_id, pins.check_pin_format(pin))


def _check_proof(ctx: IdentityContext, row: Any, method: str, proof: Mapping[str, Any]) -> bool:
    if method == Method.TOTP.value:
        code = proof.get("code")
        if not isinstance(code, str):
            raise invalid.required("code")
        return proofs.check_totp(ctx, row.user_id, code)
    if method == Method.RECOVERY_CODE.value:
        code = proof.get("code")
        if not isinstance(code, str):
            raise invalid.required("code")
        return proofs.check_recovery_code(ctx, row.user_id, code)
    if method == Method.SMS.value:
        code = proof.get("code")
        if not isinstance(code, str):
            raise invalid.required("code")
        if row.sms_code_hash is None:
            raise ChallengeInvalid("no SMS code was sent for this challenge: send one first")
        if len(code) != 6 or not (code.isascii() and code.isdigit()):
            return False  # a wrong code (and never text the blind index cannot encode)
        return hmac.compare_digest(row.sms_code_hash, ctx.keys.digest(f"challenge:{row.id}", code))
    if method == Method.PASSKEY.value:
        credential = proof.get("credential")
        if not isinstance(credential, (dict, str)) or row.webauthn_challenge is None:
            raise invalid.required("credential", "credential is required (ask for passkey options first)")
        return proofs.check_passkey(
            ctx, row.user_id, credential, webauthn.from_b64url(row.webauthn_challenge)
        )
    raise invalid.one_of("method", row.methods)

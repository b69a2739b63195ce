"""Sign-up, sign-in, sessions, the caller's profile and security events, PIN, step-up challenges."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from qianbao.api.deps import SESSION_COOKIE, Body, CurrentUser, Identity, Info, MaybePrincipal
from qianbao.api.idempotency import run_idempotent
from qianbao.api.pages import page_params
from qianbao.clock import rfc3339
from qianbao.errors import NotFound
from qianbao.identity import password_change, sessions, signup, stepup
from qianbao.identity import pin as pins
from qianbao.identity.model import Operation, Principal, PrincipalKind
from qianbao.identity.tables import challenges
from qianbao.identity.users import get_user, has_passkeys
from qianbao.security import audit

router = APIRouter(tags=["identity"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VerificationRequest(Strict):
    phone: StrictStr
    purpose: StrictStr = "signup"


class UserRequest(Strict):
    phone: StrictStr
    code: StrictStr
    password: StrictStr
    name: StrictStr
    device_id: StrictStr | None = None


class UserCreated(BaseModel):
    id: str
    phone_masked: str
    kyc_tier: int
    main_wallet_id: str


class SessionRequest(Strict):
    phone: StrictStr
    password: StrictStr
    device_id: StrictStr | None = None
    cookie: bool = Field(
        default=False, description="web app: set an HttpOnly cookie instead of a bearer token"
    )


class SessionCreated(BaseModel):
    token: str | None = Field(description="the bearer token; null for cookie sessions (it is in the cookie)")
    expires_at: str
    user_id: str
    session_id: str
    device_id: str | None
    new_device: bool
    csrf_token: str | None = None


class PinRequest(Strict):
    pin: StrictStr


class ChallengeProof(Strict):
    method: StrictStr
    pin: StrictStr | None = None
    code: StrictStr | None = None
    credential: dict[str, Any] | None = None


def _scope(request: Request) -> str:
    return f"anon:{request.client.host if request.client else '-'}"


@router.post("/v1/verifications", status_code=202)
def create_verification(body: VerificationRequest, ctx: Identity, info: Info) -> dict[str, Any]:
    """Send a 6-digit code by SMS (valid 5 minutes, single use). Always 202: it never reveals who has an
    account."""
    signup.request_verification(ctx, body.phone, info, purpose=body.purpose)
    return {"status": "sent", "expires_in_s": ctx.settings.otp_ttl_s}


@router.post("/v1/users", status_code=201, response_model=UserCreated)
def create_user(
    body: UserRequest,
    request: Request,
    raw: Body,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Sign up with the SMS code of `POST /v1/verifications`: the user (KYC tier 4) and their main
    CNY wallet. Sign in afterwards with `POST /v1/sessions`."""

    def work() -> tuple[int, dict[str, Any]]:
        user = signup.register_user(
            ctx,
            phone_text=body.phone,
            code=body.code,
            password=body.password,
            name=body.name,
            device_key=sessions.clean_device_key(body.device_id or info.device_key),
            info=info,
        )
        return 201, {
            "id": user.id,
            "phone_masked": user.phone_masked,
            "kyc_tier": user.kyc_tier,
            "main_wallet_id": user.main_wallet_id,
        }

    return run_idempotent(ctx, request, scope=_scope(request), key=idempotency_key, body=raw, work=work)


@router.post("/v1/sessions", status_code=201, response_model=SessionCreated)
def create_session(
    body: SessionRequest,
    response: Response,
    ctx: Identity,
    info: Info,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> dict[str, Any]:
    """Sign in. With a second factor enrolled, the first answer is `401 step_up_required`: prove the
    challenge (no session needed for sign-in challenges) and repeat with `Step-Up: <challenge_id>`."""
    device_key = sessions.clean_device_key(body.device_id or info.device_key)
    transport = "cookie" if body.cookie else "bearer"
    user_id, phone = sessions.sign_in_with_password(
        ctx, phone_text=body.phone, password=body.password, device_key=device_key, info=info
    )
    with ctx.db.read() as conn:
        user = get_user(conn, ctx.keys, user_id)
        second_factor = user.has_totp or has_passkeys(conn, user_id)
    anonymous = Principal(PrincipalKind.USER, user_id, user_id)
    proof = stepup.require_step_up(
        ctx,
        anonymous,
        operation=Operation.SIGN_IN,
        params={"device": device_key},
        reasons=["second_factor"] if second_factor else [],
        step_up_header=step_up,
    )
    with ctx.uow() as uow:
        stepup.consume(ctx, uow.conn, proof)
        issued = sessions.issue_session(
            ctx,
            uow.conn,
            user_id=user_id,
            phone=phone,
            device_key=device_key,
            info=info,
            auth_method="password+2fa" if proof else "password",
            transport=transport,
        )
        if proof is not None and issued.device_id is not None:
            # The second factor was proved on this device: it is known from now on.
            sessions.trust_device(uow.conn, issued.device_id, ctx.now())
        uow.commit()
    expires = rfc3339(issued.expires_at_us)
    if body.cookie:
        response.set_cookie(
            SESSION_COOKIE,
            issued.token,
            max_age=ctx.settings.cookie_session_lifetime_s,
            httponly=True,
            secure=ctx.settings.cookie_secure,
            samesite="lax",
            path="/",
        )
    return {
        # A cookie session's token lives only in the HttpOnly cookie: no script may read it.
        "token": None if issued.csrf_token is not None else issued.token,
        "expires_at": expires,
        "user_id": issued.user_id,
        "session_id": issued.id,
        "device_id": issued.device_id,
        "new_device": issued.new_device,
        "csrf_token": issued.csrf_token,
    }


@router.delete("/v1/sessions/current", status_code=204)
def sign_out(principal: CurrentUser, ctx: Identity, info: Info, response: Response) -> Response:
    """Sign out: end the session this request is made with (a web session's cookie is cleared too)."""
    sessions.revoke_session(ctx, principal, principal.session_id or "", info)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.status_code = 204
    return response


@router.get("/v1/me")
def me(principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """The signed-in user: masked phone and name, KYC tier, status, which credentials are set up
    (PIN, TOTP, passkey) and whether this device is trusted."""
    assert principal.user_id is not None  # noqa: S101 - CurrentUser guarantees it
    with ctx.db.read() as conn:
        user = get_user(conn, ctx.keys, principal.user_id)
        passkey = has_passkeys(conn, principal.user_id)
    return {
        "id": user.id,
        "phone_masked": user.phone_masked,
        "name_masked": user.name_masked,
        "kyc_tier": user.kyc_tier,
        "status": user.status,
        "has_pin": user.has_pin,
        "has_totp": user.has_totp,
        "has_passkey": passkey,
        "device_trusted": principal.device_trusted,
        "cooling_off_until": None if user.cooling_off_until is None else rfc3339(user.cooling_off_until),
        "created_at": rfc3339(user.created_at),
    }


@router.get("/v1/me/sessions")
def my_sessions(principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """The caller's active sessions (device, IP, user agent, times); `current` marks this one."""
    return {
        "data": [
            {
                "id": s.id,
                "device_id": s.device_id,
                "transport": s.transport,
                "auth_method": s.auth_method,
                "ip": s.ip,
                "user_agent": s.user_agent,
                "created_at": rfc3339(s.created_at),
                "last_seen_at": rfc3339(s.last_seen_at),
                "expires_at": rfc3339(s.expires_at),
                "current": s.current,
            }
            for s in sessions.list_sessions(ctx, principal)
        ],
        "next_cursor": None,
    }


@router.delete("/v1/me/sessions/{session_id}", status_code=204)
def revoke_my_session(session_id: str, principal: CurrentUser, ctx: Identity, info: Info) -> Response:
    """End one of the caller's sessions, for example on a lost phone."""
    sessions.revoke_session(ctx, principal, session_id, info)
    return Response(status_code=204)


@router.get("/v1/me/security-events")
def my_security_events(
    principal: CurrentUser,
    ctx: Identity,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The audit entries about the caller's account (sign-ins, security changes, freezes…),
    newest first."""
    before = page_params(cursor)
    with ctx.db.read() as conn:
        events = audit.list_events(
            conn,
            subject_user_id=principal.user_id,
            before_seq=before,
            limit=limit + 1,
            exclude_events=audit.HIDDEN_FROM_USERS,
            exclude_prefixes=audit.HIDDEN_PREFIXES_FROM_USERS,
        )
    more = len(events) > limit
    events = events[:limit]
    return {
        "data": [audit_json(audit.as_seen_by_user(e)) for e in events],
        "next_cursor": str(events[-1].seq) if more and events else None,
    }


def audit_json(e: audit.AuditEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": rfc3339(e.at),
        "event": e.event,
        "outcome": e.outcome,
        "actor": {"kind": e.actor_kind, "id": e.actor_id},
        "user_id": e.subject_user_id,
        "ip": e.ip,
        "device_id": e.device_id,
        "session_id": e.session_id,
        "details": e.details,
    }


@router.put("/v1/me/pin", status_code=204)
def set_my_pin(
    body: PinRequest,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> Response:
    """Set the 6-digit payment PIN; replacing an existing one needs step-up."""
    pins.set_pin(ctx, principal, body.pin, info, step_up)
    return Response(status_code=204)


class PasswordChange(Strict):
    new_password: StrictStr


@router.put("/v1/me/password")
def change_my_password(
    body: PasswordChange,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> dict[str, Any]:
    """Set a new password (a security change: step-up). Other sessions are signed out."""
    ended = password_change.change_password(ctx, principal, body.new_password, info, step_up)
    return {"status": "changed", "sessions_revoked": ended}


def _challenge_principal(principal: Principal | None, ctx: Identity, challenge_id: str) -> Principal:
    """The signed-in user, or, for a sign-in challenge, the user it belongs to (there is no session yet)."""
    if principal is not None:
        if principal.kind is not PrincipalKind.USER:
            raise NotFound("no such challenge")
        return principal
    with ctx.db.read() as conn:
        row = conn.execute(
            challenges.select().where(
                challenges.c.id == challenge_id, challenges.c.operation == Operation.SIGN_IN
            )
        ).first()
    if row is None:
        raise NotFound("no such challenge")
    return Principal(PrincipalKind.USER, row.user_id, row.user_id)


@router.get("/v1/challenges/{challenge_id}")
def get_challenge(challenge_id: str, caller: MaybePrincipal, ctx: Identity) -> dict[str, Any]:
    """A step-up challenge: its operation, the `methods` that can prove it and its status. Sign-in
    challenges can be read before there is a session."""
    principal = _challenge_principal(caller, ctx, challenge_id)
    return challenge_json(stepup.get_challenge(ctx, principal, challenge_id))


@router.post("/v1/challenges/{challenge_id}/sms", status_code=202)
def send_challenge_sms(challenge_id: str, caller: MaybePrincipal, ctx: Identity) -> dict[str, Any]:
    """Send a code by SMS to prove the challenge with `{"method": "sms", "code"}` at `…/verify`."""
    principal = _challenge_principal(caller, ctx, challenge_id)
    stepup.send_sms(ctx, principal, challenge_id)
    return {"status": "sent"}


@router.get("/v1/challenges/{challenge_id}/passkey-options")
def challenge_passkey_options(challenge_id: str, caller: MaybePrincipal, ctx: Identity) -> dict[str, Any]:
    """WebAuthn request options for `navigator.credentials.get()`, to prove the challenge with
    a passkey at `…/verify`."""
    principal = _challenge_principal(caller, ctx, challenge_id)
    return stepup.passkey_options(ctx, principal, challenge_id)


@router.post("/v1/challenges/{challenge_id}/verify")
def verify_challenge(
    challenge_id: str, body: ChallengeProof, caller: MaybePrincipal, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Prove a challenge with `pin`, `totp` (`code`), `sms` (`code`, after `/sms`) or `passkey`
    (`credential`, after `/passkey-options`). Then repeat the original request with `Step-Up: <id>`."""
    principal = _challenge_principal(caller, ctx, challenge_id)
    proof = body.model_dump(exclude={"method"}, exclude_none=True)
    view = stepup.verify_challenge(ctx, principal, challenge_id, body.method, proof, info)
    return challenge_json(view)


def challenge_json(view: stepup.ChallengeView) -> dict[str, Any]:
    return {
        "id": view.id,
        "operation": view.operation,
        "methods": view.methods,
        "reasons": view.reasons,
        "status": view.status,
        "expires_at": rfc3339(view.expires_at),
    }

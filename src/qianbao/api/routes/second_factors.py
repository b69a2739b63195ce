"""Second factors: TOTP with recovery codes, passkeys, and signing in with a passkey.

Security changes answer `401 step_up_required` first (see `POST /v1/challenges/{id}/verify`); repeat them
with `Step-Up: <challenge_id>`. Answers that carry a secret (a TOTP secret, recovery codes, a session
token) are `Cache-Control: no-store` and are never kept for Idempotency-Key replays: repeating such a
request runs it again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr

from qianbao.api.deps import SESSION_COOKIE, Body, CurrentUser, Identity, Info
from qianbao.api.idempotency import run_idempotent
from qianbao.api.routes.identity import SessionCreated
from qianbao.clock import rfc3339
from qianbao.identity import passkey_enrolment, totp_enrolment
from qianbao.identity.sessions import clean_device_key

router = APIRouter(tags=["second-factors"])

NO_STORE = "no-store"
StepUpHeader = Annotated[str | None, Header(alias="Step-Up")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TotpEnrolmentOut(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpConfirmRequest(Strict):
    code: StrictStr


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]


class PasskeyRequest(Strict):
    credential: dict[str, Any]
    name: StrictStr | None = None


class PasskeyOut(BaseModel):
    id: str
    name: str
    created_at: str
    last_used_at: str | None = None


class PasskeyList(BaseModel):
    data: list[PasskeyOut]
    next_cursor: str | None


class PasskeySignInOptionsRequest(Strict):
    pass


class PasskeySignInOptions(BaseModel):
    ceremony_id: str
    options: dict[str, Any]


class PasskeySignInRequest(Strict):
    ceremony_id: StrictStr
    credential: dict[str, Any]
    device_id: StrictStr | None = None
    cookie: StrictBool = False


def _passkey_json(view: passkey_enrolment.PasskeyView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "created_at": rfc3339(view.created_at),
        "last_used_at": None if view.last_used_at is None else rfc3339(view.last_used_at),
    }


# --- TOTP and recovery codes ---------------------------------------------------------------------------


@router.post("/v1/me/totp", status_code=201, response_model=TotpEnrolmentOut)
def start_totp(
    principal: CurrentUser, ctx: Identity, info: Info, response: Response, step_up: StepUpHeader = None
) -> dict[str, Any]:
    """Start TOTP enrolment: a new secret for an authenticator app (as text, otpauth:// URI and QR code).
    It is not in force until confirmed. With a second factor already enrolled this needs step-up, and an
    enabled TOTP stays off until the new secret is confirmed."""
    enrolment = totp_enrolment.start_totp_enrolment(ctx, principal, info, step_up)
    response.headers["Cache-Control"] = NO_STORE
    return {"secret": enrolment.secret, "otpauth_uri": enrolment.otpauth_uri, "qr_svg": enrolment.qr_svg}


@router.post("/v1/me/totp/confirm", response_model=RecoveryCodesOut)
def confirm_totp(
    body: TotpConfirmRequest, principal: CurrentUser, ctx: Identity, info: Info, response: Response
) -> dict[str, Any]:
    """Enable TOTP with a current code from the app. Answers 10 single-use recovery codes, shown once."""
    codes = totp_enrolment.confirm_totp(ctx, principal, body.code, info)
    response.headers["Cache-Control"] = NO_STORE
    return {"recovery_codes": codes}


@router.delete("/v1/me/totp", status_code=204)
def disable_totp(principal: CurrentUser, ctx: Identity, info: Info, step_up: StepUpHeader = None) -> Response:
    """Turn TOTP off (step-up); its recovery codes stop working. A pending enrolment is dropped."""
    totp_enrolment.disable_totp(ctx, principal, info, step_up)
    return Response(status_code=204)


@router.post("/v1/me/recovery-codes", status_code=201, response_model=RecoveryCodesOut)
def regenerate_recovery_codes(
    principal: CurrentUser, ctx: Identity, info: Info, response: Response, step_up: StepUpHeader = None
) -> dict[str, Any]:
    """A new set of 10 recovery codes (step-up); the old set stops working."""
    codes = totp_enrolment.regenerate_recovery_codes(ctx, principal, info, step_up)
    response.headers["Cache-Control"] = NO_STORE
    return {"recovery_codes": codes}


# --- passkeys ------------------------------------------------------------------------------------------


@router.post("/v1/me/passkeys/options")
def passkey_options(principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """WebAuthn creation options for `navigator.credentials.create()` (valid 5 minutes, single use)."""
    return passkey_enrolment.passkey_registration_options(ctx, principal)


@router.post("/v1/me/passkeys", status_code=201, response_model=PasskeyOut)
def add_passkey(
    body: PasskeyRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    step_up: StepUpHeader = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Register the passkey `create()` made (`credential` is its `toJSON()`). Needs step-up when the
    account already has a second factor."""

    def work() -> tuple[int, dict[str, Any]]:
        view = passkey_enrolment.add_passkey(ctx, principal, body.credential, body.name, info, step_up)
        return 201, _passkey_json(view)

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.get("/v1/me/passkeys", response_model=PasskeyList)
def list_passkeys(principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """The caller's passkeys, oldest first (at most 20, so one page)."""
    return {
        "data": [_passkey_json(v) for v in passkey_enrolment.list_passkeys(ctx, principal)],
        "next_cursor": None,
    }


@router.delete("/v1/me/passkeys/{passkey_id}", status_code=204)
def remove_passkey(
    passkey_id: str, principal: CurrentUser, ctx: Identity, info: Info, step_up: StepUpHeader = None
) -> Response:
    """Remove one of the caller's passkeys (step-up)."""
    passkey_enrolment.remove_passkey(ctx, principal, passkey_id, info, step_up)
    return Response(status_code=204)


# --- signing in with a passkey -------------------------------------------------------------------------


@router.post("/v1/sessions/passkey/options", response_model=PasskeySignInOptions)
def passkey_sign_in_options(
    ctx: Identity, info: Info, body: PasskeySignInOptionsRequest | None = None
) -> dict[str, Any]:
    """Start a passwordless sign-in: request options for `navigator.credentials.get()` offering any
    passkey of this site (valid 5 minutes, one attempt). Rate-limited per IP: each call stores a
    ceremony."""
    del body
    if info.ip:
        ctx.limiter.hit("passkey_options_ip", info.ip)
    ceremony_id, options = passkey_enrolment.passkey_sign_in_options(ctx)
    return {"ceremony_id": ceremony_id, "options": options}


@router.post("/v1/sessions/passkey", status_code=201, response_model=SessionCreated)
def sign_in_with_passkey(
    body: PasskeySignInRequest, response: Response, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Sign in with a passkey (`credential` is the `get()` result's `toJSON()`); answers like
    `POST /v1/sessions`. Any failure is 401 `unauthenticated`."""
    device_key = clean_device_key(body.device_id or info.device_key)
    issued = passkey_enrolment.sign_in_with_passkey(
        ctx,
        ceremony_id=body.ceremony_id,
        credential=body.credential,
        device_key=device_key,
        info=info,
        transport="cookie" if body.cookie else "bearer",
    )
    response.headers["Cache-Control"] = NO_STORE
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
        "expires_at": rfc3339(issued.expires_at_us),
        "user_id": issued.user_id,
        "session_id": issued.id,
        "device_id": issued.device_id,
        "new_device": issued.new_device,
        "csrf_token": issued.csrf_token,
    }

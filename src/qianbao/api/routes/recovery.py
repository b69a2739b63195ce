"""Changing the phone number (换号), recovering an account whose number is lost, resetting the password.

See `qianbao.identity.phone_change` and `qianbao.identity.recovery` for the rules. None of these create
an object, so they take no `Idempotency-Key`; repeating a confirmation fails harmlessly because its codes
are single-use.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, StrictStr

from qianbao.api.deps import CurrentUser, Identity, Info
from qianbao.clock import rfc3339
from qianbao.identity import phone_change, recovery

router = APIRouter(tags=["recovery"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhoneChangeRequest(Strict):
    new_phone: StrictStr


class PhoneChangeConfirm(Strict):
    new_phone: StrictStr
    old_code: StrictStr
    new_code: StrictStr


class SecondFactor(Strict):
    method: Literal["totp", "recovery_code"]
    code: StrictStr


class RecoveryCodeRequest(Strict):
    new_phone: StrictStr


class RecoveryConfirm(Strict):
    id_number: StrictStr
    new_phone: StrictStr
    new_code: StrictStr
    pin: StrictStr
    second_factor: SecondFactor


class PasswordResetRequest(Strict):
    phone: StrictStr
    code: StrictStr
    new_password: StrictStr
    second_factor: SecondFactor | None = None


class CodesSent(BaseModel):
    status: str
    expires_in_s: int


class PhoneChangedOut(BaseModel):
    phone_masked: str
    cooling_off_until: str
    sessions_revoked: int


class PhoneRecoveredOut(BaseModel):
    status: str
    phone_masked: str
    cooling_off_until: str


class PasswordResetOut(BaseModel):
    status: str
    sessions_revoked: int


def _proof(second_factor: SecondFactor | None) -> recovery.SecondFactorProof | None:
    if second_factor is None:
        return None
    return recovery.SecondFactorProof(second_factor.method, second_factor.code)


@router.post("/v1/me/phone-change", status_code=202, response_model=CodesSent)
def request_phone_change(
    body: PhoneChangeRequest,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> dict[str, Any]:
    """Start changing the account's number: a security change, so the first answer is
    `401 step_up_required`; after the step-up, a code goes to the old number and one to the new.
    `409 phone_taken` if the new number has an account."""
    phone_change.request_phone_change(ctx, principal, body.new_phone, info, step_up)
    return {"status": "sent", "expires_in_s": ctx.settings.otp_ttl_s}


@router.post("/v1/me/phone-change/confirm", response_model=PhoneChangedOut)
def confirm_phone_change(
    body: PhoneChangeConfirm, principal: CurrentUser, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Confirm with both codes. The account then cools off (lower payment limits, 24 hours by default),
    the caller's other sessions end, and both numbers get an SMS."""
    changed = phone_change.confirm_phone_change(
        ctx,
        principal,
        new_phone_text=body.new_phone,
        old_code=body.old_code,
        new_code=body.new_code,
        info=info,
    )
    return {
        "phone_masked": changed.phone_masked,
        "cooling_off_until": rfc3339(changed.cooling_off_until),
        "sessions_revoked": changed.sessions_revoked,
    }


@router.post("/v1/recovery/phone", status_code=202, response_model=CodesSent)
def request_recovery_code(body: RecoveryCodeRequest, ctx: Identity, info: Info) -> dict[str, Any]:
    """Lost the old number: first send a code to the new one. Always 202 (it reveals nothing)."""
    recovery.request_recovery_code(ctx, body.new_phone, info)
    return {"status": "sent", "expires_in_s": ctx.settings.otp_ttl_s}


@router.post("/v1/recovery/phone/confirm", response_model=PhoneRecoveredOut)
def confirm_recovery(body: RecoveryConfirm, ctx: Identity, info: Info) -> dict[str, Any]:
    """Move the account to the new number with the ID number on file (tier-3 KYC), the payment PIN and a
    second factor (TOTP or a recovery code). Any failure is `422 recovery_not_possible`, whatever failed;
    accounts that cannot recover this way are helped by customer service. Every session ends."""
    proof = recovery.SecondFactorProof(body.second_factor.method, body.second_factor.code)
    changed = recovery.recover_phone(
        ctx,
        id_number=body.id_number,
        new_phone_text=body.new_phone,
        new_code=body.new_code,
        pin=body.pin,
        second_factor=proof,
        info=info,
    )
    return {
        "status": "recovered",
        "phone_masked": changed.phone_masked,
        "cooling_off_until": rfc3339(changed.cooling_off_until),
    }


@router.post("/v1/recovery/password", response_model=PasswordResetOut)
def reset_password(body: PasswordResetRequest, ctx: Identity, info: Info) -> dict[str, Any]:
    """Set a new password with a code from `POST /v1/verifications` (purpose `password_reset`). With TOTP
    enrolled a `second_factor` is required (`422 second_factor_required`). Every session ends."""
    reset = recovery.reset_password(
        ctx,
        phone_text=body.phone,
        code=body.code,
        new_password=body.new_password,
        second_factor=_proof(body.second_factor),
        info=info,
    )
    return {"status": "password_reset", "sessions_revoked": reset.sessions_revoked}

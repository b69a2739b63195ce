"""KYC: the caller's tier, limits and applications; verification to tiers 3, 2 and 1; operator review."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from qianbao.api.deps import Body, CurrentUser, Identity, Info
from qianbao.api.idempotency import run_idempotent
from qianbao.api.routes.operators import KycReviewer, approval_json
from qianbao.clock import rfc3339
from qianbao.identity import kyc, kyc_records, kyc_review

router = APIRouter(tags=["kyc"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IdentityRequest(Strict):
    name: StrictStr
    id_number: StrictStr


class BankAccountRequest(Strict):
    account_number: StrictStr
    account_name: StrictStr


class EnhancedRequest(Strict):
    pass


class DecisionRequest(Strict):
    approve: StrictBool
    note: StrictStr | None = None


class MoneyOut(BaseModel):
    amount: int
    currency: str


class LimitsOut(BaseModel):
    balance_cap: MoneyOut | None = Field(description="null: no limit")
    single_payment: MoneyOut | None
    daily_outflow: MoneyOut | None


class ApplicationOut(BaseModel):
    id: str
    user_id: str
    target_tier: int
    status: str = Field(description="pending, approved or rejected")
    reason: str | None
    name_masked: str | None
    id_number_masked: str | None
    account_number_masked: str | None
    created_at: str
    decided_at: str | None
    decided_by: str | None = Field(default=None, description="operators only: who decided")


class ApprovalOut(BaseModel):
    id: str
    action: str
    params: dict[str, Any]
    reason: str
    status: str
    requested_by: str
    requested_at: str
    decided_by: str | None
    decided_at: str | None
    decision_note: str | None
    result: dict[str, Any] | None


class ApprovalFiledOut(BaseModel):
    approval_id: str
    approval: ApprovalOut = Field(description="the pending `kyc_enhanced` maker-checker request")
    application: ApplicationOut = Field(description="still `pending` until a second operator approves")


class KycStatusOut(BaseModel):
    tier: int = Field(description="4 (phone only) … 1 (enhanced verification)")
    limits: LimitsOut
    used_today: MoneyOut
    remaining_today: MoneyOut | None
    cooling_off: bool
    applications: list[ApplicationOut]


class ApplicationList(BaseModel):
    data: list[ApplicationOut]
    next_cursor: str | None


def _money(amount: int | None, currency: str) -> dict[str, Any] | None:
    return None if amount is None else {"amount": amount, "currency": currency}


def application_json(a: kyc_records.Application, *, for_operator: bool = False) -> dict[str, Any]:
    shown = {
        "id": a.id,
        "user_id": a.user_id,
        "target_tier": a.target_tier,
        "status": a.status,
        "reason": a.reason,
        "name_masked": a.name_masked,
        "id_number_masked": a.id_number_masked,
        "account_number_masked": a.account_number_masked,
        "created_at": rfc3339(a.created_at),
        "decided_at": None if a.decided_at is None else rfc3339(a.decided_at),
    }
    if for_operator:
        shown["decided_by"] = a.decided_by
    return shown


def status_json(s: kyc.KycStatus) -> dict[str, Any]:
    c = s.currency
    return {
        "tier": s.tier,
        "limits": {
            "balance_cap": _money(s.limits.balance_cap, c),
            "single_payment": _money(s.limits.single_payment, c),
            "daily_outflow": _money(s.limits.daily_outflow, c),
        },
        "used_today": _money(s.used_today, c),
        "remaining_today": _money(s.remaining_today, c),
        "cooling_off": s.cooling_off,
        "applications": [application_json(a) for a in s.applications],
    }


@router.get("/v1/me/kyc", response_model=KycStatusOut, response_model_exclude_unset=True)
def my_kyc(principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """The caller's KYC tier, the limits in force (CNY, null = no limit), today's usage and applications."""
    assert principal.user_id is not None  # noqa: S101 - CurrentUser guarantees it
    return status_json(kyc.kyc_status(ctx, principal.user_id))


@router.post("/v1/me/kyc/identity", response_model=KycStatusOut)
def verify_identity(
    body: IdentityRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Tier 4 → 3 with the real name and the resident ID number (checked against the name). The name
    replaces the sign-up name. Errors: `validation_error` (an invalid ID number, under 16), `kyc_rejected`
    (name and number do not match), `id_number_in_use` (verified on another account), `conflict`."""

    def work() -> tuple[int, dict[str, Any]]:
        status = kyc.verify_identity(ctx, principal, name=body.name, id_number=body.id_number, info=info)
        return 200, status_json(status)

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.post("/v1/me/kyc/bank-account", response_model=KycStatusOut)
def verify_bank_account(
    body: BankAccountRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> JSONResponse:
    """Tier 3 → 2 with a bank account (12-19 digits, Luhn check) held in the verified real name. Adding a
    bank account needs step-up."""

    def work() -> tuple[int, dict[str, Any]]:
        status = kyc.verify_bank_account(
            ctx,
            principal,
            account_number=body.account_number,
            account_name=body.account_name,
            info=info,
            step_up_header=step_up,
        )
        return 200, status_json(status)

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.post("/v1/me/kyc/enhanced", status_code=202, response_model=ApplicationOut)
def apply_enhanced(
    body: EnhancedRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Tier 2 → 1: files an application for operator review (202, the application is `pending`)."""
    del body

    def work() -> tuple[int, dict[str, Any]]:
        return 202, application_json(kyc.apply_enhanced(ctx, principal, info))

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.get("/v1/operator/kyc-applications", response_model=ApplicationList)
def list_kyc_applications(
    operator: KycReviewer,
    ctx: Identity,
    status: Annotated[str | None, Query(max_length=16)] = "pending",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Operators: KYC applications, oldest first (default: those pending review). Data is masked."""
    del operator
    page, next_cursor = kyc_review.list_applications(ctx, status=status or None, limit=limit, cursor=cursor)
    return {"data": [application_json(a, for_operator=True) for a in page], "next_cursor": next_cursor}


@router.post(
    "/v1/operator/kyc-applications/{application_id}/decision",
    response_model=ApplicationOut,
    responses={202: {"model": ApprovalFiledOut, "description": "approval requested from a second operator"}},
)
def decide_kyc_application(
    application_id: str,
    body: DecisionRequest,
    request: Request,
    raw: Body,
    operator: KycReviewer,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Operators (risk_analyst, admin). `{"approve": false}` rejects the pending application at once (200,
    the application). `{"approve": true}` cannot approve alone — tier 1 removes every limit — so it files a
    `kyc_enhanced` maker-checker request (reason: the note) and answers 202 `{"approval_id", "approval",
    "application"}` with the application still `pending`; a different risk_analyst or admin approves it at
    `POST /v1/operator/approvals/{id}/approve`. A request already pending for the application is `409`."""

    def work() -> tuple[int, dict[str, Any]]:
        decision = kyc_review.decide_application(
            ctx, operator, application_id, approve=body.approve, note=body.note, info=info
        )
        application = application_json(decision.application, for_operator=True)
        if decision.approval is None:
            return 200, application
        filed = {
            "approval_id": decision.approval.id,
            "approval": approval_json(decision.approval),
            "application": application,
        }
        return 202, filed

    return run_idempotent(ctx, request, scope=operator.scope, key=idempotency_key, body=raw, work=work)

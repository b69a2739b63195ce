"""Operator (staff) endpoints: sign-in with TOTP, customers (masked view, reveal, freeze), the audit log,
and maker-checker approvals. Roles are loaded on every request by `require_role` (identity/operators.py
has the role matrix)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictStr

from qianbao import invalid
from qianbao.api.deps import Body, CurrentOperator, Identity, Info
from qianbao.api.idempotency import run_idempotent
from qianbao.api.pages import page_params
from qianbao.api.routes.identity import audit_json
from qianbao.clock import rfc3339
from qianbao.errors import Conflict
from qianbao.identity import approvals, customer_admin, operators, sessions
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.identity.operators import Permission, roles_for
from qianbao.payments import merchant_admin
from qianbao.payments.merchants import Merchant
from qianbao.security import audit

router = APIRouter(tags=["operators"])


def require_role(*roles: str) -> Callable[[Principal, IdentityContext], Principal]:
    """A dependency: the signed-in operator, with current roles loaded, holding one of `roles`."""
    wanted = frozenset(roles)
    unknown = wanted - frozenset(operators.ROLES)
    if unknown or not wanted:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def dependency(principal: CurrentOperator, ctx: Identity) -> Principal:
        loaded = operators.with_roles(ctx, principal)
        operators.require(loaded, wanted, "this endpoint")
        return loaded

    return dependency


AnyOperator = Annotated[Principal, Depends(require_role(*operators.ROLES))]
UserViewer = Annotated[Principal, Depends(require_role(*roles_for(Permission.VIEW_USERS)))]
AuditViewer = Annotated[Principal, Depends(require_role(*roles_for(Permission.VIEW_AUDIT)))]
Freezer = Annotated[Principal, Depends(require_role(*roles_for(Permission.FREEZE_USERS)))]
Revealer = Annotated[Principal, Depends(require_role(*roles_for(Permission.REVEAL_PII)))]
Admin = Annotated[Principal, Depends(require_role(*roles_for(Permission.MANAGE_OPERATORS)))]
KycReviewer = Annotated[Principal, Depends(require_role(*roles_for(Permission.REVIEW_KYC)))]
Approver = Annotated[Principal, Depends(require_role(*sorted(approvals.APPROVER_ROLES)))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OperatorSignIn(Strict):
    username: StrictStr
    password: StrictStr
    totp_code: StrictStr


class OperatorSessionCreated(BaseModel):
    token: str
    expires_at: str
    operator_id: str
    roles: list[str]
    session_id: str


class ReasonRequest(Strict):
    reason: StrictStr


class ApprovalRequest(Strict):
    action: StrictStr
    params: dict[str, Any]
    reason: StrictStr


class DecisionRequest(Strict):
    note: StrictStr | None = None


def _time(us: int | None) -> str | None:
    return None if us is None else rfc3339(us)


def operator_json(view: operators.OperatorView) -> dict[str, Any]:
    return {
        "id": view.id,
        "username": view.username,
        "display_name": view.display_name,
        "roles": list(view.roles),
        "status": view.status,
        "created_at": rfc3339(view.created_at),
    }


def customer_json(view: customer_admin.CustomerView) -> dict[str, Any]:
    return {
        "id": view.id,
        "phone_masked": view.phone_masked,
        "name_masked": view.name_masked,
        "id_number_masked": view.id_number_masked,
        "tier": view.kyc_tier,
        "status": view.status,
        "reason": view.status_reason,
        "wallet_ids": list(view.wallet_ids),
        "created_at": rfc3339(view.created_at),
    }


def approval_json(view: approvals.ApprovalView) -> dict[str, Any]:
    return {
        "id": view.id,
        "action": view.action,
        "params": view.params,
        "reason": view.reason,
        "status": view.status,
        "requested_by": view.requested_by,
        "requested_at": rfc3339(view.requested_at),
        "decided_by": view.decided_by,
        "decided_at": _time(view.decided_at),
        "decision_note": view.decision_note,
        "result": view.result,
    }


# --- sessions -----------------------------------------------------------------------------------------


@router.post("/v1/operator/sessions", status_code=201, response_model=OperatorSessionCreated)
def operator_sign_in(body: OperatorSignIn, ctx: Identity, info: Info) -> dict[str, Any]:
    """Sign in with username, password and the current code of the authenticator app (mandatory)."""
    issued = operators.sign_in(
        ctx, username=body.username, password=body.password, totp_code=body.totp_code, info=info
    )
    return {
        "token": issued.token,
        "expires_at": rfc3339(issued.expires_at_us),
        "operator_id": issued.operator_id,
        "roles": list(issued.roles),
        "session_id": issued.id,
    }


@router.delete("/v1/operator/sessions/current", status_code=204)
def operator_sign_out(principal: AnyOperator, ctx: Identity, info: Info) -> Response:
    """End the operator's current session."""
    sessions.revoke_session(ctx, principal, principal.session_id or "", info)
    return Response(status_code=204)


@router.get("/v1/operator/me")
def operator_me(principal: AnyOperator, ctx: Identity) -> dict[str, Any]:
    """The signed-in operator: username, name, roles and status."""
    return operator_json(operators.get_operator(ctx, principal.id))


# --- operators (admin) --------------------------------------------------------------------------------


@router.get("/v1/operator/operators")
def list_operators(_admin: Admin, ctx: Identity) -> dict[str, Any]:
    """Every operator account (admin). Operators are created with `qianbao operators create`."""
    return {"data": [operator_json(o) for o in operators.list_operators(ctx)], "next_cursor": None}


@router.post("/v1/operator/operators/{operator_id}/disable")
def disable_operator(operator_id: str, admin: Admin, ctx: Identity, info: Info) -> dict[str, Any]:
    """Disable an operator and end their sessions (admin; not oneself)."""
    if operator_id == admin.id:
        raise Conflict("you cannot disable your own account")
    actor = operators.operator_actor(admin, info)
    return operator_json(operators.disable_operator(ctx, actor=actor, operator_id=operator_id))


# --- customers ----------------------------------------------------------------------------------------


@router.get("/v1/operator/users/{user_id}")
def view_user(user_id: str, _operator: UserViewer, ctx: Identity) -> dict[str, Any]:
    """A customer's profile, masked."""
    return customer_json(customer_admin.view_customer(ctx, user_id))


@router.post("/v1/operator/users/{user_id}/reveal")
def reveal_user(
    user_id: str, body: ReasonRequest, operator: Revealer, ctx: Identity, info: Info
) -> JSONResponse:
    """Full phone number, name and ID number (risk_analyst, admin), for a stated reason; audited as
    `pii.revealed` with the reason."""
    shown = customer_admin.reveal_customer(ctx, operator, user_id, body.reason, info)
    payload = {"id": shown.id, "phone": shown.phone, "name": shown.name, "id_number": shown.id_number}
    return JSONResponse(payload, headers={"Cache-Control": "no-store"})


@router.post("/v1/operator/users/{user_id}/freeze")
def freeze_user(
    user_id: str, body: ReasonRequest, operator: Freezer, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Freeze the customer and all their wallets (no money in or out); they are told by SMS."""
    return customer_json(customer_admin.freeze_customer(ctx, operator, user_id, body.reason, info))


@router.post("/v1/operator/merchants/{merchant_id}/suspend")
def suspend_merchant(
    merchant_id: str, body: ReasonRequest, operator: Freezer, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Stop a merchant taking payments (`merchant_inactive` everywhere); its wallet keeps its money."""
    return merchant_status_json(
        merchant_admin.set_merchant_status(ctx, operator, merchant_id, "suspended", body.reason, info)
    )


@router.post("/v1/operator/merchants/{merchant_id}/reactivate")
def reactivate_merchant(
    merchant_id: str, body: ReasonRequest, operator: Freezer, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Let a suspended merchant take payments again, for a stated reason (audited; the owner is
    told)."""
    return merchant_status_json(
        merchant_admin.set_merchant_status(ctx, operator, merchant_id, "active", body.reason, info)
    )


def merchant_status_json(m: Merchant) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "owner_user_id": m.owner_user_id, "status": m.status}


@router.post("/v1/operator/users/{user_id}/unfreeze")
def unfreeze_user(
    user_id: str, body: ReasonRequest, operator: Freezer, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Lift a freeze: the customer and their wallets can move money again (audited, with a reason)."""
    return customer_json(customer_admin.unfreeze_customer(ctx, operator, user_id, body.reason, info))


# --- audit log ----------------------------------------------------------------------------------------


@router.get("/v1/operator/audit-events")
def audit_events(
    _operator: AuditViewer,
    ctx: Identity,
    user_id: str | None = None,
    event: str | None = None,
    actor_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Every audit event, newest first, filtered by subject user, event name and actor."""
    before = page_params(cursor)
    for name, value in (("user_id", user_id), ("event", event), ("actor_id", actor_id)):
        if value is not None and not (1 <= len(value) <= 64 and value.isascii() and value.isprintable()):
            raise invalid.invalid_format(name, f"{name} must be 1 to 64 printable ASCII characters")
    with ctx.db.read() as conn:
        events = audit.list_events(
            conn, subject_user_id=user_id, event=event, actor_id=actor_id, before_seq=before, limit=limit + 1
        )
    more = len(events) > limit
    events = events[:limit]
    return {
        "data": [audit_json(e) for e in events],
        "next_cursor": str(events[-1].seq) if more and events else None,
    }


# --- maker-checker ------------------------------------------------------------------------------------


@router.post("/v1/operator/approvals", status_code=202)
def request_approval(
    body: ApprovalRequest,
    request: Request,
    raw: Body,
    operator: Approver,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Ask for `limit_override` or `kyc_enhanced` (risk_analyst, admin), or `release_hold` (finance,
    admin); a different operator must approve it."""

    def work() -> tuple[int, dict[str, Any]]:
        view = approvals.request_approval(
            ctx, operator, action=body.action, params=body.params, reason=body.reason, info=info
        )
        return 202, approval_json(view)

    return run_idempotent(ctx, request, scope=operator.scope, key=idempotency_key, body=raw, work=work)


@router.get("/v1/operator/approvals")
def list_approvals(
    _operator: AnyOperator,
    ctx: Identity,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Maker-checker requests, newest first, optionally by `status` (pending, executed, rejected,
    failed)."""
    items, next_cursor = approvals.list_approvals(ctx, status=status, limit=limit, cursor=cursor)
    return {"data": [approval_json(a) for a in items], "next_cursor": next_cursor}


@router.get("/v1/operator/approvals/{approval_id}")
def get_approval(approval_id: str, _operator: AnyOperator, ctx: Identity) -> dict[str, Any]:
    """One maker-checker request with its action, parameters, who asked and who decided."""
    return approval_json(approvals.get_approval(ctx, approval_id))


@router.post("/v1/operator/approvals/{approval_id}/approve")
def approve(
    approval_id: str, operator: Approver, ctx: Identity, info: Info, body: DecisionRequest | None = None
) -> dict[str, Any]:
    """Approve and run the action (never one's own request). The answer's `status` is `executed` or
    `failed`, with the `result`."""
    note = None if body is None else body.note
    return approval_json(approvals.approve(ctx, operator, approval_id, note, info))


@router.post("/v1/operator/approvals/{approval_id}/reject")
def reject(
    approval_id: str, operator: Approver, ctx: Identity, info: Info, body: DecisionRequest | None = None
) -> dict[str, Any]:
    """Reject a pending request (never one's own); its action is not run."""
    note = None if body is None else body.note
    return approval_json(approvals.reject(ctx, operator, approval_id, note, info))

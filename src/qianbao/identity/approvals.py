"""Maker-checker: a sensitive operator action is requested by one operator and runs only when another
approves it.

Actions and who may request and approve them (both sides need one of the roles):

    limit_override   risk_analyst, admin   per-user limits in `limit_overrides` (read by identity.limits);
                                          a balance cap also becomes the ceiling of the user's wallets
    release_hold     finance, admin       voids a pending ledger transfer (`TransferSpec.void`)
    kyc_enhanced     risk_analyst, admin   approves a pending tier-1 (enhanced) KYC application: tier 1 has no
                                          limits and no balance cap. Filed by `POST /v1/operator/kyc-
                                          applications/{id}/decision {"approve": true}` (or here, with params
                                          {"application_id"}); one pending request per application

Approving one's own request is refused here (403) and by the database: a CHECK on `approvals` rejects an
executed or failed row whose `decided_by` is its `requested_by`, whatever code or SQL writes it.

Approval runs in three steps, so that a ledger call (its own write transaction) never runs inside ours:
1. *claim*: a conditional UPDATE sets `decided_by` on a pending row no one else holds (a claim older than
   `CLAIM_TTL_US` is abandoned — a crashed worker — and can be taken over);
2. *execute*: the action (ledger transfer ids derive from the approval id, so running it twice is harmless);
3. *finish*: status `executed` or `failed` with the `result`, and the audit events.
A limit override and a KYC approval are executed and finished in one transaction. Every step is audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from qianbao import invalid
from qianbao.clock import rfc3339, to_us
from qianbao.errors import Conflict, Forbidden, NotFound, QianbaoError
from qianbao.identity import kyc_records
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, RequestInfo
from qianbao.identity.operators import (
    ROLE_MATRIX,
    Permission,
    clean_reason,
    known_id,
    operator_actor,
    require,
)
from qianbao.identity.tables import approvals, kyc_applications, limit_overrides, users
from qianbao.ids import new_id
from qianbao.ledger.model import MAX_AMOUNT, PendingStatus, TransferKind, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.security import audit
from qianbao.wallets.accounts import wallet_ids_of

CLAIM_TTL_US = 60_000_000
STATUSES = ("pending", "executed", "rejected", "failed")
LIMIT_FIELDS = ("single_payment", "daily_outflow", "balance_cap")
_APPROVAL_ID = re.compile(r"apr_[0-9a-z]{26}")


class Action(StrEnum):
    LIMIT_OVERRIDE = "limit_override"
    RELEASE_HOLD = "release_hold"
    KYC_ENHANCED = "kyc_enhanced"


ACTION_ROLES: dict[Action, frozenset[str]] = {
    Action.LIMIT_OVERRIDE: ROLE_MATRIX[Permission.LIMIT_OVERRIDE],
    Action.RELEASE_HOLD: ROLE_MATRIX[Permission.RELEASE_HOLD],
    Action.KYC_ENHANCED: ROLE_MATRIX[Permission.REVIEW_KYC],
}
# Roles that may take part in maker-checker at all.
APPROVER_ROLES = frozenset(role for roles in ACTION_ROLES.values() for role in roles)


class ClaimLost(Conflict):
    """The approver's claim on a request lapsed while the action ran, and someone else took it over."""


@dataclass(frozen=True, slots=True)
class ApprovalView:
    id: str
    action: str
    params: dict[str, Any]
    reason: str
    status: str
    requested_by: str
    requested_at: int
    decided_by: str | None
    decided_at: int | None
    decision_note: str | None
    result: dict[str, Any] | None


def _view(row: Any) -> ApprovalView:
    # A claim in progress is not a decision yet: show who decided only once the row is decided.
    decided = row.status != "pending"
    return ApprovalView(
        id=row.id,
        action=row.action,
        params=dict(row.params),
        reason=row.reason,
        status=row.status,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        decided_by=row.decided_by if decided else None,
        decided_at=row.decided_at if decided else None,
        decision_note=row.decision_note,
        result=None if row.result is None else dict(row.result),
    )


def _action(value: object) -> Action:
    try:
        return Action(str(value))
    except ValueError:
        raise invalid.one_of("action", [a.value for a in Action]) from None


def _note(note: object) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > 500 or not note.isprintable():
        raise invalid.too_long("note", 500, printable=True)
    return note.strip() or None


# --- parameters ---------------------------------------------------------------------------------------


def _limit_params(ctx: IdentityContext, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    unknown = sorted(set(params) - {"user_id", "expires_at", *LIMIT_FIELDS})
    if unknown:
        raise invalid.because(
            "extra_field", f"unknown parameter(s): {', '.join(unknown)}", field=f"params.{unknown[0]}"
        )
    user_id = params.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise invalid.required("params.user_id")
    known_id(user_id, "user")
    clean: dict[str, Any] = {"user_id": user_id}
    for name in LIMIT_FIELDS:
        value = params.get(name)
        if value is None:
            continue
        if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
            raise invalid.amount_range(f"params.{name}", 0, MAX_AMOUNT)
        clean[name] = value
    if not any(name in clean for name in LIMIT_FIELDS):
        raise invalid.at_least_one_of("params", LIMIT_FIELDS)
    expires = params.get("expires_at")
    if expires is not None:
        expires_us = _parse_time(expires, "params.expires_at")
        if expires_us <= ctx.now():
            raise invalid.because(
                "in_future", "params.expires_at must be in the future", field="params.expires_at"
            )
        if "balance_cap" in clean:
            # A cap lives on as the wallets' ledger ceiling, which nothing lowers when the override lapses.
            raise invalid.because(
                "cap_cannot_expire",
                "a balance_cap override cannot expire: request a new override to change it later",
                field="params.expires_at",
            )
        clean["expires_at"] = rfc3339(expires_us)
    with ctx.db.read() as conn:
        if conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is None:
            raise NotFound("no such user")
    return clean, user_id


def _parse_time(value: object, field: str) -> int:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError(value)
        return to_us(parsed)
    except (ValueError, OverflowError):
        raise invalid.date_time(field) from None


def _hold_params(ctx: IdentityContext, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    if set(params) != {"transfer_id"} or not isinstance(params["transfer_id"], str):
        raise invalid.because(
            "params_exactly",
            'params must be {"transfer_id": "…"}',
            field="params",
            params={"names": ["transfer_id"]},
        )
    transfer_id = params["transfer_id"]
    found = LedgerReader(ctx.db).get_transfer(transfer_id)
    if found is None:
        raise NotFound("no such transfer")
    if found.transfer.kind is not TransferKind.PENDING:
        raise invalid.because(
            "not_a_hold", "the transfer is not a hold (a pending transfer)", field="params.transfer_id"
        )
    if found.pending_status is not PendingStatus.PENDING:
        raise Conflict(f"the hold is already {found.pending_status}")
    return {"transfer_id": transfer_id}, _hold_owner(ctx, found.transfer.debit_account_id)


def _kyc_params(ctx: IdentityContext, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`{"application_id"}` of a pending tier-1 application; the stored params also name its user."""
    if set(params) != {"application_id"} or not isinstance(params["application_id"], str):
        raise invalid.because(
            "params_exactly",
            'params must be {"application_id": "…"}',
            field="params",
            params={"names": ["application_id"]},
        )
    with ctx.db.read() as conn:
        row = _pending_enhanced(conn, params["application_id"], lock=False)
    return {"application_id": row.id, "user_id": row.user_id}, str(row.user_id)


def _pending_enhanced(conn: Connection, application_id: str, *, lock: bool) -> Any:
    """The pending tier-1 application (locked when `lock`), with no other pending request to approve it."""
    if lock:
        row = kyc_records.lock_pending(conn, application_id)
    else:
        if not kyc_records.APPLICATION_ID.fullmatch(application_id):
            raise NotFound("no such application")
        row = conn.execute(select(kyc_applications).where(kyc_applications.c.id == application_id)).first()
        if row is None:
            raise NotFound("no such application")
        if row.status != "pending":
            raise Conflict(f"the application was already {row.status}", application_status=row.status)
    if int(row.target_tier) != kyc_records.ENHANCED_TIER:
        raise invalid.because(
            "not_enhanced_application",
            "the application is not for tier 1 (enhanced)",
            field="params.application_id",
        )
    open_requests = conn.execute(
        select(approvals.c.id, approvals.c.params).where(
            approvals.c.action == Action.KYC_ENHANCED.value, approvals.c.status == "pending"
        )
    ).all()
    for other in open_requests:
        if dict(other.params).get("application_id") == application_id:
            raise Conflict("an approval for this application is already pending", approval_id=other.id)
    return row


def _hold_owner(ctx: IdentityContext, account_id: str) -> str | None:
    """The user whose wallet the hold is on (wallet accounts name their owner), for the audit log."""
    account = LedgerReader(ctx.db).get_account(account_id)
    if account is None or account.code != "wallet.user":
        return None
    return account.owner_ref


# --- requests and decisions ---------------------------------------------------------------------------


def request_approval(
    ctx: IdentityContext,
    operator: Principal,
    *,
    action: object,
    params: object,
    reason: object,
    info: RequestInfo,
) -> ApprovalView:
    """Record a pending request (the maker's half)."""
    kind = _action(action)
    require(operator, ACTION_ROLES[kind], f"requesting {kind.value}")
    if not isinstance(params, dict):
        raise invalid.because("not_object", "params must be an object", field="params")
    # A KYC approval's reason becomes the application's reason, which holds 200 characters.
    why = clean_reason(reason, max_length=200 if kind is Action.KYC_ENHANCED else 500)
    subject: str | None
    if kind is Action.LIMIT_OVERRIDE:
        clean, subject = _limit_params(ctx, params)
    elif kind is Action.KYC_ENHANCED:
        clean, subject = _kyc_params(ctx, params)
    else:
        clean, subject = _hold_params(ctx, params)
    now = ctx.now()
    approval_id = new_id("apr")
    with ctx.db.write() as conn:
        if kind is Action.KYC_ENHANCED:
            # Again under the application's row lock: two operators filing at once cannot both succeed.
            _pending_enhanced(conn, clean["application_id"], lock=True)
        conn.execute(
            insert(approvals).values(
                id=approval_id,
                action=kind.value,
                params=clean,
                reason=why,
                status="pending",
                requested_by=operator.id,
                requested_at=now,
            )
        )
        audit.record(
            conn,
            now,
            "approval.requested",
            operator_actor(operator, info),
            subject_user_id=subject,
            details={"approval_id": approval_id, "action": kind.value, "params": clean, "reason": why},
        )
        row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).one()
    return _view(row)


def get_approval(ctx: IdentityContext, approval_id: str) -> ApprovalView:
    known_id(approval_id, "approval")
    with ctx.db.read() as conn:
        row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).first()
    if row is None:
        raise NotFound("no such approval")
    return _view(row)


def list_approvals(
    ctx: IdentityContext, *, status: str | None, limit: int = 20, cursor: str | None = None
) -> tuple[list[ApprovalView], str | None]:
    """Newest first; the cursor is the last id of the previous page."""
    query = select(approvals).order_by(approvals.c.id.desc())
    if status is not None:
        if status not in STATUSES:
            raise invalid.one_of("status", STATUSES)
        query = query.where(approvals.c.status == status)
    if cursor:
        if not _APPROVAL_ID.fullmatch(cursor):
            raise invalid.cursor()
        query = query.where(approvals.c.id < cursor)
    with ctx.db.read() as conn:
        rows = conn.execute(query.limit(limit + 1)).all()
    items = [_view(r) for r in rows[:limit]]
    return items, items[-1].id if len(rows) > limit and items else None


def _open_to(now: int) -> Any:
    """A pending row no one holds a live claim on."""
    return and_(
        approvals.c.status == "pending",
        or_(approvals.c.decided_by.is_(None), approvals.c.decided_at < now - CLAIM_TTL_US),
    )


def _decidable(ctx: IdentityContext, approval_id: str) -> tuple[Any, Action]:
    known_id(approval_id, "approval")
    with ctx.db.read() as conn:
        row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).first()
    if row is None:
        raise NotFound("no such approval")
    if row.status != "pending":
        raise Conflict(f"this request was already decided ({row.status})")
    return row, Action(row.action)


def approve(
    ctx: IdentityContext, operator: Principal, approval_id: str, note: object, info: RequestInfo
) -> ApprovalView:
    """The checker's half: a second operator with the action's role approves, and the action runs."""
    row, kind = _decidable(ctx, approval_id)
    require(operator, ACTION_ROLES[kind], f"approving {kind.value}")
    if row.requested_by == operator.id:
        raise Forbidden("you requested this action: a second operator must approve it")
    clean_note = _note(note)
    now = ctx.now()
    with ctx.db.write() as conn:
        claimed = conn.execute(
            update(approvals)
            .where(approvals.c.id == approval_id, _open_to(now))
            .values(decided_by=operator.id, decided_at=now, decision_note=clean_note)
        ).rowcount
        if claimed == 1:
            audit.record(
                conn,
                now,
                "approval.approved",
                operator_actor(operator, info),
                subject_user_id=_subject(row),
                details={"approval_id": approval_id, "action": kind.value, "note": clean_note},
            )
    if claimed != 1:
        raise Conflict("another operator is deciding or has decided this request")
    if kind is Action.LIMIT_OVERRIDE:
        return _execute_limit_override(ctx, operator, row, info)
    if kind is Action.KYC_ENHANCED:
        return _execute_kyc_enhanced(ctx, operator, row, info)
    return _execute_release_hold(ctx, operator, row, info)


def reject(
    ctx: IdentityContext, operator: Principal, approval_id: str, note: object, info: RequestInfo
) -> ApprovalView:
    """Turn a request down (any operator with the action's role; the requester may withdraw their own)."""
    row, kind = _decidable(ctx, approval_id)
    if row.requested_by != operator.id:
        require(operator, ACTION_ROLES[kind], f"rejecting {kind.value}")
    clean_note = _note(note)
    now = ctx.now()
    with ctx.db.write() as conn:
        done = conn.execute(
            update(approvals)
            .where(approvals.c.id == approval_id, _open_to(now))
            .values(status="rejected", decided_by=operator.id, decided_at=now, decision_note=clean_note)
        ).rowcount
        if done != 1:
            raise Conflict("another operator is deciding or has decided this request")
        audit.record(
            conn,
            now,
            "approval.rejected",
            operator_actor(operator, info),
            subject_user_id=_subject(row),
            details={"approval_id": approval_id, "action": kind.value, "note": clean_note},
        )
        updated = conn.execute(select(approvals).where(approvals.c.id == approval_id)).one()
    return _view(updated)


def _subject(row: Any) -> str | None:
    user_id = row.params.get("user_id")
    return user_id if isinstance(user_id, str) else None


def _finish(
    conn: Connection,
    operator: Principal,
    row: Any,
    status: str,
    result: dict[str, Any],
    info: RequestInfo,
    now: int,
    subject: str | None,
) -> Any:
    done = conn.execute(
        update(approvals)
        .where(
            approvals.c.id == row.id, approvals.c.status == "pending", approvals.c.decided_by == operator.id
        )
        .values(status=status, result=result)
    ).rowcount
    if done != 1:
        raise ClaimLost("the claim on this request was lost (it took too long); look at it again")
    audit.record(
        conn,
        now,
        "approval.executed",
        operator_actor(operator, info),
        subject_user_id=subject,
        outcome="success" if status == "executed" else "failure",
        details={"approval_id": row.id, "action": row.action, "result": result},
    )
    return conn.execute(select(approvals).where(approvals.c.id == row.id)).one()


def _execute_limit_override(
    ctx: IdentityContext, operator: Principal, row: Any, info: RequestInfo
) -> ApprovalView:
    params = dict(row.params)
    user_id = str(params["user_id"])
    now = ctx.now()
    try:
        expires = (
            None if params.get("expires_at") is None else _parse_time(params["expires_at"], "expires_at")
        )
        if expires is not None and expires <= now:
            raise invalid.because(
                "in_future", "the override would already have expired", field="params.expires_at"
            )
        with ctx.db.write() as conn:
            old_cap = conn.execute(
                select(limit_overrides.c.balance_cap).where(limit_overrides.c.user_id == user_id)
            ).scalar()
            values = {
                "balance_cap": params.get("balance_cap"),
                "single_payment": params.get("single_payment"),
                "daily_outflow": params.get("daily_outflow"),
                "reason": row.reason,
                "approval_id": row.id,
                "created_at": now,
                "expires_at": expires,
            }
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(
                dialect.insert(limit_overrides)
                .values(user_id=user_id, **values)
                .on_conflict_do_update(index_elements=["user_id"], set_=values)
            )
            wallets: list[str] = []
            if values["balance_cap"] is not None or old_cap is not None:
                # The cap in force (the override's, else the tier's) becomes every wallet's ceiling.
                cap = values["balance_cap"]
                if cap is None:
                    tier = conn.execute(select(users.c.kyc_tier).where(users.c.id == user_id)).scalar_one()
                    cap = ctx.settings.kyc_tiers[int(tier)].balance_cap
                wallets = wallet_ids_of(conn, user_id)
                for wallet_id in wallets:
                    ctx.ledger.set_balance_ceiling_in(conn, wallet_id, cap)
            result = {
                "override": {k: params.get(k) for k in (*LIMIT_FIELDS, "expires_at")},
                "wallet_ids": wallets,
            }
            final = _finish(conn, operator, row, "executed", result, info, now, user_id)
        return _view(final)
    except ClaimLost:
        raise
    except QianbaoError as exc:
        failure = {"code": exc.code, "detail": exc.detail}
        with ctx.db.write() as conn:
            final = _finish(conn, operator, row, "failed", failure, info, ctx.now(), user_id)
        return _view(final)


def _execute_release_hold(
    ctx: IdentityContext, operator: Principal, row: Any, info: RequestInfo
) -> ApprovalView:
    transfer_id = str(row.params["transfer_id"])
    found = LedgerReader(ctx.db).get_transfer(transfer_id)
    subject = None if found is None else _hold_owner(ctx, found.transfer.debit_account_id)
    # The void's id derives from the approval: a retried approval cannot void twice or void something else.
    spec = TransferSpec.void(
        f"{row.id}.void", transfer_id, code="hold.released", metadata={"approval_id": row.id}
    )
    (outcome,) = ctx.ledger.create_transfers([spec])
    if outcome.succeeded:
        status, result = "executed", {"void_transfer_id": outcome.id, "code": outcome.code.value}
    else:
        status, result = "failed", {"code": outcome.code.value, "detail": outcome.detail}
    with ctx.db.write() as conn:
        final = _finish(conn, operator, row, status, result, info, ctx.now(), subject)
    return _view(final)


def _execute_kyc_enhanced(
    ctx: IdentityContext, operator: Principal, row: Any, info: RequestInfo
) -> ApprovalView:
    """Raise the applicant to tier 1 (no limits, no balance cap), decided by the approving operator; fails
    (recorded, nothing changed) if the application was decided meanwhile or the user's tier moved."""
    application_id = str(row.params["application_id"])
    user_id = _subject(row)
    try:
        with ctx.uow() as uow:
            application = kyc_records.lock_pending(uow.conn, application_id)
            decided = kyc_records.decide_pending(
                ctx,
                uow,
                application,
                approve=True,
                reason=row.reason,
                actor=operator_actor(operator, info),
                decided_by=operator.id,
                details={"approval_id": row.id, "requested_by": row.requested_by},
            )
            result = {
                "application_id": application_id,
                "application_status": decided.status,
                "kyc_tier": kyc_records.ENHANCED_TIER,
            }
            final = _finish(uow.conn, operator, row, "executed", result, info, ctx.now(), user_id)
            uow.commit()
        return _view(final)
    except ClaimLost:
        raise
    except QianbaoError as exc:
        failure = {"code": exc.code, "detail": exc.detail, "application_id": application_id}
        with ctx.db.write() as conn:
            final = _finish(conn, operator, row, "failed", failure, info, ctx.now(), user_id)
        return _view(final)

"""Operator review of tier-1 (enhanced verification) applications: the review queue and the decision.

Users file the application in `identity/kyc.py` (`apply_enhanced`). An operator rejects it here, in one
transaction with its audit and outbox events. Approving (tier 1: no limits, no balance cap) takes two
operators: the reviewer files a `kyc_enhanced` maker-checker request (`identity/approvals.py`), and the tier
changes only when a different risk_analyst or admin approves it (`kyc_records.decide_pending`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from qianbao import invalid
from qianbao.errors import NotFound
from qianbao.identity import approvals
from qianbao.identity.context import IdentityContext
from qianbao.identity.kyc_records import (
    APPLICATION_ID,
    Application,
    actor_of,
    application_view,
    decide_pending,
    lock_pending,
)
from qianbao.identity.model import Principal, RequestInfo
from qianbao.identity.operators import ROLE_MATRIX, Permission, require
from qianbao.identity.tables import KYC_STATUSES, kyc_applications

MAX_NOTE_LENGTH = 200
MAX_PAGE = 100
DEFAULT_APPROVAL_REASON = "tier-1 (enhanced) KYC application checked by the reviewer"


def clean_note(note: str | None) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH or not note.isprintable():
        raise invalid.too_long("note", MAX_NOTE_LENGTH, printable=True)
    return note.strip() or None


def list_applications(
    ctx: IdentityContext, *, status: str | None, limit: int = 20, cursor: str | None = None
) -> tuple[list[Application], str | None]:
    """The review queue, oldest first; `cursor` is the last id of the previous page."""
    if status is not None and status not in KYC_STATUSES:
        raise invalid.one_of("status", KYC_STATUSES)
    if not 1 <= limit <= MAX_PAGE:
        raise invalid.out_of_range("limit", 1, MAX_PAGE)
    query = select(kyc_applications).order_by(kyc_applications.c.id).limit(limit + 1)
    if status is not None:
        query = query.where(kyc_applications.c.status == status)
    if cursor:
        if not APPLICATION_ID.fullmatch(cursor):
            raise invalid.cursor()
        query = query.where(kyc_applications.c.id > cursor)
    with ctx.db.read() as conn:
        rows = conn.execute(query).all()
    page = [application_view(ctx.keys, r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a review decision did: a rejection decides the application; an approval only files the
    maker-checker request (`approval`), and the application stays pending until a second operator approves."""

    application: Application
    approval: approvals.ApprovalView | None = None


def decide_application(
    ctx: IdentityContext,
    operator: Principal,
    application_id: str,
    *,
    approve: bool,
    note: str | None,
    info: RequestInfo,
) -> Decision:
    """An operator (risk_analyst, admin) rejects an enhanced application, or asks for its approval.

    Approving sets tier 1, which removes every limit and the balance cap, so it takes two people: this files
    a `kyc_enhanced` approval request (its reason is the note), which a different operator approves at
    `POST /v1/operator/approvals/{id}/approve`. Rejecting lowers nothing and is decided here, at once."""
    note = clean_note(note)
    if not isinstance(application_id, str) or not APPLICATION_ID.fullmatch(application_id):
        raise NotFound("no such application")
    if approve:
        approval = approvals.request_approval(
            ctx,
            operator,
            action=approvals.Action.KYC_ENHANCED,
            params={"application_id": application_id},
            reason=approval_reason(note),
            info=info,
        )
        with ctx.db.read() as conn:
            row = conn.execute(select(kyc_applications).where(kyc_applications.c.id == application_id)).one()
        return Decision(application_view(ctx.keys, row), approval)
    require(operator, ROLE_MATRIX[Permission.REVIEW_KYC], "deciding KYC applications")
    actor = actor_of(operator, info)
    with ctx.uow() as uow:
        row = lock_pending(uow.conn, application_id)
        decided = decide_pending(
            ctx, uow, row, approve=False, reason=note, actor=actor, decided_by=operator.id
        )
        uow.commit()
    return Decision(application_view(ctx.keys, decided))


def approval_reason(note: str | None) -> str:
    """The maker-checker reason: the reviewer's note, or a default (a reason has 3+ characters)."""
    if note is None:
        return DEFAULT_APPROVAL_REASON
    return note if len(note) >= 3 else f"{DEFAULT_APPROVAL_REASON}: {note}"

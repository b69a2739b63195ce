"""Operator review of tier-1 (enhanced verification) applications: the review queue and the decision.

Users file the application in `identity/kyc.py` (`apply_enhanced`); an operator approves (tier 1: no
limits, no balance cap) or rejects it here, in one transaction with its audit and outbox events.
"""

from __future__ import annotations

import re

from sqlalchemy import select, update

from qianbao.errors import Conflict, InvalidInput, NotFound
from qianbao.identity.context import IdentityContext
from qianbao.identity.kyc_records import (
    BANK_ACCOUNT_TIER,
    ENHANCED_TIER,
    Application,
    actor_of,
    application_view,
    change_tier,
)
from qianbao.identity.model import Principal, RequestInfo
from qianbao.identity.tables import KYC_STATUSES, kyc_applications
from qianbao.identity.users import credential_row
from qianbao.security import audit
from qianbao.store.outbox import OutboxEvent

MAX_NOTE_LENGTH = 200
MAX_PAGE = 100
_APPLICATION_ID = re.compile(r"kyc_[0-9a-z]{26}")


def clean_note(note: str | None) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH or not note.isprintable():
        raise InvalidInput(f"note must be up to {MAX_NOTE_LENGTH} printable characters", field="note")
    return note.strip() or None


def list_applications(
    ctx: IdentityContext, *, status: str | None, limit: int = 20, cursor: str | None = None
) -> tuple[list[Application], str | None]:
    """The review queue, oldest first; `cursor` is the last id of the previous page."""
    if status is not None and status not in KYC_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(KYC_STATUSES)}", field="status")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    query = select(kyc_applications).order_by(kyc_applications.c.id).limit(limit + 1)
    if status is not None:
        query = query.where(kyc_applications.c.status == status)
    if cursor:
        if not _APPLICATION_ID.fullmatch(cursor):
            raise InvalidInput("cursor is not valid", field="cursor")
        query = query.where(kyc_applications.c.id > cursor)
    with ctx.db.read() as conn:
        rows = conn.execute(query).all()
    page = [application_view(ctx.keys, r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


def decide_application(
    ctx: IdentityContext,
    operator: Principal,
    application_id: str,
    *,
    approve: bool,
    note: str | None,
    info: RequestInfo,
) -> Application:
    """An operator approves (tier 1: no limits, no balance cap) or rejects an enhanced application.

    Any operator may decide for now; role checks arrive with operator roles."""
    note = clean_note(note)
    if not isinstance(application_id, str) or not _APPLICATION_ID.fullmatch(application_id):
        raise NotFound("no such application")
    actor = actor_of(operator, info)
    with ctx.uow() as uow:
        conn = uow.conn
        row = conn.execute(
            select(kyc_applications).where(kyc_applications.c.id == application_id).with_for_update()
        ).first()
        if row is None:
            raise NotFound("no such application")
        if row.status != "pending":
            raise Conflict(f"the application was already {row.status}", application_status=row.status)
        user_id = str(row.user_id)
        tier = int(credential_row(conn, user_id, lock=True).kyc_tier)
        now = ctx.now()
        if approve:
            if tier != BANK_ACCOUNT_TIER or int(row.target_tier) != ENHANCED_TIER:
                raise Conflict(
                    "the user's tier changed since the application: it cannot be approved", kyc_tier=tier
                )
            change_tier(
                ctx,
                uow,
                user_id=user_id,
                from_tier=tier,
                to_tier=ENHANCED_TIER,
                actor=actor,
                application_id=application_id,
            )
        conn.execute(
            update(kyc_applications)
            .where(kyc_applications.c.id == application_id)
            .values(
                status="approved" if approve else "rejected",
                reason=note,
                decided_at=now,
                decided_by=operator.id,
            )
        )
        details = {"application_id": application_id, "approved": approve, "target_tier": int(row.target_tier)}
        audit.record(conn, now, "kyc.application_decided", actor, subject_user_id=user_id, details=details)
        uow.emit(
            OutboxEvent(
                "kyc.application_decided", "kyc_application", application_id, {"user_id": user_id, **details}
            )
        )
        decided = conn.execute(select(kyc_applications).where(kyc_applications.c.id == application_id)).one()
        uow.commit()
    return application_view(ctx.keys, decided)

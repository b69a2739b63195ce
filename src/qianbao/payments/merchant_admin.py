"""Operators suspend and reactivate merchants (fraud, a complaint, unpaid dues).

A suspended merchant is refused everywhere with `merchant_inactive` (423): customers cannot pay it, and its
own QR codes, charges and checkouts stop. Money already in its wallet stays there (to freeze money, freeze
the owner's account). Any operator who may freeze users may do this; each change is audited with its
reason, and the merchant's owner hears of it (event `merchant.suspended` / `merchant.reactivated`).
"""

from __future__ import annotations

from sqlalchemy import update

from qianbao.errors import Conflict, NotFound
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
from qianbao.payments.merchant_tables import merchants
from qianbao.payments.merchants import Merchant, merchant_by_id
from qianbao.security import audit
from qianbao.store.outbox import OutboxEvent

EVENTS = {"suspended": "merchant.suspended", "active": "merchant.reactivated"}


def set_merchant_status(
    ctx: IdentityContext,
    operator: Principal,
    merchant_id: str,
    status: str,
    reason: object,
    info: RequestInfo,
) -> Merchant:
    """Suspend (`suspended`) or reactivate (`active`) a merchant, with a reason for the audit log."""
    require(operator, ROLE_MATRIX[Permission.FREEZE_USERS], "suspending or reactivating a merchant")
    known_id(merchant_id, "merchant")
    why = clean_reason(reason, max_length=200)
    if status not in EVENTS:
        raise ValueError(f"unknown merchant status {status!r}")
    with ctx.uow() as uow:
        before = merchant_by_id(uow.conn, merchant_id)
        if before is None:
            raise NotFound("no such merchant")
        if before.status == "closed":
            raise Conflict("the merchant is closed")
        now = ctx.now()
        if before.status != status:
            uow.conn.execute(update(merchants).where(merchants.c.id == merchant_id).values(status=status))
            uow.emit(
                OutboxEvent(
                    EVENTS[status],
                    "merchant",
                    merchant_id,
                    {"merchant_id": merchant_id, "merchant_user_id": before.owner_user_id, "status": status},
                )
            )
        audit.record(
            uow.conn,
            now,
            EVENTS[status],
            operator_actor(operator, info),
            subject_user_id=before.owner_user_id,
            details={"merchant_id": merchant_id, "reason": why, "was": before.status},
        )
        uow.commit()
        after = merchant_by_id(uow.conn, merchant_id)
    assert after is not None  # noqa: S101 - merchants are never deleted
    return after

"""KYC tiers and the records of moving between them: the `kyc_applications` rows (personal data
encrypted, shown masked), declined verifications kept for fraud review, and the tier change itself.

Shared by the user-facing flows (`identity/kyc.py`), operator review (`identity/kyc_review.py`) and
maker-checker (`identity/approvals.py`, which runs an approved `kyc_enhanced` request through
`decide_pending`). A tier change, in the caller's transaction: the user row, every wallet's balance ceiling
(the ledger enforces the tier's balance cap), the audit event `kyc.tier_changed` and an outbox event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from qianbao.errors import Conflict, NotFound
from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import limits_for
from qianbao.identity.model import Principal, RequestInfo
from qianbao.identity.tables import kyc_applications, users
from qianbao.identity.users import credential_row
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.keyring import KeyRing
from qianbao.security.masking import mask_account_number, mask_id_number, mask_name
from qianbao.store.outbox import OutboxEvent
from qianbao.store.unit_of_work import UnitOfWork
from qianbao.wallets.accounts import wallet_ids_of

IDENTITY_TIER = 3
BANK_ACCOUNT_TIER = 2
ENHANCED_TIER = 1
SYSTEM_DECIDER = "system"
APPLICATION_ID = re.compile(r"kyc_[0-9a-z]{26}")


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    user_id: str
    target_tier: int
    status: str
    reason: str | None
    created_at: int
    decided_at: int | None
    decided_by: str | None
    name_masked: str | None
    id_number_masked: str | None
    account_number_masked: str | None


def _open(keys: KeyRing, cipher: str | None, column: str, mask: Any) -> str | None:
    if cipher is None:
        return None
    masked: str = mask(keys.decrypt(cipher, context=context("kyc_applications", column)))
    return masked


def application_view(keys: KeyRing, row: Any) -> Application:
    return Application(
        id=row.id,
        user_id=row.user_id,
        target_tier=int(row.target_tier),
        status=row.status,
        reason=row.reason,
        created_at=int(row.created_at),
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        name_masked=_open(keys, row.name_cipher, "name_cipher", mask_name),
        id_number_masked=_open(keys, row.id_number_cipher, "id_number_cipher", mask_id_number),
        account_number_masked=_open(
            keys, row.account_number_cipher, "account_number_cipher", mask_account_number
        ),
    )


def actor_of(principal: Principal, info: RequestInfo) -> audit.Actor:
    return audit.Actor(
        principal.kind.value,
        principal.id,
        ip=info.ip,
        device_id=principal.device_id,
        session_id=principal.session_id,
    )


def sync_balance_caps(ctx: IdentityContext, conn: Connection, user_id: str) -> int | None:
    """Set every wallet's ledger ceiling to the user's balance cap now in force (after a tier change)."""
    _tier, limits, _cooling = limits_for(conn, ctx.settings, user_id, ctx.now())
    for wallet_id in wallet_ids_of(conn, user_id):
        ctx.ledger.set_balance_ceiling_in(conn, wallet_id, limits.balance_cap)
    return limits.balance_cap


def change_tier(
    ctx: IdentityContext,
    uow: UnitOfWork,
    *,
    user_id: str,
    from_tier: int,
    to_tier: int,
    actor: audit.Actor,
    application_id: str,
    values: Mapping[str, Any] | None = None,
) -> None:
    now = ctx.now()
    conn = uow.conn
    conn.execute(
        update(users).where(users.c.id == user_id).values(kyc_tier=to_tier, updated_at=now, **(values or {}))
    )
    sync_balance_caps(ctx, conn, user_id)
    details = {"from_tier": from_tier, "to_tier": to_tier, "application_id": application_id}
    audit.record(conn, now, "kyc.tier_changed", actor, subject_user_id=user_id, details=details)
    uow.emit(OutboxEvent("kyc.tier_changed", "user", user_id, {"user_id": user_id, **details}))


def lock_pending(conn: Connection, application_id: object) -> Any:
    """The application's row, locked for the caller's transaction: NotFound, or Conflict unless pending."""
    if not isinstance(application_id, str) or not APPLICATION_ID.fullmatch(application_id):
        raise NotFound("no such application")
    row = conn.execute(
        select(kyc_applications).where(kyc_applications.c.id == application_id).with_for_update()
    ).first()
    if row is None:
        raise NotFound("no such application")
    if row.status != "pending":
        raise Conflict(f"the application was already {row.status}", application_status=row.status)
    return row


def decide_pending(
    ctx: IdentityContext,
    uow: UnitOfWork,
    row: Any,
    *,
    approve: bool,
    reason: str | None,
    actor: audit.Actor,
    decided_by: str,
    details: Mapping[str, Any] | None = None,
) -> Any:
    """Decide a pending application locked by `lock_pending`, in the caller's unit of work: approving an
    enhanced application raises the user to tier 1 (no limits, no balance cap). Audited as
    `kyc.application_decided` (with `details`) and announced in the outbox. Returns the decided row."""
    conn = uow.conn
    application_id = str(row.id)
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
            status="approved" if approve else "rejected", reason=reason, decided_at=now, decided_by=decided_by
        )
    )
    recorded = {
        "application_id": application_id,
        "approved": approve,
        "target_tier": int(row.target_tier),
        **(details or {}),
    }
    audit.record(conn, now, "kyc.application_decided", actor, subject_user_id=user_id, details=recorded)
    uow.emit(
        OutboxEvent(
            "kyc.application_decided", "kyc_application", application_id, {"user_id": user_id, **recorded}
        )
    )
    return conn.execute(select(kyc_applications).where(kyc_applications.c.id == application_id)).one()


def encrypt_field(ctx: IdentityContext, value: str | None, column: str) -> str | None:
    if value is None:
        return None
    return ctx.keys.encrypt(value, context=context("kyc_applications", column))


def insert_decided_application(
    ctx: IdentityContext,
    conn: Connection,
    *,
    user_id: str,
    target_tier: int,
    status: str,
    now: int,
    name: str | None = None,
    id_number: str | None = None,
    account_number: str | None = None,
    reason: str | None = None,
) -> str:
    """A verification the system decided at once (approved or rejected), its details encrypted."""
    application_id = new_id("kyc")
    conn.execute(
        insert(kyc_applications).values(
            id=application_id,
            user_id=user_id,
            target_tier=target_tier,
            status=status,
            name_cipher=encrypt_field(ctx, name, "name_cipher"),
            id_number_cipher=encrypt_field(ctx, id_number, "id_number_cipher"),
            account_number_cipher=encrypt_field(ctx, account_number, "account_number_cipher"),
            reason=reason,
            created_at=now,
            decided_at=now,
            decided_by=SYSTEM_DECIDER,
        )
    )
    return application_id


def record_rejection(
    ctx: IdentityContext,
    user_id: str,
    actor: audit.Actor,
    *,
    target_tier: int,
    reason: str,
    name: str | None = None,
    id_number: str | None = None,
    account_number: str | None = None,
) -> None:
    """A declined verification is kept (encrypted) for fraud review and audited; in its own transaction."""
    now = ctx.now()
    with ctx.db.write() as conn:
        application_id = insert_decided_application(
            ctx, conn, user_id=user_id, target_tier=target_tier, status="rejected", now=now, name=name,
            id_number=id_number, account_number=account_number, reason=reason,
        )  # fmt: skip
        audit.record(
            conn,
            now,
            "kyc.rejected",
            actor,
            subject_user_id=user_id,
            outcome="failure",
            details={"application_id": application_id, "target_tier": target_tier, "reason": reason},
        )

"""KYC tiers and the records of moving between them: the `kyc_applications` rows (personal data
encrypted, shown masked), declined verifications kept for fraud review, and the tier change itself.

Shared by the user-facing flows (`identity/kyc.py`) and operator review (`identity/kyc_review.py`). A tier
change, in the caller's transaction: the user row, every wallet's balance ceiling (the ledger enforces the
tier's balance cap), the audit event `kyc.tier_changed` and an outbox event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, update

from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import limits_for
from qianbao.identity.model import Principal, RequestInfo
from qianbao.identity.tables import kyc_applications, users
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


def encrypt_field(ctx: IdentityContext, value: str | None, column: str) -> str | None:
    if value is None:
        return None
    return ctx.keys.encrypt(value, context=context("kyc_applications", column))


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
    application_id = new_id("kyc")
    with ctx.db.write() as conn:
        conn.execute(
            insert(kyc_applications).values(
                id=application_id,
                user_id=user_id,
                target_tier=target_tier,
                status="rejected",
                name_cipher=encrypt_field(ctx, name, "name_cipher"),
                id_number_cipher=encrypt_field(ctx, id_number, "id_number_cipher"),
                account_number_cipher=encrypt_field(ctx, account_number, "account_number_cipher"),
                reason=reason,
                created_at=now,
                decided_at=now,
                decided_by=SYSTEM_DECIDER,
            )
        )
        audit.record(
            conn,
            now,
            "kyc.rejected",
            actor,
            subject_user_id=user_id,
            outcome="failure",
            details={"application_id": application_id, "target_tier": target_tier, "reason": reason},
        )

"""What operators do to a customer: look them up (masked), reveal their personal data for a stated
reason, and freeze or unfreeze their account.

Each action checks the operator's role (`ROLE_MATRIX` in `identity/operators.py`), takes a reason where it
changes or reveals something, and is audited with that reason; freezing and unfreezing also tell the
customer by SMS. A freeze reaches the money too: every wallet of the user is frozen in the ledger, each in
the ledger's own transaction and before the user row changes, so a failure leaves money frozen (the safe
side) rather than an unfrozen wallet behind a frozen account.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update

from qianbao.errors import Conflict
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
from qianbao.identity.tables import users
from qianbao.identity.users import credential_row, get_user
from qianbao.ledger.model import AccountStatus
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.masking import mask_id_number
from qianbao.wallets.accounts import wallet_ids_of


@dataclass(frozen=True, slots=True)
class CustomerView:
    """A customer as support sees them: masked."""

    id: str
    phone_masked: str
    name_masked: str
    id_number_masked: str | None
    kyc_tier: int
    status: str
    status_reason: str | None
    wallet_ids: tuple[str, ...]
    created_at: int


@dataclass(frozen=True, slots=True)
class RevealedCustomer:
    id: str
    phone: str
    name: str
    id_number: str | None


def view_customer(ctx: IdentityContext, user_id: str) -> CustomerView:
    known_id(user_id, "user")
    with ctx.db.read() as conn:
        user = get_user(conn, ctx.keys, user_id)
        row = credential_row(conn, user_id)
        wallet_ids = wallet_ids_of(conn, user_id)
    id_number = ctx.keys.decrypt_optional(row.id_number_cipher, context=context("users", "id_number_cipher"))
    return CustomerView(
        id=user.id,
        phone_masked=user.phone_masked,
        name_masked=user.name_masked,
        id_number_masked=None if id_number is None else mask_id_number(id_number),
        kyc_tier=user.kyc_tier,
        status=user.status,
        status_reason=user.status_reason,
        wallet_ids=tuple(wallet_ids),
        created_at=user.created_at,
    )


def reveal_customer(
    ctx: IdentityContext, operator: Principal, user_id: str, reason: object, info: RequestInfo
) -> RevealedCustomer:
    """Full personal data, for a stated reason; the reveal is audited (committed) before it is returned."""
    require(operator, ROLE_MATRIX[Permission.REVEAL_PII], "revealing personal data")
    known_id(user_id, "user")
    why = clean_reason(reason)
    now = ctx.now()
    with ctx.db.write() as conn:
        user = get_user(conn, ctx.keys, user_id)
        row = credential_row(conn, user_id)
        id_number = ctx.keys.decrypt_optional(
            row.id_number_cipher, context=context("users", "id_number_cipher")
        )
        fields = ["phone", "name"] + ([] if id_number is None else ["id_number"])
        audit.record(
            conn,
            now,
            "pii.revealed",
            operator_actor(operator, info),
            subject_user_id=user_id,
            details={"reason": why, "fields": fields},
        )
    return RevealedCustomer(user.id, user.phone, user.name, id_number)


def freeze_customer(
    ctx: IdentityContext, operator: Principal, user_id: str, reason: object, info: RequestInfo
) -> CustomerView:
    """Freeze the user and every wallet of theirs in the ledger (no money moves either way), and tell them.

    The wallets are frozen first, each in the ledger's own transaction (never inside ours: on SQLite that
    would wait on our own write lock); then the user row, audit and SMS commit together. A failure between
    the two leaves money frozen (the safe side), and freezing again completes it."""
    require(operator, ROLE_MATRIX[Permission.FREEZE_USERS], "freezing a user")
    known_id(user_id, "user")
    why = clean_reason(reason, max_length=200)
    with ctx.db.read() as conn:
        before = get_user(conn, ctx.keys, user_id)
        wallet_ids = wallet_ids_of(conn, user_id)
    if before.status == "closed":
        raise Conflict("the account is closed")
    frozen = _set_wallets(ctx, wallet_ids, AccountStatus.FROZEN)
    now = ctx.now()
    with ctx.uow() as uow:
        uow.conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(status="frozen", status_reason=why, updated_at=now)
        )
        audit.record(
            uow.conn,
            now,
            "user.frozen",
            operator_actor(operator, info),
            subject_user_id=user_id,
            details={"reason": why, "wallet_ids": frozen, "was": before.status},
        )
        if before.status != "frozen":
            ctx.notifier.send(
                uow.conn,
                to=before.phone,
                template="security.account_frozen",
                user_id=user_id,
                text="【钱包 qianbao】您的账户已被冻结，暂时无法收付款。如有疑问请联系客服。"
                " Your qianbao account has been frozen: payments are paused. Contact support with questions.",
            )
        uow.commit()
    return view_customer(ctx, user_id)


def unfreeze_customer(
    ctx: IdentityContext, operator: Principal, user_id: str, reason: object, info: RequestInfo
) -> CustomerView:
    """Lift a freeze: wallets reopen in the ledger first, then the user row (a failure leaves it frozen)."""
    require(operator, ROLE_MATRIX[Permission.FREEZE_USERS], "unfreezing a user")
    known_id(user_id, "user")
    why = clean_reason(reason, max_length=200)
    with ctx.db.read() as conn:
        before = get_user(conn, ctx.keys, user_id)
        wallet_ids = wallet_ids_of(conn, user_id)
    if before.status != "frozen":
        raise Conflict("the account is not frozen")
    opened = _set_wallets(ctx, wallet_ids, AccountStatus.OPEN)
    now = ctx.now()
    with ctx.uow() as uow:
        done = uow.conn.execute(
            update(users)
            .where(users.c.id == user_id, users.c.status == "frozen")
            .values(status="active", status_reason=None, updated_at=now)
        )
        if done.rowcount != 1:
            raise Conflict("the account is not frozen")
        audit.record(
            uow.conn,
            now,
            "user.unfrozen",
            operator_actor(operator, info),
            subject_user_id=user_id,
            details={"reason": why, "wallet_ids": opened},
        )
        ctx.notifier.send(
            uow.conn,
            to=before.phone,
            template="security.account_unfrozen",
            user_id=user_id,
            text="【钱包 qianbao】您的账户已解除冻结，可正常使用。 Your qianbao account is no longer frozen.",
        )
        uow.commit()
    return view_customer(ctx, user_id)


def _set_wallets(ctx: IdentityContext, wallet_ids: list[str], status: AccountStatus) -> list[str]:
    """Set each wallet's ledger status (closed wallets stay closed); the ids that were changed."""
    changed: list[str] = []
    for wallet_id in wallet_ids:
        try:
            ctx.ledger.set_account_status(wallet_id, status)
        except Conflict:
            continue  # a closed wallet: closing is final
        changed.append(wallet_id)
    return changed

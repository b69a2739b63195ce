"""Changing a wallet (`PATCH /v1/wallets/{id}`): name, purpose, colour, icon, budget, goal and lock.

One unit of work: the settings row is read for update (concurrent changes queue on PostgreSQL), the
changes are validated against it (`settings.apply_changes`: a lock may only be extended), and a new goal
that the balance already meets is announced at once. A closed wallet cannot be changed.
"""

from __future__ import annotations

from dataclasses import fields

from sqlalchemy import update

from qianbao import invalid
from qianbao.errors import Conflict
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, RequestInfo
from qianbao.security import audit
from qianbao.wallets import goals
from qianbao.wallets.model import WalletSettings
from qianbao.wallets.service import (
    SUB_WALLET_PURPOSES,
    WalletView,
    clean_wallet_name,
    get_wallet,
    own_wallet_row,
)
from qianbao.wallets.settings import (
    UNSET,
    WalletChanges,
    apply_changes,
    load_one,
    save_settings,
)
from qianbao.wallets.tables import wallets


def update_wallet(
    ctx: IdentityContext, principal: Principal, wallet_id: str, changes: WalletChanges, info: RequestInfo
) -> WalletView:
    if principal.user_id is None:
        raise invalid.needs_user()
    user_id = principal.user_id
    name = UNSET if changes.name is UNSET else clean_wallet_name(changes.name)
    if changes.purpose is not UNSET and changes.purpose not in SUB_WALLET_PURPOSES:
        raise invalid.one_of("purpose", SUB_WALLET_PURPOSES)
    with ctx.uow() as uow:
        conn = uow.conn
        row = own_wallet_row(conn, user_id, wallet_id)
        if row.closed_at is not None:
            raise Conflict("the wallet is closed and can no longer be changed")
        now = ctx.now()
        current = load_one(conn, row.id, for_update=True) or WalletSettings(row.id)
        new = apply_changes(current, changes, kind=row.kind, currency=row.currency, now_us=now)
        renamed = {}
        if name is not UNSET and name != row.name:
            renamed["name"] = name
        if changes.purpose is not UNSET and changes.purpose != row.purpose:
            renamed["purpose"] = changes.purpose
        if renamed:
            conn.execute(update(wallets).where(wallets.c.id == row.id).values(**renamed))
        if new != current:
            save_settings(conn, new, now)
        for event in goals.check_goal(conn, user_id, row.currency, new, now):
            uow.emit(event)
        changed = sorted(renamed) + [
            f.name for f in fields(WalletSettings) if getattr(new, f.name) != getattr(current, f.name)
        ]
        if changed:
            details: dict[str, object] = {"wallet_id": row.id, "fields": changed}
            if new.locked_until != current.locked_until and new.locked_until is not None:
                details["locked_until"] = new.locked_until
            actor = audit.Actor(
                "user", user_id, ip=info.ip, device_id=principal.device_id, session_id=principal.session_id
            )
            audit.record(conn, now, "wallet.updated", actor, subject_user_id=user_id, details=details)
        uow.commit()
    return get_wallet(ctx, user_id, wallet_id)

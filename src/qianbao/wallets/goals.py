"""Savings goals: progress towards a target, and one `wallet.goal_reached` event when it is first reached.

"First reached" is recorded on the settings row (`goal_reached_at`) with a conditional UPDATE in the
crediting transaction, so concurrent credits announce it once. Setting a new target starts over.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from qianbao.ledger.tables import accounts
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.errors import money
from qianbao.wallets.model import Goal, WalletSettings
from qianbao.wallets.tables import wallet_settings

GOAL_EVENT = "wallet.goal_reached"


@dataclass(frozen=True, slots=True)
class GoalProgress:
    target: int
    target_date: str | None
    balance: int
    reached_at: int | None

    @property
    def percent(self) -> int:
        return min(100, max(0, self.balance) * 100 // self.target)

    @property
    def remaining(self) -> int:
        return max(0, self.target - self.balance)


def progress(goal: Goal, balance: int, reached_at: int | None) -> GoalProgress:
    return GoalProgress(goal.target, goal.target_date, balance, reached_at)


def posted_balance(conn: Connection, wallet_id: str) -> int | None:
    """The wallet's posted balance as this transaction sees it (the ledger's own row, read-only)."""
    row = conn.execute(
        select(accounts.c.credits_posted, accounts.c.debits_posted).where(accounts.c.id == wallet_id)
    ).first()
    return None if row is None else int(row.credits_posted) - int(row.debits_posted)


def check_goal(
    conn: Connection, user_id: str, currency: str, settings: WalletSettings | None, now_us: int
) -> list[OutboxEvent]:
    """The goal event if this wallet's balance has reached its target for the first time."""
    if settings is None or settings.goal is None or settings.goal_reached_at is not None:
        return []
    balance = posted_balance(conn, settings.wallet_id)
    if balance is None or balance < settings.goal.target:
        return []
    done = conn.execute(
        update(wallet_settings)
        .where(
            wallet_settings.c.wallet_id == settings.wallet_id,
            wallet_settings.c.goal_target == settings.goal.target,
            wallet_settings.c.goal_reached_at.is_(None),
        )
        .values(goal_reached_at=now_us)
    )
    if done.rowcount != 1:  # announced by a concurrent credit, or the goal changed meanwhile
        return []
    payload = {
        "user_id": user_id,
        "wallet_id": settings.wallet_id,
        "target": money(settings.goal.target, currency),
        "balance": money(balance, currency),
        "target_date": settings.goal.target_date,
    }
    return [OutboxEvent(GOAL_EVENT, "wallet", settings.wallet_id, payload)]

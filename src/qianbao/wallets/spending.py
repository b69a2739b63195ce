"""What payment code asks the wallets capability about money leaving or entering a wallet.

Locks and budgets are enforced here, for every way money leaves a wallet (P2P, merchant payments, moves
between one's own wallets, closing), for the payment pipeline's batches (many wallets at once):

  source_states(conn, wallet_ids, now_us)     the paying wallets' settings and the month's spending, for
      the pure rules `wallets.spend_rules.wallet_lock` (`wallet_locked`, 423) and `monthly_budget`
      (`budget_exceeded`, 422), which the payment engine's `decide` asks. The month's spending is then
      added by `wallets.budgets.add_spendings`, one upsert for the batch.
  record_unspend(conn, wallet_id, amount, now_us)    a refund of spending, in the refund's batch: the
      month's spending goes down.
  after_credits(conn, wallet_ids, now_us)     after credits (payments received, own moves, refunds,
      top-ups), in the same transaction: the goal events to emit, for goals just reached.

"Spending" is money leaving the wallet to someone else; a move between one's own wallets is not spending
but is still refused by a lock (`own_move=True` checks only the lock). Wallets this module does not know
(system or merchant accounts) have no lock or budget: every call is then a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from qianbao.store.outbox import OutboxEvent
from qianbao.wallets import budgets, goals
from qianbao.wallets.model import WalletSettings
from qianbao.wallets.settings import settings_from_row
from qianbao.wallets.tables import wallet_settings, wallets

__all__ = [
    "SpendState",
    "after_credits",
    "record_unspend",
    "source_states",
]


@dataclass(frozen=True, slots=True)
class SpendState:
    user_id: str
    currency: str
    settings: WalletSettings | None
    month_spent: int


@dataclass(frozen=True, slots=True)
class _Wallet:
    user_id: str
    currency: str
    settings: WalletSettings | None


def record_unspend(
    conn: Connection, wallet_id: str, amount: int, now_us: int, *, spent_at_us: int | None = None
) -> None:
    """A refund of spending: lower the spending of the month it was spent in (`spent_at_us`, the original
    payment's time, if given; else the current month)."""
    month = budgets.month_of(now_us if spent_at_us is None else spent_at_us)
    budgets.remove_spending(conn, wallet_id, amount, month)


# -- many wallets at once (the payment pipeline's batches) ----------------------------------------------


def _wallets(conn: Connection, wallet_ids: Iterable[str]) -> dict[str, _Wallet]:
    wanted = sorted(set(wallet_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(wallets.c.id.label("the_wallet_id"), wallets.c.user_id, wallets.c.currency, wallet_settings)
        .select_from(wallets.outerjoin(wallet_settings, wallet_settings.c.wallet_id == wallets.c.id))
        .where(wallets.c.id.in_(wanted))
    )
    return {
        str(row.the_wallet_id): _Wallet(
            str(row.user_id),
            str(row.currency),
            None if row.wallet_id is None else settings_from_row(row._mapping),
        )
        for row in rows
    }


def source_states(conn: Connection, wallet_ids: Iterable[str], now_us: int) -> dict[str, SpendState]:
    """What the spending rules (`wallets.spend_rules`) need of paying wallets: their settings and this
    month's spending (only a blocking budget needs it), two statements whatever their number. Wallets
    this module does not know are left out."""
    found = _wallets(conn, wallet_ids)
    blocking = [
        wallet_id
        for wallet_id, w in found.items()
        if w.settings is not None and w.settings.budget is not None and w.settings.budget.on_limit == "block"
    ]
    spent = budgets.spent_in(conn, blocking, budgets.month_of(now_us)) if blocking else {}
    return {
        wallet_id: SpendState(w.user_id, w.currency, w.settings, spent.get(wallet_id, 0))
        for wallet_id, w in found.items()
    }


def after_credits(conn: Connection, wallet_ids: Iterable[str], now_us: int) -> list[OutboxEvent]:
    """After money came into wallets: the `wallet.goal_reached` events of goals just reached (one
    statement, and one more per goal that may just be reached)."""
    events: list[OutboxEvent] = []
    for wallet in _wallets(conn, wallet_ids).values():
        if wallet.settings is not None and wallet.settings.goal is not None:
            events += goals.check_goal(conn, wallet.user_id, wallet.currency, wallet.settings, now_us)
    return events

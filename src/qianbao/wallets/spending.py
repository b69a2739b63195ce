"""What payment code asks the wallets capability about money leaving or entering a wallet.

Locks and budgets are enforced here, for every way money leaves a wallet (P2P, merchant payments, moves
between one's own wallets, closing). The calls, in the payment's order:

  source_state(conn, wallet_id, now_us)                       read-only: the wallet's settings and the
      month's spending, for the pure rules `wallets.spend_rules.wallet_lock` (`wallet_locked`, 423) and
      `monthly_budget` (`budget_exceeded`, 422), which the payment engine's `decide` asks before step-up
      and again inside the unit of work.
  record_spend(conn, wallet_id, amount, currency, now_us)     inside the unit of work, after the ledger
      said OK, for spending only (not for moves between one's own wallets). Adds the amount to the
      month's spending atomically and returns the budget threshold events to emit, or (a blocking budget
      that lost a race) the `budget_exceeded` finding: the caller must then roll back.
  record_unspend(conn, wallet_id, amount, now_us)             a refund of spending, in the refund's unit
      of work: the month's spending goes down.
  after_credit(conn, wallet_id, now_us)                       after any credit (payments received, own
      moves, top-ups), in the same unit of work: the goal event to emit, if the goal was just reached.

"Spending" is money leaving the wallet to someone else; a move between one's own wallets is not spending
but is still refused by a lock (`own_move=True` checks only the lock). Wallets this module does not know
(system or merchant accounts) have no lock or budget: every call is then a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from qianbao.findings import Finding
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets import budgets, goals
from qianbao.wallets.model import WalletSettings
from qianbao.wallets.settings import settings_from_row
from qianbao.wallets.tables import wallet_settings, wallets

__all__ = [
    "SpendState",
    "after_credit",
    "after_credits",
    "record_spend",
    "record_unspend",
    "source_state",
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


def _wallet(conn: Connection, wallet_id: str) -> _Wallet | None:
    """The wallet's owner, currency and settings, in one query (this is on every payment's path)."""
    row = conn.execute(
        select(wallets.c.user_id, wallets.c.currency, wallet_settings)
        .select_from(wallets.outerjoin(wallet_settings, wallet_settings.c.wallet_id == wallets.c.id))
        .where(wallets.c.id == wallet_id)
    ).first()
    if row is None:
        return None
    settings = None if row.wallet_id is None else settings_from_row(row._mapping)
    return _Wallet(str(row.user_id), str(row.currency), settings)


def source_state(conn: Connection, wallet_id: str, now_us: int) -> SpendState | None:
    """What the spending rules (`wallets.spend_rules`) need of a paying wallet: its settings and this
    month's spending (None for wallets this module does not know)."""
    wallet = _wallet(conn, wallet_id)
    if wallet is None:
        return None
    budget = None if wallet.settings is None else wallet.settings.budget
    spent = 0
    if budget is not None and budget.on_limit == "block":  # only a blocking budget needs the month
        spent = budgets.spent_in(conn, [wallet_id], budgets.month_of(now_us)).get(wallet_id, 0)
    return SpendState(wallet.user_id, wallet.currency, wallet.settings, spent)


def record_spend(
    conn: Connection, wallet_id: str, amount: int, currency: str, now_us: int
) -> list[OutboxEvent] | Finding:
    """Count spending against the wallet's month (atomic); the `wallet.budget_threshold_reached` events
    to emit, or the `budget_exceeded` finding when a blocking budget lost a race (nothing was counted:
    roll the payment back)."""
    wallet = _wallet(conn, wallet_id)
    if wallet is None:
        return []
    budget = None if wallet.settings is None else wallet.settings.budget
    return budgets.add_spending(
        conn,
        user_id=wallet.user_id,
        wallet_id=wallet_id,
        amount=amount,
        currency=currency,
        budget=budget,
        now_us=now_us,
    )


def record_unspend(
    conn: Connection, wallet_id: str, amount: int, now_us: int, *, spent_at_us: int | None = None
) -> None:
    """A refund of spending: lower the spending of the month it was spent in (`spent_at_us`, the original
    payment's time, if given; else the current month)."""
    month = budgets.month_of(now_us if spent_at_us is None else spent_at_us)
    budgets.remove_spending(conn, wallet_id, amount, month)


def after_credit(conn: Connection, wallet_id: str, now_us: int) -> list[OutboxEvent]:
    """After money came into the wallet: the `wallet.goal_reached` event if its goal was just reached."""
    wallet = _wallet(conn, wallet_id)
    if wallet is None:
        return []
    return goals.check_goal(conn, wallet.user_id, wallet.currency, wallet.settings, now_us)


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
    """`source_state` for many wallets: two statements whatever their number."""
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
    """`after_credit` for many wallets: one statement, and one more per goal that may just be reached."""
    events: list[OutboxEvent] = []
    for wallet in _wallets(conn, wallet_ids).values():
        if wallet.settings is not None and wallet.settings.goal is not None:
            events += goals.check_goal(conn, wallet.user_id, wallet.currency, wallet.settings, now_us)
    return events

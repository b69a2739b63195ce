"""Monthly budgets: how much left a wallet this month (Asia/Shanghai calendar), and when to say so.

Spending is counted per (wallet, local month) in `wallet_budget_months`, for every wallet (a budget set
in the middle of a month sees the month's spending so far). The row also remembers the highest threshold
already announced that month, so each of 80 % and 100 % is announced once per month, however many
payments cross it and however they interleave (the row is updated in the paying transaction), and
even if the budget is changed during the month.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, and_, case, select, update
from sqlalchemy.dialects import postgresql, sqlite

from qianbao.findings import Finding
from qianbao.identity.limits import local_day
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.errors import money
from qianbao.wallets.model import Budget, WalletSettings
from qianbao.wallets.spend_rules import monthly_budget
from qianbao.wallets.tables import BUDGET_THRESHOLDS, wallet_budget_months

BUDGET_EVENT = "wallet.budget_threshold_reached"


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    amount: int
    on_limit: str
    month: str
    spent: int

    @property
    def remaining(self) -> int:
        return max(0, self.amount - self.spent)

    @property
    def percent(self) -> int:
        return self.spent * 100 // self.amount


def month_of(now_us: int) -> str:
    """The local calendar month, YYYY-MM (China Standard Time, like the daily limits)."""
    return local_day(now_us)[:7]


def level(spent: int, budget: int) -> int:
    """The highest threshold (0, 80 or 100 percent) that `spent` has reached."""
    reached = [t for t in BUDGET_THRESHOLDS if spent * 100 >= budget * t]
    return reached[-1] if reached else 0


def crossed(notified: int, spent: int, budget: int) -> list[int]:
    """Thresholds reached and not yet announced this month, lowest first."""
    top = level(spent, budget)
    return [t for t in BUDGET_THRESHOLDS if notified < t <= top]


def _key(wallet_id: str, month: str) -> ColumnElement[bool]:
    return and_(wallet_budget_months.c.wallet_id == wallet_id, wallet_budget_months.c.month == month)


def spent_in(conn: Connection, wallet_ids: Iterable[str], month: str) -> dict[str, int]:
    ids = list(set(wallet_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(wallet_budget_months.c.wallet_id, wallet_budget_months.c.spent).where(
            wallet_budget_months.c.wallet_id.in_(ids), wallet_budget_months.c.month == month
        )
    )
    return {str(r.wallet_id): int(r.spent) for r in rows}


@dataclass(frozen=True, slots=True)
class Spend:
    """Approved spending from one wallet (the batch's sum), with the budget it was decided under."""

    user_id: str
    wallet_id: str
    amount: int
    currency: str
    budget: Budget | None


def add_spendings(
    conn: Connection, spends: Sequence[Spend], now_us: int
) -> tuple[list[OutboxEvent], dict[str, Finding]]:
    """Add a batch's spending (one entry per wallet) in one statement: an upsert adding to each
    wallet's month (in id order), returning the new totals. A blocking budget's total past its amount
    means another transaction spent meanwhile (the caller's view was stale): its `budget_exceeded`
    finding is returned by wallet id and the caller must roll back. Otherwise the threshold events."""
    ordered = sorted((s for s in spends if s.amount > 0), key=lambda s: s.wallet_id)
    if not ordered:
        return [], {}
    month = month_of(now_us)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    table = wallet_budget_months
    insert = dialect.insert(table)
    upsert = insert.on_conflict_do_update(
        index_elements=[table.c.wallet_id, table.c.month],
        set_={"spent": table.c.spent + insert.excluded.spent},
    ).returning(table.c.wallet_id, table.c.spent, table.c.notified)
    rows = [{"wallet_id": s.wallet_id, "month": month, "spent": s.amount, "notified": 0} for s in ordered]
    by_wallet = {s.wallet_id: s for s in ordered}
    events: list[OutboxEvent] = []
    refused: dict[str, Finding] = {}
    for wallet_id, total, notified in conn.execute(upsert.values(rows)):
        spend = by_wallet[str(wallet_id)]
        budget = spend.budget
        if budget is None:
            continue
        spent = int(total)
        if budget.on_limit == "block" and spent > budget.amount:
            finding = monthly_budget(
                WalletSettings(spend.wallet_id, budget=budget), spent - spend.amount, spend.amount
            )
            refused[spend.wallet_id] = finding or Finding(
                "budget_exceeded", {"budget": budget.amount, "spent": spent}
            )
            continue
        thresholds = crossed(int(notified), spent, budget.amount)
        if thresholds:
            conn.execute(update(table).where(_key(spend.wallet_id, month)).values(notified=thresholds[-1]))
            events += [
                threshold_event(
                    spend.user_id, spend.wallet_id, t, budget.amount, spent, spend.currency, month
                )
                for t in thresholds
            ]
    return events, refused


def remove_spending(conn: Connection, wallet_id: str, amount: int, month: str) -> None:
    """A refund of spending: the month's total goes down (never below zero). Thresholds already
    announced this month stay announced."""
    table = wallet_budget_months
    conn.execute(
        update(table)
        .where(_key(wallet_id, month))
        .values(spent=case((table.c.spent > amount, table.c.spent - amount), else_=0))
    )


def threshold_event(
    user_id: str, wallet_id: str, threshold: int, budget: int, spent: int, currency: str, month: str
) -> OutboxEvent:
    payload = {
        "user_id": user_id,
        "wallet_id": wallet_id,
        "threshold": threshold,
        "budget": money(budget, currency),
        "spent": money(spent, currency),
        "month": month,
    }
    return OutboxEvent(BUDGET_EVENT, "wallet", wallet_id, payload)

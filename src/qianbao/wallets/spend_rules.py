"""A wallet's own rules for money leaving it, pure: the lock and the monthly budget.

`wallets.spending` loads a wallet's settings and the month's spending and keeps the atomic writes;
the payment engine's `decide` calls these rules in its one written order.
"""

from __future__ import annotations

from qianbao.findings import Finding
from qianbao.wallets.model import WalletSettings


def wallet_lock(settings: WalletSettings | None, now_us: int) -> Finding | None:
    """No money leaves a locked wallet, not even to the owner's other wallets (`wallet_locked`)."""
    if settings is None or settings.locked_until is None or not settings.locked_at(now_us):
        return None
    return Finding("wallet_locked", {"locked_until": settings.locked_until})


def monthly_budget(settings: WalletSettings | None, spent: int, amount: int) -> Finding | None:
    """A blocking budget refuses spending past it; a warning budget only warns (events, afterwards)."""
    budget = None if settings is None else settings.budget
    if budget is None or budget.on_limit != "block" or spent + amount <= budget.amount:
        return None
    return Finding("budget_exceeded", {"budget": budget.amount, "spent": spent})

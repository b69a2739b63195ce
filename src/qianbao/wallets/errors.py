"""Wallet errors: the codes a budget, a lock or closing a wallet can answer (see api/problems.py).

code                   status  meaning
budget_exceeded        422     a blocking monthly budget refuses a payment that would go over it
wallet_locked          423     the wallet is locked until `locked_until`: no money may leave it
wallet_close_refused   409     this wallet cannot be closed (main wallet, locked, holds pending)
"""

from __future__ import annotations

from typing import Any

from qianbao.clock import rfc3339
from qianbao.errors import Conflict, Locked, QianbaoError


class BudgetExceeded(QianbaoError):
    """`extra`: budget, spent, remaining (Money objects) and next_step."""

    code = "budget_exceeded"


class WalletCloseRefused(Conflict):
    """`extra`: reason (main_wallet, locked, pending_holds) and next_step."""

    code = "wallet_close_refused"


def money(amount: int, currency_code: str) -> dict[str, object]:
    return {"amount": amount, "currency": currency_code}


def wallet_locked(locked_until: int, detail: str = "the wallet is locked", **extra: Any) -> Locked:
    return Locked(
        "wallet_locked",
        f"{detail} until {rfc3339(locked_until)}",
        locked_until=rfc3339(locked_until),
        next_step="try_after_unlock",
        **extra,
    )


def budget_exceeded(budget: int, spent: int, currency_code: str) -> BudgetExceeded:
    remaining = max(0, budget - spent)
    return BudgetExceeded(
        "the payment would take the wallet over its monthly budget",
        budget=money(budget, currency_code),
        spent=money(spent, currency_code),
        remaining=money(remaining, currency_code),
        next_step="adjust_budget",
    )

"""A wallet's own rules as data: its monthly budget, savings goal and lock. Pure (no I/O), so the payment
engine's rules (`wallets.spend_rules`) can read them without the persistence around `wallets.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Budget:
    amount: int
    on_limit: str  # warn | block


@dataclass(frozen=True, slots=True)
class Goal:
    target: int
    target_date: str | None  # YYYY-MM-DD


@dataclass(frozen=True, slots=True)
class WalletSettings:
    wallet_id: str
    colour: str | None = None
    icon: str | None = None
    budget: Budget | None = None
    goal: Goal | None = None
    goal_reached_at: int | None = None
    locked_until: int | None = None

    def locked_at(self, now_us: int) -> bool:
        return self.locked_until is not None and self.locked_until > now_us

"""The KYC limit rules of a money movement, pure: single payment, today's outflow, the balance cap,
and whether the payer may pay at all.

Each takes loaded facts and returns a `Finding` or None (no SQL, no settings, no clock, no raising).
`identity.limits` loads the facts (the tier, an operator override, cooling-off, today's use) and keeps
the atomic conditional writes that hold the daily limit under concurrency; the payment engine's
`decide` calls these rules in its one written order, and `payments.engine.declines` turns a finding
into the error the API answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from qianbao.findings import Finding
from qianbao.identity.model import TierLimits


@dataclass(frozen=True, slots=True)
class PayerLimits:
    """A payer's limits in force now and what today has used (fen; a limit of None = no limit)."""

    tier: int
    limits: TierLimits
    used_today: int = 0

    @property
    def remaining_today(self) -> int | None:
        daily = self.limits.daily_outflow
        return None if daily is None else max(0, daily - self.used_today)

    def after(self, amount: int) -> PayerLimits:
        """The same payer once `amount` more has left today (a batch's running total)."""
        return PayerLimits(self.tier, self.limits, self.used_today + amount)


@dataclass(frozen=True, slots=True)
class HolderCap:
    """What all of a user's wallets hold together (incoming holds counted) against their balance cap."""

    tier: int
    balance_cap: int | None
    held: int

    @property
    def room(self) -> int | None:
        return None if self.balance_cap is None else max(0, self.balance_cap - self.held)

    def after(self, amount: int) -> HolderCap:
        return HolderCap(self.tier, self.balance_cap, self.held + amount)


def payer_may_pay(credential_status: str) -> Finding | None:
    """A frozen or closed customer pays nothing (`account_frozen`)."""
    return None if credential_status == "active" else Finding("account_frozen")


def single_limit(payer: PayerLimits, amount: int) -> Finding | None:
    single = payer.limits.single_payment
    if single is None or amount <= single:
        return None
    return Finding("limit_exceeded_single", {"tier": payer.tier, "limit": single})


def daily_limit(payer: PayerLimits, amount: int) -> Finding | None:
    """Today's outflow: exactly the remaining allowance passes, one fen more does not."""
    remaining = payer.remaining_today
    if remaining is None or amount <= remaining:
        return None
    return Finding(
        "limit_exceeded_daily",
        {"tier": payer.tier, "limit": payer.limits.daily_outflow, "remaining": remaining},
    )


def balance_cap(holder: HolderCap, amount: int) -> Finding | None:
    """The cap holds over all of a user's wallets together (sub-wallets are no way around it)."""
    room = holder.room
    if room is None or amount <= room:
        return None
    return Finding("balance_cap_exceeded", {"tier": holder.tier, "limit": holder.balance_cap, "room": room})

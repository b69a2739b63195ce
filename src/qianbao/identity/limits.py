"""KYC tier limits in the money path: single-payment and daily-outflow limits, checked atomically.

`reserve_outflow` runs inside the payment's own transaction, before the ledger transfer: it adds the
amount to the user's row for the local day with a conditional UPDATE (`… WHERE outflow + :amount <=
:limit`). On PostgreSQL concurrent payments queue on that row and each re-checks the condition against
the committed total; on SQLite the write lock serialises them. Either way no interleaving can take the
day's total past the limit, and if the transfer then fails the whole transaction (and the addition)
rolls back. Balance caps are the ledger's job: each wallet's ceiling.

Days are China Standard Time (UTC+8, no daylight saving), like the e-CNY wallet's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from qianbao.config import Settings, TierLimits
from qianbao.errors import LimitExceeded
from qianbao.identity.model import effective_limits
from qianbao.identity.tables import limit_overrides, limit_usage, users
from qianbao.ledger.tables import accounts
from qianbao.money import Money, format_money
from qianbao.wallets.tables import wallets

LOCAL_OFFSET = timedelta(hours=8)


def local_day(now_us: int) -> str:
    return (datetime.fromtimestamp(now_us / 1_000_000, UTC) + LOCAL_OFFSET).date().isoformat()


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """What a user may still do today (amounts in fen; None = no limit)."""

    tier: int
    limits: TierLimits
    used_today: int
    remaining_today: int | None
    cooling_off: bool


def limits_for(
    conn: Connection, settings: Settings, user_id: str, now_us: int
) -> tuple[int, TierLimits, bool]:
    """(tier, the limits in force, cooling off?) for a user: the tier's, an operator override, cooling-off."""
    row = conn.execute(select(users.c.kyc_tier, users.c.cooling_off_until).where(users.c.id == user_id)).one()
    tier_limits = settings.kyc_tiers[int(row.kyc_tier)]
    override = conn.execute(select(limit_overrides).where(limit_overrides.c.user_id == user_id)).first()
    if override is not None and (override.expires_at is None or override.expires_at > now_us):
        tier_limits = TierLimits(
            balance_cap=override.balance_cap if override.balance_cap is not None else tier_limits.balance_cap,
            single_payment=override.single_payment
            if override.single_payment is not None
            else tier_limits.single_payment,
            daily_outflow=override.daily_outflow
            if override.daily_outflow is not None
            else tier_limits.daily_outflow,
        )
    cooling = row.cooling_off_until is not None and row.cooling_off_until > now_us
    limits = effective_limits(tier_limits, cooling_off=cooling, divisor=settings.cooling_off_limit_divisor)
    return int(row.kyc_tier), limits, cooling


def used_today(conn: Connection, user_id: str, currency: str, now_us: int) -> int:
    used = conn.execute(
        select(limit_usage.c.outflow).where(
            limit_usage.c.user_id == user_id,
            limit_usage.c.day == local_day(now_us),
            limit_usage.c.currency == currency,
        )
    ).scalar()
    return int(used or 0)


def limit_status(
    conn: Connection, settings: Settings, user_id: str, currency: str, now_us: int
) -> LimitStatus:
    tier, limits, cooling = limits_for(conn, settings, user_id, now_us)
    used = used_today(conn, user_id, currency, now_us)
    remaining = None if limits.daily_outflow is None else max(0, limits.daily_outflow - used)
    return LimitStatus(tier, limits, used, remaining, cooling)


def _money(amount: int, currency: str) -> dict[str, object]:
    return {"amount": amount, "currency": currency}


def check_single(limits: TierLimits, tier: int, amount: int, currency: str) -> None:
    if limits.single_payment is not None and amount > limits.single_payment:
        raise LimitExceeded(
            "limit_exceeded_single",
            f"the single-payment limit of tier {tier} is"
            f" {format_money(Money(limits.single_payment, currency))}",
            limit=_money(limits.single_payment, currency),
            remaining=_money(limits.single_payment, currency),
            kyc_tier=tier,
            next_step="verify_identity" if tier > 1 else "contact_support",
        )


def reserve_outflow(
    conn: Connection, settings: Settings, user_id: str, amount: int, currency: str, now_us: int
) -> None:
    """Count `amount` against today's limits in the caller's transaction, or raise LimitExceeded."""
    tier, limits, _cooling = limits_for(conn, settings, user_id, now_us)
    check_single(limits, tier, amount, currency)
    day = local_day(now_us)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(limit_usage)
        .values(user_id=user_id, day=day, currency=currency, outflow=0, payments=0)
        .on_conflict_do_nothing()
    )
    key = and_(limit_usage.c.user_id == user_id, limit_usage.c.day == day, limit_usage.c.currency == currency)
    query = update(limit_usage).where(key)
    if limits.daily_outflow is not None:
        query = query.where(limit_usage.c.outflow + amount <= limits.daily_outflow)
    done = conn.execute(
        query.values(outflow=limit_usage.c.outflow + amount, payments=limit_usage.c.payments + 1)
    )
    if done.rowcount == 1:
        return
    assert limits.daily_outflow is not None  # noqa: S101 - without a limit the UPDATE always matches
    used = int(conn.execute(select(limit_usage.c.outflow).where(key)).scalar_one())
    remaining = max(0, limits.daily_outflow - used)
    raise LimitExceeded(
        "limit_exceeded_daily",
        f"the daily outflow limit of tier {tier} is {format_money(Money(limits.daily_outflow, currency))};"
        f" {format_money(Money(remaining, currency))} remains today",
        limit=_money(limits.daily_outflow, currency),
        remaining=_money(remaining, currency),
        kyc_tier=tier,
        next_step="verify_identity" if tier > 1 else "try_tomorrow",
    )


def check_inflow(
    conn: Connection,
    settings: Settings,
    user_id: str,
    amount: int,
    currency: str,
    now_us: int,
    *,
    reveal_room: bool,
    lock: bool = True,
) -> None:
    """The balance cap applies to all of a user's wallets together (sub-wallets are no way around it).

    Each wallet's ledger ceiling is the cap too, but only a check over the sum can hold the total: this
    runs in the crediting transaction with the user's row locked, so concurrent credits to the same
    user queue (PostgreSQL; SQLite's write lock already serialises them). `reveal_room` is false when
    the payer is someone else: the room left would tell them the recipient's balance. Without `lock` it
    is the read-only pre-check that refuses before any step-up is asked for."""
    query = select(users.c.id).where(users.c.id == user_id)
    if lock:
        query = query.with_for_update()
    if conn.execute(query).first() is None:
        return
    tier, limits, _cooling = limits_for(conn, settings, user_id, now_us)
    if limits.balance_cap is None:
        return
    held = conn.execute(
        select(
            func.coalesce(
                func.sum(accounts.c.credits_posted + accounts.c.credits_pending - accounts.c.debits_posted), 0
            )
        ).where(
            accounts.c.id.in_(select(wallets.c.id).where(wallets.c.user_id == user_id)),
            accounts.c.currency == currency,
        )
    ).scalar_one()
    room = max(0, limits.balance_cap - int(held))
    if amount <= room:
        return
    extra: dict[str, object] = {"limit": _money(limits.balance_cap, currency), "kyc_tier": tier}
    if reveal_room:
        extra["remaining"] = _money(room, currency)
        extra["next_step"] = "verify_identity" if tier > 1 else "contact_support"
    raise LimitExceeded(
        "balance_cap_exceeded",
        f"the wallets would hold more than the tier-{tier} balance cap of"
        f" {format_money(Money(limits.balance_cap, currency))}",
        **extra,
    )

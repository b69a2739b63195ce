"""KYC tier limits in the money path: single-payment and daily-outflow limits, checked atomically.

The rules themselves are pure, in `identity.limit_rules`; this module loads their facts for a batch of
the payment pipeline (`payers_limits`, `holder_caps`: one statement for any number of users) and writes
the batch's outflow (`add_outflows`): one upsert adding to each payer's row for the local day, whose
returned totals are checked against the limits decided on. On PostgreSQL a concurrent batch queues on
those rows and then sees the committed totals; on SQLite the write lock serialises them. A total past
the limit means another transaction counted meanwhile: the batch rolls back and is tried again, so no
interleaving takes the day's total past the limit. Each wallet's ledger ceiling holds the cap per wallet.

Days are China Standard Time (UTC+8, no daylight saving), like the e-CNY wallet's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from qianbao.config import Settings
from qianbao.findings import Finding
from qianbao.identity.limit_rules import HolderCap, PayerLimits, daily_limit
from qianbao.identity.model import TierLimits, effective_limits
from qianbao.identity.tables import limit_overrides, limit_usage, users
from qianbao.ledger.tables import accounts
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


# One statement for a user's tier, cooling-off and operator override, built once (every batch reads
# it). `holder_caps(lock=True)` locks the users' rows with it, serialising credits to the same user;
# FOR UPDATE OF users, as the override side of the join may be empty.
_USER_LIMITS = select(
    users.c.kyc_tier,
    users.c.cooling_off_until,
    users.c.status,
    limit_overrides.c.user_id.label("override_user_id"),
    limit_overrides.c.balance_cap,
    limit_overrides.c.single_payment,
    limit_overrides.c.daily_outflow,
    limit_overrides.c.expires_at,
).select_from(users.outerjoin(limit_overrides, limit_overrides.c.user_id == users.c.id))
_LIMITS = _USER_LIMITS.where(users.c.id == bindparam("user_id"))
_USED_TODAY = select(limit_usage.c.outflow).where(
    limit_usage.c.user_id == bindparam("user_id"),
    limit_usage.c.day == bindparam("day"),
    limit_usage.c.currency == bindparam("currency"),
)
_LIMITS_AND_USED = _LIMITS.add_columns(_USED_TODAY.scalar_subquery().label("used_today"))


def _limits_of(row: Any, settings: Settings, now_us: int) -> tuple[int, TierLimits, bool]:
    tier_limits = settings.kyc_tiers[int(row.kyc_tier)]
    if row.override_user_id is not None and (row.expires_at is None or row.expires_at > now_us):
        tier_limits = TierLimits(
            balance_cap=row.balance_cap if row.balance_cap is not None else tier_limits.balance_cap,
            single_payment=row.single_payment
            if row.single_payment is not None
            else tier_limits.single_payment,
            daily_outflow=row.daily_outflow if row.daily_outflow is not None else tier_limits.daily_outflow,
        )
    cooling = row.cooling_off_until is not None and row.cooling_off_until > now_us
    limits = effective_limits(tier_limits, cooling_off=cooling, divisor=settings.cooling_off_limit_divisor)
    return int(row.kyc_tier), limits, cooling


def limits_for(
    conn: Connection, settings: Settings, user_id: str, now_us: int
) -> tuple[int, TierLimits, bool]:
    """(tier, the limits in force, cooling off?) for a user: the tier's, an operator override, cooling-off."""
    return _limits_of(conn.execute(_LIMITS, {"user_id": user_id}).one(), settings, now_us)


def _payer(
    conn: Connection, settings: Settings, user_id: str, currency: str, now_us: int
) -> tuple[str, PayerLimits, bool]:
    """(account status, limits in force with today's use, cooling off?) in one statement."""
    row = conn.execute(
        _LIMITS_AND_USED, {"user_id": user_id, "day": local_day(now_us), "currency": currency}
    ).one()
    tier, limits, cooling = _limits_of(row, settings, now_us)
    return str(row.status), PayerLimits(tier, limits, int(row.used_today or 0)), cooling


def limit_status(
    conn: Connection, settings: Settings, user_id: str, currency: str, now_us: int
) -> LimitStatus:
    _status, payer, cooling = _payer(conn, settings, user_id, currency, now_us)
    return LimitStatus(payer.tier, payer.limits, payer.used_today, payer.remaining_today, cooling)


# -- many users at once (the payment pipeline's batches) ------------------------------------------------

_MANY = _USER_LIMITS.add_columns(users.c.id).order_by(users.c.id)


def payers_limits(
    conn: Connection, settings: Settings, user_ids: Iterable[str], currency: str, now_us: int
) -> dict[str, tuple[str, PayerLimits]]:
    """Each payer's account status (`limit_rules.payer_may_pay`) and the facts of `single_limit` and
    `daily_limit` (the limits in force, today's use), for many users in one statement."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    usage = limit_usage.alias("usage")
    query = (
        _MANY.add_columns(usage.c.outflow.label("used_today"))
        .outerjoin(
            usage,
            and_(
                usage.c.user_id == users.c.id,
                usage.c.day == local_day(now_us),
                usage.c.currency == currency,
            ),
        )
        .where(users.c.id.in_(wanted))
    )
    found: dict[str, tuple[str, PayerLimits]] = {}
    for row in conn.execute(query):
        tier, limits, _cooling = _limits_of(row, settings, now_us)
        found[str(row.id)] = (str(row.status), PayerLimits(tier, limits, int(row.used_today or 0)))
    return found


def holder_caps(
    conn: Connection, settings: Settings, user_ids: Iterable[str], currency: str, now_us: int, *, lock: bool
) -> dict[str, HolderCap]:
    """The facts of `limit_rules.balance_cap` (what all of a user's wallets hold, incoming holds
    counted) for many users: with `lock`, their rows are locked in id order in one statement (two
    batches crediting overlapping users queue in one order), then what each holds in one more."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    query = _MANY.where(users.c.id.in_(wanted))
    rows = list(conn.execute(query.with_for_update(of=users) if lock else query))
    caps: dict[str, tuple[int, int | None]] = {}
    for row in rows:
        tier, limits, _cooling = _limits_of(row, settings, now_us)
        caps[str(row.id)] = (tier, limits.balance_cap)
    capped = [user_id for user_id, (_tier, cap) in caps.items() if cap is not None]
    held: dict[str, int] = {}
    if capped:
        sums = conn.execute(
            select(wallets.c.user_id, func.sum(
                accounts.c.credits_posted + accounts.c.credits_pending - accounts.c.debits_posted
            ))
            .select_from(accounts.join(wallets, wallets.c.id == accounts.c.id))
            .where(wallets.c.user_id.in_(capped), accounts.c.currency == currency)
            .group_by(wallets.c.user_id)
        )  # fmt: skip
        held = {str(user_id): int(total or 0) for user_id, total in sums}
    return {
        user_id: HolderCap(tier, cap, held.get(user_id, 0) if cap is not None else 0)
        for user_id, (tier, cap) in caps.items()
    }


def add_outflows(
    conn: Connection,
    payers: Mapping[str, PayerLimits],
    payments: Sequence[tuple[str, int]],
    currency: str,
    now_us: int,
) -> dict[str, Finding]:
    """Count approved spending (`payments`: payer's user id, amount) toward today, in one statement: an
    upsert adding to each payer's row (in id order), returning the new totals. `payers` are the limits
    the batch decided on. A total past its limit means another transaction counted meanwhile (the
    batch's view was stale): its daily-limit finding is returned, and the caller must roll back."""
    spent: dict[str, int] = {}
    count: dict[str, int] = {}
    for user_id, amount in payments:
        spent[user_id] = spent.get(user_id, 0) + amount
        count[user_id] = count.get(user_id, 0) + 1
    counted = sorted(spent.items())
    if not counted:
        return {}
    day = local_day(now_us)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(limit_usage)
    upsert = insert.on_conflict_do_update(
        index_elements=[limit_usage.c.user_id, limit_usage.c.day, limit_usage.c.currency],
        set_={
            "outflow": limit_usage.c.outflow + insert.excluded.outflow,
            "payments": limit_usage.c.payments + insert.excluded.payments,
        },
    ).returning(limit_usage.c.user_id, limit_usage.c.outflow)
    rows = [
        {"user_id": u, "day": day, "currency": currency, "outflow": amount, "payments": count[u]}
        for u, amount in counted
    ]
    refused: dict[str, Finding] = {}
    for user_id, total in conn.execute(upsert.values(rows)):
        limits = payers[str(user_id)]
        daily = limits.limits.daily_outflow
        if daily is not None and int(total) > daily:
            amount = spent[str(user_id)]
            before = PayerLimits(limits.tier, limits.limits, int(total) - amount)
            refused[str(user_id)] = daily_limit(before, amount) or Finding(
                "limit_exceeded_daily", {"tier": limits.tier, "limit": daily, "remaining": 0}
            )
    return refused

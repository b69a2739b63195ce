"""A wallet's settings: colour and icon, monthly budget, savings goal and lock (table `wallet_settings`).

The validation here is pure (no I/O): `apply_changes` (and the `clean_*`/`parse_*` helpers it uses)
turns a create's or PATCH's `WalletChanges` into new settings or refuses them. A wallet without a
settings row has the defaults of its purpose and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from qianbao import invalid
from qianbao.clock import to_us
from qianbao.identity.limits import local_day
from qianbao.wallets.errors import wallet_locked
from qianbao.wallets.model import Budget, Goal, WalletSettings
from qianbao.wallets.tables import ON_LIMIT_ACTIONS, wallet_settings

# Named colours clients can render consistently; any other colour is given as #RRGGBB.
PALETTE = {
    "red": "#E53935",
    "orange": "#FB8C00",
    "amber": "#FFB300",
    "green": "#43A047",
    "teal": "#00897B",
    "blue": "#1E88E5",
    "indigo": "#3949AB",
    "purple": "#8E24AA",
    "pink": "#D81B60",
    "brown": "#6D4C41",
    "grey": "#757575",
}
ICONS = (
    "wallet", "plane", "suitcase", "cart", "bag", "piggy_bank", "receipt", "home", "car", "gift", "heart",
    "star", "book", "coffee", "food", "medical", "education", "game", "pet", "baby", "phone", "sport",
)  # fmt: skip
# (colour, icon) of a wallet that has not chosen its own, by purpose.
DEFAULT_LOOK = {
    "main": ("red", "wallet"),
    "travel": ("blue", "plane"),
    "shopping": ("orange", "cart"),
    "savings": ("green", "piggy_bank"),
    "bills": ("purple", "receipt"),
    "custom": ("grey", "star"),
}
MAX_AMOUNT = 10**15  # as a payment's maximum (payments.inputs.MAX_PAYMENT)
MAX_LOCK = timedelta(days=3653)  # ten years
MAX_GOAL_DATE = timedelta(days=3653)
_HEX = re.compile(r"#[0-9A-Fa-f]{6}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Unset(Enum):
    """A field a PATCH did not mention (as opposed to null, which removes the setting)."""

    UNSET = "unset"


UNSET = Unset.UNSET


@dataclass(frozen=True, slots=True)
class BudgetChange:
    amount: int
    currency: str
    on_limit: str


@dataclass(frozen=True, slots=True)
class GoalChange:
    target: int
    currency: str
    target_date: str | None


@dataclass(frozen=True, slots=True)
class WalletChanges:
    """What a create or PATCH asks for; UNSET leaves a field as it is, None removes an optional setting
    (colour and icon: back to the purpose's default)."""

    name: str | Unset = UNSET
    purpose: str | Unset = UNSET
    colour: str | None | Unset = UNSET
    icon: str | None | Unset = UNSET
    budget: BudgetChange | None | Unset = UNSET
    goal: GoalChange | None | Unset = UNSET
    locked_until: str | None | Unset = UNSET  # RFC 3339, checked against the service's clock

    @property
    def sub_wallet_only(self) -> list[str]:
        """The fields a main wallet does not have: it keeps its name, and cannot be a goal or locked."""
        asked = {
            "name": self.name,
            "purpose": self.purpose,
            "goal": self.goal,
            "locked_until": self.locked_until,
        }
        return [field for field, value in asked.items() if value is not UNSET]


# -- validation (pure) -----------------------------------------------------------------------------


def appearance(purpose: str, settings: WalletSettings | None) -> tuple[str, str, str]:
    """(colour as chosen, colour as #RRGGBB, icon), falling back to the purpose's defaults."""
    colour, icon = DEFAULT_LOOK.get(purpose, DEFAULT_LOOK["custom"])
    if settings is not None:
        colour = settings.colour or colour
        icon = settings.icon or icon
    return colour, PALETTE.get(colour, colour), icon


def clean_colour(value: object) -> str:
    if isinstance(value, str):
        if value.lower() in PALETTE:
            return value.lower()
        if _HEX.fullmatch(value):
            return value.upper()
    raise invalid.because(
        "colour",
        f"colour must be #RRGGBB or one of {', '.join(PALETTE)}",
        field="colour",
        params={"choices": list(PALETTE)},
    )


def clean_icon(value: object) -> str:
    if isinstance(value, str) and value in ICONS:
        return value
    raise invalid.one_of("icon", ICONS)


def clean_budget(change: BudgetChange, currency: str) -> Budget:
    if type(change.amount) is not int or not 0 < change.amount <= MAX_AMOUNT:
        raise invalid.amount_range("budget.amount.amount", 1, MAX_AMOUNT)
    if change.currency != currency:
        raise invalid.currency_only(
            "budget.amount.currency", currency, f"the budget must be in the wallet's currency, {currency}"
        )
    if change.on_limit not in ON_LIMIT_ACTIONS:
        raise invalid.one_of("budget.on_limit", ON_LIMIT_ACTIONS)
    return Budget(change.amount, change.on_limit)


def parse_goal_date(value: str, now_us: int) -> str:
    """A calendar date (YYYY-MM-DD), today or later in Asia/Shanghai, at most ten years ahead."""
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        day = date.fromisoformat(value)
    except ValueError:
        raise invalid.date("goal.target_date") from None
    today = date.fromisoformat(local_day(now_us))
    if not today <= day <= today + MAX_GOAL_DATE:
        raise invalid.within_years(
            "goal.target_date", 10, "target_date must be from today up to ten years ahead"
        )
    return value


def clean_goal(change: GoalChange, currency: str, now_us: int) -> Goal:
    if type(change.target) is not int or not 0 < change.target <= MAX_AMOUNT:
        raise invalid.amount_range("goal.target.amount", 1, MAX_AMOUNT)
    if change.currency != currency:
        raise invalid.currency_only(
            "goal.target.currency", currency, f"the goal must be in the wallet's currency, {currency}"
        )
    day = None if change.target_date is None else parse_goal_date(change.target_date, now_us)
    return Goal(change.target, day)


def parse_instant(value: str, field: str) -> int:
    """An RFC 3339 date-time with an offset (`Z` or `+08:00`), in microseconds since the epoch."""
    try:
        if not isinstance(value, str) or len(value) > 40 or "T" not in value.upper():
            raise ValueError(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise invalid.date_time(field) from None
    if parsed.tzinfo is None:
        raise invalid.needs_time_zone(field)
    return to_us(parsed.astimezone(UTC))


def new_lock(current: WalletSettings, value: str | None, now_us: int) -> int | None:
    """The lock after a change. A lock ends in the future, at most ten years ahead; while it lasts it may
    be extended but not shortened or removed (that is what a locked pot is for): `wallet_locked`."""
    active = current.locked_until if current.locked_at(now_us) else None
    if value is None:
        if active is not None:
            raise wallet_locked(active, "a lock cannot be removed before it ends: the wallet is locked")
        return None
    until = parse_instant(value, "locked_until")
    if not now_us < until <= now_us + int(MAX_LOCK.total_seconds()) * 1_000_000:
        raise invalid.within_years(
            "locked_until", 10, "locked_until must be in the future, at most ten years ahead"
        )
    if active is not None and until < active:
        raise wallet_locked(active, "a lock can be extended, not shortened: the wallet is locked")
    return until


def apply_changes(
    current: WalletSettings, changes: WalletChanges, *, kind: str, currency: str, now_us: int
) -> WalletSettings:
    """The settings after `changes` (validated; raises InvalidInput or wallet_locked). Pure."""
    if kind == "main" and changes.sub_wallet_only:
        fields = ", ".join(changes.sub_wallet_only)
        raise invalid.because(
            "main_wallet_setting", f"the main wallet cannot change {fields}", field=changes.sub_wallet_only[0]
        )
    new = current
    if changes.colour is not UNSET:
        new = replace(new, colour=None if changes.colour is None else clean_colour(changes.colour))
    if changes.icon is not UNSET:
        new = replace(new, icon=None if changes.icon is None else clean_icon(changes.icon))
    if changes.budget is not UNSET:
        new = replace(new, budget=None if changes.budget is None else clean_budget(changes.budget, currency))
    if changes.goal is not UNSET:
        goal = None if changes.goal is None else clean_goal(changes.goal, currency, now_us)
        if goal != current.goal:  # a new target starts over (and may be announced when reached)
            new = replace(new, goal=goal, goal_reached_at=None)
    if changes.locked_until is not UNSET:
        new = replace(new, locked_until=new_lock(current, changes.locked_until, now_us))
    return new


# -- persistence -----------------------------------------------------------------------------------


def settings_from_row(m: Any) -> WalletSettings:
    budget = None
    if m["budget_amount"] is not None:
        budget = Budget(int(m["budget_amount"]), str(m["budget_on_limit"]))
    goal = None
    if m["goal_target"] is not None:
        goal = Goal(int(m["goal_target"]), m["goal_date"])
    return WalletSettings(
        wallet_id=str(m["wallet_id"]),
        colour=m["colour"],
        icon=m["icon"],
        budget=budget,
        goal=goal,
        goal_reached_at=m["goal_reached_at"],
        locked_until=m["locked_until"],
    )


def load_settings(conn: Connection, wallet_ids: Iterable[str]) -> dict[str, WalletSettings]:
    ids = list(set(wallet_ids))
    if not ids:
        return {}
    rows = conn.execute(select(wallet_settings).where(wallet_settings.c.wallet_id.in_(ids)))
    return {str(r.wallet_id): settings_from_row(r._mapping) for r in rows}


def load_one(conn: Connection, wallet_id: str, *, for_update: bool = False) -> WalletSettings | None:
    query = select(wallet_settings).where(wallet_settings.c.wallet_id == wallet_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else settings_from_row(row._mapping)


def save_settings(conn: Connection, settings: WalletSettings, now_us: int) -> None:
    values = {
        "colour": settings.colour,
        "icon": settings.icon,
        "budget_amount": None if settings.budget is None else settings.budget.amount,
        "budget_on_limit": None if settings.budget is None else settings.budget.on_limit,
        "goal_target": None if settings.goal is None else settings.goal.target,
        "goal_date": None if settings.goal is None else settings.goal.target_date,
        "goal_reached_at": settings.goal_reached_at,
        "locked_until": settings.locked_until,
        "updated_at": now_us,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(wallet_settings)
        .values(wallet_id=settings.wallet_id, **values)
        .on_conflict_do_update(index_elements=[wallet_settings.c.wallet_id], set_=values)
    )

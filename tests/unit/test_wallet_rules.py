"""The pure wallet rules: budget thresholds and months (China time), goal progress, appearance, and which
settings changes are allowed (a lock only ever gets longer while it lasts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qianbao.clock import to_us
from qianbao.errors import InvalidInput, Locked
from qianbao.wallets.budgets import BudgetStatus, crossed, level, month_of
from qianbao.wallets.goals import GoalProgress
from qianbao.wallets.settings import (
    Budget,
    BudgetChange,
    Goal,
    GoalChange,
    WalletChanges,
    WalletSettings,
    appearance,
    apply_changes,
    clean_colour,
    parse_instant,
)

NOW = to_us(datetime(2026, 11, 22, 4, 0, tzinfo=UTC))
DAY = 86_400 * 1_000_000


def test_months_follow_china_time() -> None:
    assert month_of(to_us(datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC))) == "2026-11"
    assert month_of(to_us(datetime(2026, 11, 30, 16, 0, tzinfo=UTC))) == "2026-12"
    assert month_of(to_us(datetime(2026, 12, 31, 16, 0, tzinfo=UTC))) == "2027-01"


@pytest.mark.parametrize(
    ("spent", "budget", "expected"),
    [(0, 100, 0), (79, 100, 0), (80, 100, 80), (99, 100, 80), (100, 100, 100), (500, 100, 100), (7, 9, 0)],
)
def test_threshold_levels(spent: int, budget: int, expected: int) -> None:
    assert level(spent, budget) == expected


@given(
    budget=st.integers(1, 10**12),
    spends=st.lists(st.integers(1, 10**11), max_size=30),
)
def test_each_threshold_is_announced_once_and_only_when_reached(budget: int, spends: list[int]) -> None:
    notified, spent, announced = 0, 0, []
    for amount in spends:
        spent += amount
        new = crossed(notified, spent, budget)
        announced += new
        if new:
            notified = new[-1]
    assert announced == sorted(set(announced))
    assert announced == [t for t in (80, 100) if spent * 100 >= budget * t]


def test_budget_and_goal_figures() -> None:
    status = BudgetStatus(10_000, "warn", "2026-11", 12_345)
    assert (status.remaining, status.percent) == (0, 123)
    small = BudgetStatus(3, "block", "2026-11", 1)
    assert (small.percent, small.remaining) == (33, 2)
    progress = GoalProgress(30_000, None, 10_000, None)
    assert (progress.percent, progress.remaining) == (33, 20_000)
    assert GoalProgress(100, None, 250, 1).percent == 100


def test_appearance_defaults_by_purpose_and_choices() -> None:
    assert appearance("savings", None) == ("green", "#43A047", "piggy_bank")
    assert appearance("main", None) == ("red", "#E53935", "wallet")
    chosen = WalletSettings("wal_x", colour="#ABCDEF", icon="gift")
    assert appearance("travel", chosen) == ("#ABCDEF", "#ABCDEF", "gift")
    assert clean_colour("BLUE") == "blue" and clean_colour("#a1b2c3") == "#A1B2C3"
    for bad in ("#abc", "blue-ish", "", "#1234567"):
        with pytest.raises(InvalidInput):
            clean_colour(bad)


def test_instants_need_an_offset() -> None:
    assert parse_instant("2027-01-01T08:00:00+08:00", "x") == to_us(datetime(2027, 1, 1, tzinfo=UTC))
    assert parse_instant("2027-01-01T00:00:00Z", "x") == to_us(datetime(2027, 1, 1, tzinfo=UTC))
    for bad in ("2027-01-01", "2027-01-01T00:00:00", "soon", "2027-13-01T00:00:00Z"):
        with pytest.raises(InvalidInput):
            parse_instant(bad, "x")


def change(current: WalletSettings, kind: str = "sub", **fields: object) -> WalletSettings:
    return apply_changes(current, WalletChanges(**fields), kind=kind, currency="CNY", now_us=NOW)  # type: ignore[arg-type]


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat()


def test_locks_extend_but_never_shorten_or_vanish_while_they_last() -> None:
    empty = WalletSettings("wal_x")
    locked = change(empty, locked_until=iso(NOW + 10 * DAY))
    assert locked.locked_until == NOW + 10 * DAY
    assert change(locked, locked_until=iso(NOW + 20 * DAY)).locked_until == NOW + 20 * DAY
    for shorter in (iso(NOW + 5 * DAY), None):
        with pytest.raises(Locked) as refused:
            change(locked, locked_until=shorter)
        assert refused.value.code == "wallet_locked"
    for bad in (iso(NOW - DAY), iso(NOW), iso(NOW + 3654 * DAY)):
        with pytest.raises(InvalidInput):
            change(empty, locked_until=bad)
    ended = WalletSettings("wal_x", locked_until=NOW - 1)
    assert change(ended, locked_until=None).locked_until is None
    assert change(ended, locked_until=iso(NOW + DAY)).locked_until == NOW + DAY


def test_budget_and_goal_changes() -> None:
    empty = WalletSettings("wal_x")
    assert change(empty, budget=BudgetChange(500, "CNY", "block")).budget == Budget(500, "block")
    with pytest.raises(InvalidInput):
        change(empty, budget=BudgetChange(500, "USD", "block"))
    with pytest.raises(InvalidInput):
        change(empty, budget=BudgetChange(500, "CNY", "ignore"))
    reached = WalletSettings("wal_x", goal=Goal(100, None), goal_reached_at=NOW - DAY)
    # The same goal again keeps its "reached"; a new target starts over.
    assert change(reached, goal=GoalChange(100, "CNY", None)).goal_reached_at == NOW - DAY
    moved = change(reached, goal=GoalChange(200, "CNY", "2026-11-22"))
    assert (moved.goal, moved.goal_reached_at) == (Goal(200, "2026-11-22"), None)
    with pytest.raises(InvalidInput):
        change(empty, goal=GoalChange(200, "CNY", "2026-11-21"))  # yesterday in China


def test_the_main_wallet_takes_appearance_and_budget_only() -> None:
    empty = WalletSettings("wal_main")
    assert change(empty, "main", colour="pink", budget=BudgetChange(1, "CNY", "warn")).colour == "pink"
    for fields in ({"goal": GoalChange(1, "CNY", None)}, {"locked_until": iso(NOW + DAY)}, {"name": "x"}):
        with pytest.raises(InvalidInput):
            change(empty, "main", **fields)

"""Wallets: each is one ledger account (same id) owned by a user (migration 0002); their settings and
monthly spending (migration 0006)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    text,
)

from qianbao.store.metadata import metadata

WALLET_KINDS = ("main", "sub")

wallets = Table(
    "wallets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("name", String(64), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    CheckConstraint(f"kind IN {WALLET_KINDS!r}", name="kind"),
    Index("ix_wallets_user_id_created_at", "user_id", "created_at"),
    # One main wallet per user and currency.
    Index(
        "uq_wallets_main",
        "user_id",
        "currency",
        unique=True,
        postgresql_where=text("kind = 'main'"),
        sqlite_where=text("kind = 'main'"),
    ),
)

ON_LIMIT_ACTIONS = ("warn", "block")
BUDGET_THRESHOLDS = (80, 100)

# Appearance, budget, goal and lock of a wallet (migration 0006); a wallet without a row has none of them.
wallet_settings = Table(
    "wallet_settings",
    metadata,
    Column("wallet_id", String(40), primary_key=True),
    Column("colour", String(16), nullable=True),
    Column("icon", String(32), nullable=True),
    Column("budget_amount", BigInteger, nullable=True),
    Column("budget_on_limit", String(8), nullable=True),
    Column("goal_target", BigInteger, nullable=True),
    Column("goal_date", String(10), nullable=True),  # YYYY-MM-DD, Asia/Shanghai
    Column("goal_reached_at", BigInteger, nullable=True),
    Column("locked_until", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint("budget_amount IS NULL OR budget_amount > 0", name="budget_positive"),
    CheckConstraint("(budget_amount IS NULL) = (budget_on_limit IS NULL)", name="budget_on_limit_iff_budget"),
    CheckConstraint(f"budget_on_limit IN {ON_LIMIT_ACTIONS!r}", name="budget_on_limit"),
    CheckConstraint("goal_target IS NULL OR goal_target > 0", name="goal_positive"),
    CheckConstraint("goal_target IS NOT NULL OR goal_date IS NULL", name="goal_date_needs_target"),
)

# Spending from a wallet per local calendar month (Asia/Shanghai) and the highest budget threshold
# already announced that month (0, 80 or 100): the conditional UPDATE on this row is what keeps
# concurrent payments from both passing a blocking budget.
wallet_budget_months = Table(
    "wallet_budget_months",
    metadata,
    Column("wallet_id", String(40), nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM
    Column("spent", BigInteger, nullable=False),
    Column("notified", Integer, nullable=False),
    PrimaryKeyConstraint("wallet_id", "month"),
    CheckConstraint("spent >= 0", name="spent_non_negative"),
    CheckConstraint(f"notified IN (0, {', '.join(map(str, BUDGET_THRESHOLDS))})", name="notified"),
)

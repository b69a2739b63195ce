"""Wallet budgets, savings goals, locks and appearance: `wallet_settings` and `wallet_budget_months`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wallet_settings",
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("colour", sa.String(length=16), nullable=True),
        sa.Column("icon", sa.String(length=32), nullable=True),
        sa.Column("budget_amount", sa.BigInteger(), nullable=True),
        sa.Column("budget_on_limit", sa.String(length=8), nullable=True),
        sa.Column("goal_target", sa.BigInteger(), nullable=True),
        sa.Column("goal_date", sa.String(length=10), nullable=True),
        sa.Column("goal_reached_at", sa.BigInteger(), nullable=True),
        sa.Column("locked_until", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "budget_amount IS NULL OR budget_amount > 0", name=op.f("ck_wallet_settings_budget_positive")
        ),
        sa.CheckConstraint(
            "(budget_amount IS NULL) = (budget_on_limit IS NULL)",
            name=op.f("ck_wallet_settings_budget_on_limit_iff_budget"),
        ),
        sa.CheckConstraint(
            "budget_on_limit IN ('warn', 'block')", name=op.f("ck_wallet_settings_budget_on_limit")
        ),
        sa.CheckConstraint(
            "goal_target IS NULL OR goal_target > 0", name=op.f("ck_wallet_settings_goal_positive")
        ),
        sa.CheckConstraint(
            "goal_target IS NOT NULL OR goal_date IS NULL",
            name=op.f("ck_wallet_settings_goal_date_needs_target"),
        ),
        sa.PrimaryKeyConstraint("wallet_id", name=op.f("pk_wallet_settings")),
    )
    op.create_table(
        "wallet_budget_months",
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("notified", sa.Integer(), nullable=False),
        sa.CheckConstraint("spent >= 0", name=op.f("ck_wallet_budget_months_spent_non_negative")),
        sa.CheckConstraint("notified IN (0, 80, 100)", name=op.f("ck_wallet_budget_months_notified")),
        sa.PrimaryKeyConstraint("wallet_id", "month", name=op.f("pk_wallet_budget_months")),
    )


def downgrade() -> None:
    op.drop_table("wallet_budget_months")
    op.drop_table("wallet_settings")

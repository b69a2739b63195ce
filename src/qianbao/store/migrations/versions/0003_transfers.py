"""Payments: the `transfers` table (P2P transfer records, including declines).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transfers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("ledger_transfer_id", sa.String(length=128), nullable=False),
        sa.Column("from_wallet_id", sa.String(length=40), nullable=False),
        sa.Column("to_wallet_id", sa.String(length=40), nullable=False),
        sa.Column("from_user_id", sa.String(length=40), nullable=False),
        sa.Column("to_user_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("memo_cipher", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_scope", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_transfers_amount_positive")),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_transfers_status")),
        sa.CheckConstraint(
            "(status = 'failed') = (failure_code IS NOT NULL)",
            name=op.f("ck_transfers_failure_code_iff_failed"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
        sa.UniqueConstraint("ledger_transfer_id", name=op.f("uq_transfers_ledger_transfer_id")),
    )
    op.create_index(
        "ix_transfers_from_user_id_to_user_id_status",
        "transfers",
        ["from_user_id", "to_user_id", "status"],
        unique=False,
    )
    op.create_index(
        "ix_transfers_to_user_id_created_at", "transfers", ["to_user_id", "created_at"], unique=False
    )


def downgrade() -> None:
    # Payment records are part of the financial history; refuse to drop them.
    raise RuntimeError("migration 0003 cannot be downgraded")

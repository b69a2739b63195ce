"""Money requests (P2P requests the payer accepts or declines): the `money_requests` table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "money_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("requester_user_id", sa.String(length=40), nullable=False),
        sa.Column("to_wallet_id", sa.String(length=40), nullable=False),
        sa.Column("payer_user_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("memo_cipher", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("transfer_id", sa.String(length=40), nullable=True),
        sa.Column("from_wallet_id", sa.String(length=40), nullable=True),
        sa.Column("decline_reason_cipher", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_money_requests_amount_positive")),
        sa.CheckConstraint(
            "status IN ('pending', 'paid', 'declined', 'canceled', 'expired')",
            name=op.f("ck_money_requests_status"),
        ),
        sa.CheckConstraint(
            "requester_user_id <> payer_user_id", name=op.f("ck_money_requests_parties_differ")
        ),
        sa.CheckConstraint(
            "(status = 'paid') = (transfer_id IS NOT NULL)", name=op.f("ck_money_requests_transfer_iff_paid")
        ),
        sa.CheckConstraint(
            "(status = 'pending') = (resolved_at IS NULL)",
            name=op.f("ck_money_requests_resolved_iff_not_pending"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_money_requests")),
        sa.UniqueConstraint("transfer_id", name=op.f("uq_money_requests_transfer_id")),
    )
    op.create_index(
        "ix_money_requests_payer_user_id_id",
        "money_requests",
        ["payer_user_id", "id"],
        unique=False,
    )
    op.create_index(
        "ix_money_requests_requester_user_id_id",
        "money_requests",
        ["requester_user_id", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_money_requests_requester_user_id_id", table_name="money_requests")
    op.drop_index("ix_money_requests_payer_user_id_id", table_name="money_requests")
    op.drop_table("money_requests")

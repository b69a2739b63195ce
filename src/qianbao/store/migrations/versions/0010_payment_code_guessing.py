"""Payment-code guessing: wrong codes counted per device number, and devices blocked by them.

`payment_code_failures` records each wrong code (device number, merchant, time), so that wrong codes for
one device from many merchants together block it; `payment_code_devices.blocked_at` marks a blocked
device. Both are cheap on a live database: a new table, and a nullable column without a default (a
catalogue change on PostgreSQL, no table rewrite).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("payment_code_devices", sa.Column("blocked_at", sa.BigInteger(), nullable=True))
    op.create_table(
        "payment_code_failures",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.String(length=7), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("failed_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_code_failures")),
    )
    op.create_index(
        "ix_payment_code_failures_number_failed_at",
        "payment_code_failures",
        ["number", "failed_at"],
        unique=False,
    )
    op.create_index(
        "ix_payment_code_failures_failed_at", "payment_code_failures", ["failed_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_payment_code_failures_failed_at", table_name="payment_code_failures")
    op.drop_index("ix_payment_code_failures_number_failed_at", table_name="payment_code_failures")
    op.drop_table("payment_code_failures")
    op.drop_column("payment_code_devices", "blocked_at")  # SQLite 3.35+ drops columns in place

"""Payment-code guessing, per merchant, counted in the database.

A merchant's wrong codes were counted by the rate limiter, checked before a code was tried and counted
after it, so concurrent guesses from one merchant all passed the check. They are now rows of
`payment_code_failures`, counted under a per-merchant lock in the transaction that tries the code. A
failure that says nothing about a device (a malformed code, a used one) counts against the merchant
only: its `number` is NULL. The new index serves the per-merchant count.

On PostgreSQL dropping NOT NULL is a catalogue change; SQLite copies the table (it holds at most 31 days
of wrong codes). Downgrading deletes the merchant-only rows, which the old schema cannot hold.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

failures = sa.table("payment_code_failures", sa.column("number", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("payment_code_failures") as batch:
        batch.alter_column("number", existing_type=sa.String(length=7), nullable=True)
    op.create_index(
        "ix_payment_code_failures_merchant_id_failed_at",
        "payment_code_failures",
        ["merchant_id", "failed_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_payment_code_failures_merchant_id_failed_at", table_name="payment_code_failures")
    op.execute(failures.delete().where(failures.c.number.is_(None)))
    with op.batch_alter_table("payment_code_failures") as batch:
        batch.alter_column("number", existing_type=sa.String(length=7), nullable=False)

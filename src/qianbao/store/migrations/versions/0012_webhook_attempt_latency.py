"""Webhook attempts without an answer record no latency.

An attempt that got no answer tells its endpoint's owner one neutral word (`connection_failed` …); its
latency told more: an instant refusal from a port that timed out after 5 seconds, behind an address that
need not be the owner's. `webhook_attempts.latency_ms` becomes nullable, and is NULL for such attempts,
those already logged included (the server log keeps the time).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

attempts = sa.table(
    "webhook_attempts", sa.column("status_code", sa.Integer), sa.column("latency_ms", sa.Integer)
)


def upgrade() -> None:
    with op.batch_alter_table("webhook_attempts") as batch:
        batch.alter_column("latency_ms", existing_type=sa.Integer(), nullable=True)
    op.execute(attempts.update().where(attempts.c.status_code.is_(None)).values(latency_ms=None))


def downgrade() -> None:
    op.execute(attempts.update().where(attempts.c.latency_ms.is_(None)).values(latency_ms=0))
    with op.batch_alter_table("webhook_attempts") as batch:
        batch.alter_column("latency_ms", existing_type=sa.Integer(), nullable=False)

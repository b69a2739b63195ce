"""Indexes for purging old events, webhook deliveries and notifications by age (housekeeping).

On PostgreSQL they are built CONCURRENTLY, outside the migration's transaction: every payment writes to
`outbox`, and a plain CREATE INDEX would block those writes for as long as a large table takes to index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_outbox_created_at", "outbox"),
    ("ix_event_recipients_created_at", "event_recipients"),
    ("ix_webhook_deliveries_created_at", "webhook_deliveries"),
    ("ix_notifications_created_at", "notifications"),
)


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        for name, table in INDEXES:
            op.create_index(name, table, ["created_at"], unique=False)
        return
    with context.autocommit_block():
        for name, table in INDEXES:
            # A build interrupted earlier leaves an invalid index behind: drop it and build again.
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
            op.create_index(name, table, ["created_at"], unique=False, postgresql_concurrently=True)


def downgrade() -> None:
    for name, table in reversed(INDEXES):
        op.drop_index(name, table_name=table)

"""Indexes for purging old events, webhook deliveries and notifications by age (housekeeping).

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
    for name, table in INDEXES:
        op.create_index(name, table, ["created_at"], unique=False)


def downgrade() -> None:
    for name, table in reversed(INDEXES):
        op.drop_index(name, table_name=table)

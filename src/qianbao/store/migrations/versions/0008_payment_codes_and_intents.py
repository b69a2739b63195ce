"""Payment codes and checkout payment intents.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "no_pin_usage",
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_no_pin_usage_amount_nonnegative")),
        sa.PrimaryKeyConstraint("user_id", "day", name=op.f("pk_no_pin_usage")),
    )
    op.create_table(
        "payment_code_devices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.String(length=7), nullable=False),
        sa.Column("secret_cipher", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("status IN ('active', 'revoked')", name=op.f("ck_payment_code_devices_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_code_devices")),
        sa.UniqueConstraint("number", name=op.f("uq_payment_code_devices_number")),
    )
    op.create_index("ix_payment_code_devices_user_id", "payment_code_devices", ["user_id"], unique=False)
    op.create_table(
        "payment_code_settings",
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("no_pin_per_payment", sa.BigInteger(), nullable=False),
        sa.Column("no_pin_daily", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "no_pin_per_payment >= 0 AND no_pin_daily >= 0",
            name=op.f("ck_payment_code_settings_allowance_nonnegative"),
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_payment_code_settings")),
    )
    op.create_table(
        "payment_code_uses",
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=False),
        sa.Column("charge_ref", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "step", "seq", name=op.f("pk_payment_code_uses")),
    )
    op.create_index("ix_payment_code_uses_used_at", "payment_code_uses", ["used_at"], unique=False)
    op.create_table(
        "payment_intents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_user_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("return_url", sa.String(length=2000), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("payer_user_id", sa.String(length=40), nullable=True),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "status <> 'succeeded' OR payment_id IS NOT NULL",
            name=op.f("ck_payment_intents_succeeded_has_payment"),
        ),
        sa.CheckConstraint(
            "status IN ('requires_confirmation', 'processing', 'succeeded', 'failed', 'canceled', 'expired')",
            name=op.f("ck_payment_intents_status"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payment_intents_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_intents")),
    )
    op.create_index(
        "ix_payment_intents_merchant_id_created_at",
        "payment_intents",
        ["merchant_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_payment_intents_status_expires_at", "payment_intents", ["status", "expires_at"], unique=False
    )


def downgrade() -> None:
    # Payment records are part of the financial history; refuse to drop them.
    raise RuntimeError("migration 0008 cannot be downgraded")

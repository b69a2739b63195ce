"""Merchants, merchant QR codes, merchant payments and refunds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "merchant_payments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("ledger_transfer_id", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_user_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_wallet_id", sa.String(length=40), nullable=False),
        sa.Column("payer_user_id", sa.String(length=40), nullable=False),
        sa.Column("payer_wallet_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("fee_refunded", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("qr_code_id", sa.String(length=40), nullable=True),
        sa.Column("memo_cipher", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_scope", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.CheckConstraint(
            "(status = 'failed') = (failure_code IS NOT NULL)",
            name=op.f("ck_merchant_payments_failure_code_iff_failed"),
        ),
        sa.CheckConstraint(
            "method IN ('qr_static', 'qr_dynamic', 'payment_code', 'checkout')",
            name=op.f("ck_merchant_payments_method"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'canceled')",
            name=op.f("ck_merchant_payments_status"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_merchant_payments_amount_positive")),
        sa.CheckConstraint("fee >= 0 AND fee <= amount", name=op.f("ck_merchant_payments_fee_bounded")),
        sa.CheckConstraint(
            "fee_refunded >= 0 AND fee_refunded <= fee", name=op.f("ck_merchant_payments_fee_refunds_bounded")
        ),
        sa.CheckConstraint(
            "refunded_amount >= 0 AND refunded_amount <= amount",
            name=op.f("ck_merchant_payments_refunds_bounded"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_payments")),
        sa.UniqueConstraint("ledger_transfer_id", name=op.f("uq_merchant_payments_ledger_transfer_id")),
    )
    op.create_index(
        "ix_merchant_payments_merchant_id_created_at",
        "merchant_payments",
        ["merchant_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_merchant_payments_payer_user_id_created_at",
        "merchant_payments",
        ["payer_user_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_merchant_payments_pending_expires_at",
        "merchant_payments",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "merchant_qr_codes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=25), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(status = 'paid') = (payment_id IS NOT NULL)", name=op.f("ck_merchant_qr_codes_payment_iff_paid")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'paid', 'canceled')", name=op.f("ck_merchant_qr_codes_status")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_merchant_qr_codes_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_qr_codes")),
        sa.UniqueConstraint("reference", name=op.f("uq_merchant_qr_codes_reference")),
    )
    op.create_index(
        "ix_merchant_qr_codes_merchant_id_created_at",
        "merchant_qr_codes",
        ["merchant_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "merchants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_user_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("mcc", sa.String(length=4), nullable=False),
        sa.Column("city", sa.String(length=32), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("status IN ('active', 'suspended', 'closed')", name=op.f("ck_merchants_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.UniqueConstraint("wallet_id", name=op.f("uq_merchants_wallet_id")),
    )
    op.create_index("ix_merchants_owner_user_id", "merchants", ["owner_user_id"], unique=False)
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("ledger_transfer_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("fee_refunded", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("to_wallet_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("reason_cipher", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_scope", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.CheckConstraint(
            "(status = 'failed') = (failure_code IS NOT NULL)",
            name=op.f("ck_refunds_failure_code_iff_failed"),
        ),
        sa.CheckConstraint("status IN ('succeeded', 'failed')", name=op.f("ck_refunds_status")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.CheckConstraint("fee_refunded >= 0", name=op.f("ck_refunds_fee_refunded_nonnegative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("ledger_transfer_id", name=op.f("uq_refunds_ledger_transfer_id")),
    )
    op.create_index("ix_refunds_payment_id_created_at", "refunds", ["payment_id", "created_at"], unique=False)


def downgrade() -> None:
    # Payment records are part of the financial history; refuse to drop them.
    raise RuntimeError("migration 0004 cannot be downgraded")

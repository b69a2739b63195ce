"""Merchants, their dynamic QR codes, merchant payments and refunds (migration 0004).

A merchant's money lives in its own ledger account (`merchant_wallet_id`, code `wallet.merchant`); these
tables hold what the ledger should not: who the merchant is, which order a payment was for, how much of
it has been refunded. Counters that must never exceed the payment (`refunded_amount`, `fee_refunded`) are
bounded by CHECK constraints as well as by the conditional UPDATE that moves them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, String, Table, Text, text

from qianbao.store.metadata import metadata

MERCHANT_STATUSES = ("active", "suspended", "closed")
QR_CODE_STATUSES = ("active", "paid", "canceled")
PAYMENT_STATUSES = ("pending", "succeeded", "failed", "canceled")
PAYMENT_METHODS = ("qr_static", "qr_dynamic", "payment_code", "checkout")
REFUND_STATUSES = ("succeeded", "failed")

merchants = Table(
    "merchants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_user_id", String(40), nullable=False),
    Column("name", String(64), nullable=False),
    Column("mcc", String(4), nullable=False),
    Column("city", String(32), nullable=False),
    Column("wallet_id", String(40), nullable=False, unique=True),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint(f"status IN {MERCHANT_STATUSES!r}", name="status"),
    Index("ix_merchants_owner_user_id", "owner_user_id"),
)

# Dynamic (single-use, expiring) merchant-presented codes. `reference` is what the payload carries in
# its additional data (62/05): short enough for the EMVCo field, unguessable.
merchant_qr_codes = Table(
    "merchant_qr_codes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("reference", String(25), nullable=False, unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("order_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("payment_id", String(40), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(f"status IN {QR_CODE_STATUSES!r}", name="status"),
    CheckConstraint("(status = 'paid') = (payment_id IS NOT NULL)", name="payment_iff_paid"),
    Index("ix_merchant_qr_codes_merchant_id_created_at", "merchant_id", "created_at"),
)

merchant_payments = Table(
    "merchant_payments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("ledger_transfer_id", String(128), nullable=False, unique=True),
    Column("method", String(16), nullable=False),
    Column("merchant_id", String(40), nullable=False),
    Column("merchant_user_id", String(40), nullable=False),
    Column("merchant_wallet_id", String(40), nullable=False),
    Column("payer_user_id", String(40), nullable=False),
    Column("payer_wallet_id", String(40), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("refunded_amount", BigInteger, nullable=False),
    Column("fee_refunded", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("failure_code", String(64), nullable=True),
    Column("order_id", String(64), nullable=True),
    Column("qr_code_id", String(40), nullable=True),
    Column("memo_cipher", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # A payment waiting for the customer's confirmation (a payment code over the no-PIN allowance) holds
    # the funds until then; past it the hold is void.
    Column("expires_at", BigInteger, nullable=True),
    Column("idempotency_scope", String(64), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("fee >= 0 AND fee <= amount", name="fee_bounded"),
    CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount", name="refunds_bounded"),
    CheckConstraint("fee_refunded >= 0 AND fee_refunded <= fee", name="fee_refunds_bounded"),
    CheckConstraint(f"status IN {PAYMENT_STATUSES!r}", name="status"),
    CheckConstraint(f"method IN {PAYMENT_METHODS!r}", name="method"),
    CheckConstraint("(status = 'failed') = (failure_code IS NOT NULL)", name="failure_code_iff_failed"),
    Index("ix_merchant_payments_merchant_id_created_at", "merchant_id", "created_at"),
    Index("ix_merchant_payments_payer_user_id_created_at", "payer_user_id", "created_at"),
    Index(  # the sweeper's "pending past its deadline" scan
        "ix_merchant_payments_pending_expires_at",
        "expires_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False),
    Column("ledger_transfer_id", String(128), nullable=False, unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("fee_refunded", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("to_wallet_id", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("failure_code", String(64), nullable=True),
    Column("reason_cipher", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("idempotency_scope", String(64), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("fee_refunded >= 0", name="fee_refunded_nonnegative"),
    CheckConstraint(f"status IN {REFUND_STATUSES!r}", name="status"),
    CheckConstraint("(status = 'failed') = (failure_code IS NOT NULL)", name="failure_code_iff_failed"),
    Index("ix_refunds_payment_id_created_at", "payment_id", "created_at"),
)

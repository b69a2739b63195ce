"""Payment records (migration 0003): one row per P2P transfer the API accepted for execution.

The ledger holds the money movement; this table holds what the ledger should not: who paid whom as the
API saw it, the memo (encrypted, `memo_cipher`: free text often holds names and phone numbers), and
declines (a transfer the ledger refused still gets a row, `failed` with its `failure_code`, so an
Idempotency-Key replay finds the decline). `ledger_transfer_id` is unique: one record per ledger
transfer id, and with an Idempotency-Key that id is derived from the key.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, String, Table, Text

from qianbao.store.metadata import metadata

TRANSFER_STATUSES = ("pending", "succeeded", "failed")

transfers = Table(
    "transfers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("ledger_transfer_id", String(128), nullable=False, unique=True),
    Column("from_wallet_id", String(40), nullable=False),
    Column("to_wallet_id", String(40), nullable=False),
    Column("from_user_id", String(40), nullable=False),
    Column("to_user_id", String(40), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("memo_cipher", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("failure_code", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("idempotency_scope", String(64), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(f"status IN {TRANSFER_STATUSES!r}", name="status"),
    CheckConstraint("(status = 'failed') = (failure_code IS NOT NULL)", name="failure_code_iff_failed"),
    # "Has this user paid that user before?" (the new-payee step-up rule).
    Index("ix_transfers_from_user_id_to_user_id_status", "from_user_id", "to_user_id", "status"),
    Index("ix_transfers_to_user_id_created_at", "to_user_id", "created_at"),
)

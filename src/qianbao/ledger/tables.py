"""Ledger tables, as the migrations create them (described here for queries and the drift test).

Amounts are BIGINT minor units; times are BIGINT microseconds since the epoch (UTC).

`transfers` is append-only (triggers refuse UPDATE/DELETE/TRUNCATE). Each row also records the posted
net balance (credits - debits) of both of its accounts right after it applied, which gives account history
with "balance after" and balances as of a past instant without a second table.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    String,
    Table,
    UniqueConstraint,
    text,
)

from qianbao.store.metadata import metadata

ACCOUNT_STATUSES = ("open", "debit_frozen", "frozen", "closed")
TRANSFER_KINDS = ("posted", "pending", "post_pending", "void_pending", "expire_pending")

accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("code", String(64), nullable=False),
    Column("owner_ref", String(128), nullable=True),
    Column("normal_balance", String(6), nullable=False),
    Column("debits_must_not_exceed_credits", Boolean, nullable=False),
    Column("credits_must_not_exceed_debits", Boolean, nullable=False),
    Column("balance_ceiling", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("metadata", JSON, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("id", "currency"),
    CheckConstraint("normal_balance IN ('credit', 'debit')", name="normal_balance"),
    CheckConstraint(f"status IN {ACCOUNT_STATUSES!r}", name="status"),
    CheckConstraint(
        "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
        name="balances_non_negative",
    ),
    CheckConstraint(
        "NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted",
        name="debits_within_credits",
    ),
    CheckConstraint(
        "NOT credits_must_not_exceed_debits OR credits_posted + credits_pending <= debits_posted",
        name="credits_within_debits",
    ),
    CheckConstraint(
        "balance_ceiling IS NULL OR (balance_ceiling >= 0 AND CASE normal_balance"
        " WHEN 'credit' THEN credits_posted + credits_pending - debits_posted"
        " ELSE debits_posted + debits_pending - credits_posted END <= balance_ceiling)",
        name="within_ceiling",
    ),
    CheckConstraint(
        "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)", name="one_flag"
    ),
    CheckConstraint("length(currency) = 3", name="currency_code"),
)

transfers = Table(
    "ledger_transfers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("debit_account_id", String(64), nullable=False),
    Column("credit_account_id", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("code", String(64), nullable=False),
    Column("pending_id", String(128), nullable=True),
    Column("timeout_at", BigInteger, nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("debit_net_after", BigInteger, nullable=False),
    Column("credit_net_after", BigInteger, nullable=False),
    # The database refuses a transfer whose accounts are missing or in another currency: composite foreign
    # keys on SQLite, a set-based statement trigger on PostgreSQL (migration 0001 explains why).
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="accounts_differ"),
    CheckConstraint(f"kind IN {TRANSFER_KINDS!r}", name="kind"),
    CheckConstraint(
        "(kind IN ('posted', 'pending')) = (pending_id IS NULL)", name="pending_id_iff_resolution"
    ),
    CheckConstraint("timeout_at IS NULL OR kind = 'pending'", name="timeout_only_for_pending"),
    Index("ix_ledger_transfers_debit_account_id_seq", "debit_account_id", "seq"),
    Index("ix_ledger_transfers_credit_account_id_seq", "credit_account_id", "seq"),
    # A pending transfer is resolved (posted, voided or expired) at most once, whatever the code does.
    Index(
        "uq_ledger_transfers_pending_id",
        "pending_id",
        unique=True,
        postgresql_where=text("pending_id IS NOT NULL"),
        sqlite_where=text("pending_id IS NOT NULL"),
    ),
    Index(
        "ix_ledger_transfers_open_timeouts",
        "timeout_at",
        postgresql_where=text("timeout_at IS NOT NULL"),
        sqlite_where=text("timeout_at IS NOT NULL"),
    ),
)

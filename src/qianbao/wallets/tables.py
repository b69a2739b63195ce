"""Wallets: each is one ledger account (same id) owned by a user (migration 0002)."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, String, Table, text

from qianbao.store.metadata import metadata

WALLET_KINDS = ("main", "sub")

wallets = Table(
    "wallets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("name", String(64), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    CheckConstraint(f"kind IN {WALLET_KINDS!r}", name="kind"),
    Index("ix_wallets_user_id_created_at", "user_id", "created_at"),
    # One main wallet per user and currency.
    Index(
        "uq_wallets_main",
        "user_id",
        "currency",
        unique=True,
        postgresql_where=text("kind = 'main'"),
        sqlite_where=text("kind = 'main'"),
    ),
)

"""Security tables: wrapped data keys and the append-only audit log (migration 0002)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, Index, Integer, String, Table, Text, text

from qianbao.store.metadata import metadata

# Data-encryption keys, each wrapped (AES-GCM) by the master key named by its fingerprint. Exactly one is
# `active` (new values are encrypted under it); `retired` keys still decrypt until rotation has moved
# every value off them.
data_keys = Table(
    "data_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("wrapped_key", Text, nullable=False),
    Column("master_fingerprint", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=True),
    CheckConstraint("state IN ('active', 'retired')", name="state"),
    Index(
        "uq_data_keys_active",
        "state",
        unique=True,
        postgresql_where=text("state = 'active'"),
        sqlite_where=text("state = 'active'"),
    ),
)

# Append-only: the database refuses UPDATE and DELETE (triggers in migration 0002). Details never hold
# personal data in clear, only masked values and ids.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("at", BigInteger, nullable=False, index=True),
    Column("event", String(64), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(40), nullable=True),
    Column("subject_user_id", String(40), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("device_id", String(40), nullable=True),
    Column("session_id", String(40), nullable=True),
    Column("details", JSON, nullable=False),
    CheckConstraint("outcome IN ('success', 'failure')", name="outcome"),
    Index("ix_audit_events_subject_user_id_seq", "subject_user_id", "seq"),
)

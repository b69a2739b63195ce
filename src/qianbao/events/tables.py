"""Events and webhooks (migration 0005): who sees which event, endpoints, deliveries, attempts, and in-app
notifications.

Event payloads stay in the outbox (`outbox.payload`, keyed by the event id); the rows here point at them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from qianbao.store.metadata import metadata

DELIVERY_STATUSES = ("pending", "delivered", "failed")

# One row per (user, event) the user is about (events.model.recipients): the event feed.
event_recipients = Table(
    "event_recipients",
    metadata,
    Column("user_id", String(40), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_seq", BigInteger, nullable=False),  # the outbox seq: the feed's order and cursor
    Column("type", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "event_id"),
    Index("ix_event_recipients_user_id_event_seq", "user_id", "event_seq"),
    Index("ix_event_recipients_user_id_type_event_seq", "user_id", "type", "event_seq"),
    Index("ix_event_recipients_created_at", "created_at"),  # housekeeping
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_user_id", String(40), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("description", String(256), nullable=True),
    Column("events", JSON, nullable=False),  # event types, families ("payment.*") or "*"
    Column("enabled", Boolean, nullable=False),
    # The signing secret must be readable to compute HMACs: encrypted with the key ring, not hashed.
    Column("secret_cipher", Text, nullable=False),
    # After a rotation the old secret also signs until it expires (zero-downtime rotation).
    Column("previous_secret_cipher", Text, nullable=True),
    Column("previous_secret_expires_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint(
        "(previous_secret_cipher IS NULL) = (previous_secret_expires_at IS NULL)", name="previous_secret"
    ),
    Index("ix_webhook_endpoints_owner_user_id", "owner_user_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("endpoint_id", String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("event_created_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt_count", Integer, nullable=False),
    # When it is due; while a worker holds it, the end of that worker's lease (with lease_token set).
    Column("next_attempt_at", BigInteger, nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("last_attempt_at", BigInteger, nullable=True),
    Column("delivered_at", BigInteger, nullable=True),
    CheckConstraint(f"status IN {DELIVERY_STATUSES!r}", name="status"),
    CheckConstraint("(status = 'pending') = (next_attempt_at IS NOT NULL)", name="due_iff_pending"),
    UniqueConstraint("endpoint_id", "event_id"),
    Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
    Index("ix_webhook_deliveries_created_at", "created_at"),  # housekeeping
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column(
        "delivery_id", String(40), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
    ),
    Column("number", Integer, nullable=False),
    Column("manual", Boolean, nullable=False),
    Column("attempted_at", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=True),  # None without an answer (`sending.AttemptResult`)
    Column("response_snippet", Text, nullable=True),  # the first 500 characters of the answer
    Column("error", String(256), nullable=True),  # timeout, connection refused…
    Column("succeeded", Boolean, nullable=False),
    Index("ix_webhook_attempts_delivery_id_number", "delivery_id", "number"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("kind", String(64), nullable=False),
    # Ids and amounts from the event (never names or memos): the text is rendered when read.
    Column("data", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("read_at", BigInteger, nullable=True),
    UniqueConstraint("user_id", "event_id"),
    Index("ix_notifications_user_id_event_seq", "user_id", "event_seq"),
    Index("ix_notifications_created_at", "created_at"),  # housekeeping
)

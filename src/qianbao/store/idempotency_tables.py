"""Idempotency records: the outcome bound to a caller's `Idempotency-Key` (migration 0002)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Integer, PrimaryKeyConstraint, String, Table

from qianbao.store.metadata import metadata

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # Who asked (a user, an API key, or "anon:<ip-free fingerprint>"): keys are scoped to the caller.
    Column("scope", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False, index=True),
    PrimaryKeyConstraint("scope", "key"),
)

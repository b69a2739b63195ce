"""Housekeeping: delete short-lived security rows once nothing can use them any more.

Expired one-time codes, WebAuthn ceremonies and step-up challenges, remembered API nonces, old
idempotency records and the record of used payment codes would otherwise grow without bound. Each
worker's sweeper calls `purge_expired` now and then; the deletes are idempotent and bounded, so several
workers running them at once is harmless. The audit log is never purged (it is append-only in the
database).
"""

from __future__ import annotations

from sqlalchemy import Table, delete, select

from qianbao.identity.tables import api_nonces, ceremonies, challenges, verifications
from qianbao.payments.code_tables import payment_code_uses
from qianbao.store.database import Database
from qianbao.store.idempotency_tables import idempotency_keys

HOUR_US = 3_600_000_000
# Keep expired rows a while for support and investigations, then drop them.
RETENTION_US: dict[str, int] = {
    "verifications": 24 * HOUR_US,
    "auth_ceremonies": 24 * HOUR_US,
    "challenges": 30 * 24 * HOUR_US,
    "api_nonces": 1 * HOUR_US,  # the replay window is 5 minutes
    "idempotency_keys": 48 * HOUR_US,  # API.md promises at least 24 hours
    # A payment code is accepted for about two minutes; its "used" row must outlive that, no more.
    "payment_code_uses": 1 * HOUR_US,
}
BATCH = 1000


def _purge(db: Database, table: Table, column: str, before_us: int, key: tuple[str, ...]) -> int:
    col = table.c[column]
    with db.write() as conn:
        keys = conn.execute(select(*(table.c[k] for k in key)).where(col < before_us).limit(BATCH)).all()
        if not keys:
            return 0
        if len(key) == 1:
            conn.execute(delete(table).where(table.c[key[0]].in_([k[0] for k in keys])))
        else:
            for row in keys:
                conn.execute(delete(table).where(*(table.c[k] == v for k, v in zip(key, row, strict=True))))
        return len(keys)


def purge_expired(db: Database, now_us: int) -> int:
    """Delete one batch of each kind of expired row; returns how many rows went."""
    return (
        _purge(db, verifications, "expires_at", now_us - RETENTION_US["verifications"], ("id",))
        + _purge(db, ceremonies, "expires_at", now_us - RETENTION_US["auth_ceremonies"], ("id",))
        + _purge(db, challenges, "expires_at", now_us - RETENTION_US["challenges"], ("id",))
        + _purge(db, api_nonces, "seen_at", now_us - RETENTION_US["api_nonces"], ("key_id", "nonce"))
        + _purge(
            db, idempotency_keys, "created_at", now_us - RETENTION_US["idempotency_keys"], ("scope", "key")
        )
        + _purge(
            db,
            payment_code_uses,
            "used_at",
            now_us - RETENTION_US["payment_code_uses"],
            ("device_id", "step", "seq"),
        )
    )

"""Expired rows are purged after their retention (security rows, events, deliveries, notifications);
live ones and the audit log stay."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select

from qianbao.events.tables import (
    event_recipients,
    notifications,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)
from qianbao.identity.tables import api_nonces, ceremonies, verifications
from qianbao.payments.code_tables import payment_code_uses
from qianbao.security import audit
from qianbao.security.tables import audit_events
from qianbao.store.database import Database
from qianbao.store.housekeeping import BATCH, HOUR_US, purge_due, purge_events, purge_expired
from qianbao.store.idempotency_tables import idempotency_keys
from qianbao.store.outbox import outbox

NOW = 1_800_000_000_000_000


def test_purge_drops_only_rows_past_their_retention(fresh_db: Database) -> None:
    with fresh_db.write() as conn:
        for name, expires in (("old", NOW - 25 * HOUR_US), ("fresh", NOW - 1 * HOUR_US)):
            conn.execute(
                insert(verifications).values(
                    id=f"ver_{name}",
                    purpose="signup",
                    phone_index="x",
                    code_hash="h",
                    created_at=expires - 1,
                    expires_at=expires,
                )  # fmt: skip
            )
            conn.execute(
                insert(ceremonies).values(
                    id=f"cer_{name}", kind="k", challenge="c", created_at=expires - 1, expires_at=expires
                )
            )
        conn.execute(insert(api_nonces).values(key_id="key_1", nonce="old", seen_at=NOW - 2 * HOUR_US))
        conn.execute(insert(api_nonces).values(key_id="key_1", nonce="new", seen_at=NOW - 60_000_000))
        for key, created in (("old", NOW - 49 * HOUR_US), ("new", NOW - 23 * HOUR_US)):
            conn.execute(
                insert(idempotency_keys).values(
                    scope="user:u",
                    key=key,
                    request_hash="h",
                    status_code=201,
                    response={},
                    created_at=created,
                )
            )
        for seq, used in ((0, NOW - 2 * HOUR_US), (1, NOW - 90_000_000)):
            conn.execute(
                insert(payment_code_uses).values(
                    device_id="pcd_1", step=1, seq=seq, used_at=used, charge_ref="c"
                )
            )
        audit.record(conn, NOW - 1000 * HOUR_US, "ancient.event", audit.Actor.system())
    assert purge_expired(fresh_db, NOW) == 5
    assert purge_expired(fresh_db, NOW) == 0
    with fresh_db.read() as conn:
        assert conn.execute(select(verifications.c.id)).scalars().all() == ["ver_fresh"]
        assert conn.execute(select(ceremonies.c.id)).scalars().all() == ["cer_fresh"]
        assert conn.execute(select(api_nonces.c.nonce)).scalars().all() == ["new"]
        assert conn.execute(select(idempotency_keys.c.key)).scalars().all() == ["new"]
        assert conn.execute(select(payment_code_uses.c.seq)).scalars().all() == [1]
        assert conn.execute(select(func.count()).select_from(audit_events)).scalar_one() == 1


DAY = 24 * HOUR_US


def _event_rows(conn: Any, name: str, created: int, *, published: bool = True) -> None:
    """An outbox event with its feed row, a webhook delivery with one attempt, and a notification."""
    conn.execute(
        insert(outbox).values(
            id=f"evt_{name}",
            type="transfer.succeeded",
            aggregate_type="transfer",
            aggregate_id=f"trf_{name}",
            payload={"transfer_id": f"trf_{name}"},
            created_at=created,
            published_at=created if published else None,
        )  # fmt: skip
    )
    conn.execute(
        insert(event_recipients).values(
            user_id="usr_1",
            event_id=f"evt_{name}",
            event_seq=1,
            type="transfer.succeeded",
            created_at=created,
        )
    )
    conn.execute(
        insert(webhook_deliveries).values(
            id=f"whd_{name}",
            endpoint_id="whe_1",
            event_id=f"evt_{name}",
            event_type="transfer.succeeded",
            event_created_at=created,
            status="delivered",
            attempt_count=1,
            next_attempt_at=None,
            lease_token=None,
            created_at=created,
            last_attempt_at=created,
            delivered_at=created,
        )  # fmt: skip
    )
    conn.execute(
        insert(webhook_attempts).values(
            id=f"wha_{name}",
            delivery_id=f"whd_{name}",
            number=1,
            manual=False,
            attempted_at=created,
            status_code=200,
            latency_ms=5,
            response_snippet="ok",
            error=None,
            succeeded=True,
        )  # fmt: skip
    )
    conn.execute(
        insert(notifications).values(
            id=f"ntf_{name}",
            user_id="usr_1",
            event_id=f"evt_{name}",
            event_seq=1,
            kind="transfer_received",
            data={},
            created_at=created,
            read_at=None,
        )  # fmt: skip
    )


def _endpoint(conn: Any) -> None:
    """The webhook endpoint the deliveries belong to (housekeeping never deletes endpoints)."""
    conn.execute(
        insert(webhook_endpoints).values(
            id="whe_1",
            owner_user_id="usr_1",
            url="https://example.com/hook",
            description=None,
            events=["*"],
            enabled=True,
            secret_cipher="not-a-secret",  # noqa: S106 - never read here
            previous_secret_cipher=None,
            previous_secret_expires_at=None,
            created_at=NOW - 400 * DAY,
            updated_at=NOW - 400 * DAY,
        )
    )


def _ids(conn: Any, table: Any) -> list[str]:
    column = table.c.event_id if table is event_recipients else table.c.id
    return sorted(conn.execute(select(column)).scalars().all())


def test_events_deliveries_and_notifications_are_kept_for_their_retention_then_purged(
    fresh_db: Database,
) -> None:
    with fresh_db.write() as conn:
        _endpoint(conn)
        _event_rows(conn, "ancient", NOW - 100 * DAY)  # past both retentions
        _event_rows(conn, "old", NOW - 31 * DAY)  # past the event retention, not the notifications'
        _event_rows(conn, "stuck", NOW - 40 * DAY, published=False)  # never fanned out: kept
        _event_rows(conn, "recent", NOW - 29 * DAY)
    purge_events(fresh_db, NOW)
    with fresh_db.read() as conn:
        assert _ids(conn, outbox) == ["evt_recent", "evt_stuck"]
        assert _ids(conn, event_recipients) == ["evt_recent"]
        assert _ids(conn, webhook_deliveries) == ["whd_recent"]
        assert _ids(conn, webhook_attempts) == ["wha_recent"]  # attempts go with their delivery
        assert _ids(conn, notifications) == ["ntf_old", "ntf_recent", "ntf_stuck"]
        assert conn.execute(select(webhook_endpoints.c.id)).scalars().all() == ["whe_1"]
    assert purge_events(fresh_db, NOW) == 0


def test_event_retention_follows_the_settings(fresh_db: Database) -> None:
    with fresh_db.write() as conn:
        _endpoint(conn)
        _event_rows(conn, "week", NOW - 8 * DAY)
    assert purge_expired(fresh_db, NOW, event_retention_us=10 * DAY, notification_retention_us=10 * DAY) == 0
    assert purge_expired(fresh_db, NOW, event_retention_us=7 * DAY, notification_retention_us=9 * DAY) == 3
    with fresh_db.read() as conn:
        assert _ids(conn, notifications) == ["ntf_week"]
        assert _ids(conn, outbox) == []


def _backlog(db: Database, count: int, *, tie_at: int | None = None) -> None:
    """`count` old feed rows, oldest first; with `tie_at`, row `tie_at` shares the time of the row before."""
    rows = []
    for i in range(count):
        created = NOW - 60 * DAY + (i - 1 if tie_at is not None and i == tie_at else i)
        rows.append(
            {"user_id": "usr_1", "event_id": f"evt_{i}", "event_seq": i, "type": "t", "created_at": created}
        )
    with db.write() as conn:
        conn.execute(insert(event_recipients), rows)


def test_a_large_backlog_goes_in_bounded_batches(fresh_db: Database) -> None:
    _backlog(fresh_db, BATCH + 10)
    assert purge_events(fresh_db, NOW) == BATCH
    assert purge_events(fresh_db, NOW) == 10
    assert purge_events(fresh_db, NOW) == 0


def test_rows_sharing_the_batch_edge_time_go_together(fresh_db: Database) -> None:
    _backlog(fresh_db, BATCH + 10, tie_at=BATCH)  # rows BATCH-1 and BATCH were created at the same time
    assert purge_events(fresh_db, NOW) == BATCH + 1


def test_a_sweep_purges_batch_after_batch_until_nothing_is_left(fresh_db: Database) -> None:
    _backlog(fresh_db, 2 * BATCH + 5)
    assert purge_due(fresh_db, NOW) == 2 * BATCH + 5
    _backlog(fresh_db, 2 * BATCH + 5)
    assert (
        purge_due(fresh_db, NOW, budget_s=0) == BATCH
    )  # out of time after one round: the next sweep goes on

"""Expired security rows are purged after their retention; live ones and the audit log stay."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from qianbao.identity.tables import api_nonces, ceremonies, verifications
from qianbao.payments.code_tables import payment_code_uses
from qianbao.security import audit
from qianbao.security.tables import audit_events
from qianbao.store.database import Database
from qianbao.store.housekeeping import HOUR_US, purge_expired
from qianbao.store.idempotency_tables import idempotency_keys

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

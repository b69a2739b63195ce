"""The key ring: data keys stored wrapped in the database, opened with the master key.

Values are encrypted under the one *active* data key; older keys stay readable until `qianbao keys rotate`
has re-encrypted every value. Each process caches the keys and looks again every few seconds (and at once
when it meets a key id it does not know), so a rotation started by one process reaches the others while
the service runs.
"""

from __future__ import annotations

import threading

from sqlalchemy import Connection, insert, select, update

from qianbao.clock import Clock
from qianbao.ids import new_id
from qianbao.security.crypto import (
    BlindIndex,
    CryptoError,
    FieldCipher,
    KeyMaterial,
    UnknownKeyError,
    key_fingerprint,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from qianbao.security.tables import data_keys
from qianbao.store.database import Database
from qianbao.store.errors import DATABASE_ERRORS

REFRESH_INTERVAL_US = 5_000_000


class KeyRing:
    def __init__(self, db: Database, clock: Clock, material: KeyMaterial) -> None:
        self._db = db
        self._clock = clock
        self._master = material.master_key
        self._fingerprint = key_fingerprint(material.master_key)
        self.index = BlindIndex(material.index_key)
        self._lock = threading.Lock()
        self._cipher: FieldCipher | None = None
        self._loaded_at = 0

    # -- reading and writing values -------------------------------------------------------------------

    def encrypt(self, plaintext: str, *, context: str) -> str:
        return self.cipher().encrypt(plaintext, context=context)

    def decrypt(self, token: str, *, context: str) -> str:
        try:
            return self.cipher().decrypt(token, context=context)
        except UnknownKeyError:
            return self.cipher(force_reload=True).decrypt(token, context=context)

    def decrypt_optional(self, token: str | None, *, context: str) -> str | None:
        return None if token is None else self.decrypt(token, context=context)

    def digest(self, kind: str, value: str) -> str:
        return self.index.digest(kind, value)

    @property
    def active_key_id(self) -> str:
        return self.cipher().active_key_id

    def cipher(self, *, force_reload: bool = False) -> FieldCipher:
        now = self._clock.now_us()
        with self._lock:
            if force_reload or self._cipher is None or now - self._loaded_at > REFRESH_INTERVAL_US:
                self._cipher = self._load()
                self._loaded_at = now
            return self._cipher

    # -- managing keys ---------------------------------------------------------------------------------

    def ensure_active_key(self) -> str:
        """Create the first data key if there is none (idempotent; concurrent starters agree on one)."""
        with self._db.read() as conn:
            active = conn.execute(select(data_keys.c.id).where(data_keys.c.state == "active")).scalar()
        if active is not None:
            return str(active)
        try:
            with self._db.write() as conn:
                return self._insert_active(conn)
        except DATABASE_ERRORS:
            # Another process created it first (the partial unique index allows one active key).
            with self._db.read() as conn:
                return str(
                    conn.execute(select(data_keys.c.id).where(data_keys.c.state == "active")).scalar_one()
                )

    def start_rotation(self) -> tuple[str, list[str]]:
        """Make a new data key active and retire the others; returns (new id, retired ids)."""
        with self._db.write() as conn:
            retired = list(
                conn.execute(select(data_keys.c.id).where(data_keys.c.state == "active")).scalars()
            )
            conn.execute(
                update(data_keys)
                .where(data_keys.c.state == "active")
                .values(state="retired", retired_at=self._clock.now_us())
            )
            new_key = self._insert_active(conn)
            all_old = conn.execute(select(data_keys.c.id).where(data_keys.c.id != new_key)).scalars()
            retired = sorted(set(retired) | set(all_old))
        self.cipher(force_reload=True)
        return new_key, retired

    def _insert_active(self, conn: Connection) -> str:
        key_id = new_id("dk")
        conn.execute(
            insert(data_keys).values(
                id=key_id,
                wrapped_key=wrap_data_key(self._master, key_id, new_data_key()),
                master_fingerprint=self._fingerprint,
                state="active",
                created_at=self._clock.now_us(),
            )
        )
        return key_id

    def _load(self) -> FieldCipher:
        with self._db.read() as conn:
            rows = conn.execute(
                select(
                    data_keys.c.id, data_keys.c.wrapped_key, data_keys.c.master_fingerprint, data_keys.c.state
                )
            ).all()
        keys: dict[str, bytes] = {}
        active: str | None = None
        for key_id, wrapped, fingerprint, state in rows:
            if fingerprint != self._fingerprint:
                raise CryptoError(
                    f"data key {key_id} was wrapped by another master key ({fingerprint}); "
                    "start with the master key this database was created with"
                )
            keys[key_id] = unwrap_data_key(self._master, key_id, wrapped)
            if state == "active":
                active = key_id
        if active is None:
            self.ensure_active_key()
            return self._load()
        return FieldCipher(keys, active)

"""Wiring: build the long-lived objects of one process from `Settings`. Nothing is built at import time."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from qianbao.clock import Clock, SystemClock
from qianbao.config import Settings
from qianbao.identity.context import IdentityContext
from qianbao.identity.credentials import SecretHasher
from qianbao.identity.passkeys import RelyingParty
from qianbao.ledger.batcher import TransferBatcher
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.queries import LedgerReader
from qianbao.notify.service import Notifier
from qianbao.payments import charges, intents
from qianbao.security.crypto import KeyMaterial, load_key_material
from qianbao.security.keyring import KeyRing
from qianbao.security.ratelimit import RateLimiter
from qianbao.store.database import Database
from qianbao.store.errors import DATABASE_ERRORS
from qianbao.store.housekeeping import DAY_US, purge_due

log = logging.getLogger(__name__)
PURGE_INTERVAL_US = 60_000_000


@dataclass
class Container:
    settings: Settings
    db: Database
    clock: Clock
    ledger: LedgerEngine
    reader: LedgerReader
    batcher: TransferBatcher
    identity: IdentityContext
    _stop: threading.Event = field(default_factory=threading.Event)
    _sweeper: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.identity.keys.ensure_active_key()
        except DATABASE_ERRORS:
            # Serve anyway: /healthz reports the outage, and the key is created on first use later.
            log.warning("the database is not reachable; the data key will be checked on first use")
        self.batcher.start()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="ledger-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        self._stop.set()
        self.batcher.close()
        if self._sweeper is not None:
            self._sweeper.join(5)
        self.identity.limiter.close()
        self.db.dispose()

    def _sweep_forever(self) -> None:
        """Expire timed-out holds, and now and then purge expired rows (housekeeping). Every worker runs one;
        deterministic ids and idempotent deletes make that harmless."""
        last_purge = 0
        while not self._stop.wait(self.settings.ledger_sweep_interval_s):
            try:
                while self.ledger.expire_pending() > 0 and not self._stop.is_set():
                    pass
                now = self.clock.now_us()
                if now - last_purge > PURGE_INTERVAL_US:
                    last_purge = now
                    purge_due(
                        self.db,
                        now,
                        event_retention_us=self.settings.event_retention_days * DAY_US,
                        notification_retention_us=self.settings.notification_retention_days * DAY_US,
                    )
                # Held payment-code payments nobody confirmed, and checkouts past their deadline.
                charges.finalize_expired(self.identity)
                intents.finalize_expired_intents(self.identity)
            except Exception:  # noqa: BLE001 - a sweep failure must not kill the sweeper; it retries
                log.exception("sweeping expired holds failed; retrying next interval")


def build_container(settings: Settings, clock: Clock | None = None) -> Container:
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    clock = clock or SystemClock()
    ledger = LedgerEngine(db, clock)
    batcher = TransferBatcher(
        ledger, window_ms=settings.ledger_batch_window_ms, max_batch=settings.ledger_batch_max
    )
    return Container(
        settings=settings,
        db=db,
        clock=clock,
        ledger=ledger,
        reader=LedgerReader(db),
        batcher=batcher,
        identity=build_identity(settings, db, clock, ledger),
    )


def key_material(settings: Settings) -> KeyMaterial:
    return load_key_material(
        master_key_b64=settings.master_key.get_secret_value() if settings.master_key else None,
        index_key_b64=settings.index_key.get_secret_value() if settings.index_key else None,
        key_file=settings.resolved_key_file,
        create_if_missing=settings.is_sandbox,
    )


def build_identity(settings: Settings, db: Database, clock: Clock, ledger: LedgerEngine) -> IdentityContext:
    material = key_material(settings)
    keys = KeyRing(db, clock, material)
    return IdentityContext(
        settings=settings,
        db=db,
        clock=clock,
        keys=keys,
        hasher=SecretHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        ),
        # Identifiers (phone numbers, IPs) reach the limiter's storage only as keyed hashes.
        limiter=RateLimiter(settings.redis_url or "memory://", identifier_key=material.index_key),
        notifier=Notifier(keys, clock),
        ledger=ledger,
        relying_party=RelyingParty(
            settings.webauthn_rp_id, settings.webauthn_rp_name, settings.passkey_origins
        ),
    )

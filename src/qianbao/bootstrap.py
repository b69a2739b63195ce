"""Wiring: build the long-lived objects of one process from `Settings`. Nothing is built at import time."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from qianbao.clock import Clock, SystemClock
from qianbao.config import Settings
from qianbao.ledger.batcher import TransferBatcher
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.queries import LedgerReader
from qianbao.store.database import Database

log = logging.getLogger(__name__)


@dataclass
class Container:
    settings: Settings
    db: Database
    clock: Clock
    ledger: LedgerEngine
    reader: LedgerReader
    batcher: TransferBatcher
    _stop: threading.Event = field(default_factory=threading.Event)
    _sweeper: threading.Thread | None = None

    def start(self) -> None:
        self.batcher.start()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="ledger-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        self._stop.set()
        self.batcher.close()
        if self._sweeper is not None:
            self._sweeper.join(5)
        self.db.dispose()

    def _sweep_forever(self) -> None:
        """Expire timed-out holds. Every worker runs one; deterministic ids make that harmless."""
        while not self._stop.wait(self.settings.ledger_sweep_interval_s):
            try:
                while self.ledger.expire_pending() > 0 and not self._stop.is_set():
                    pass
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
        settings=settings, db=db, clock=clock, ledger=ledger, reader=LedgerReader(db), batcher=batcher
    )

"""A unit of work: one use case, one transaction, with its outbox events written before COMMIT."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy import Connection

from qianbao.clock import Clock
from qianbao.store.database import Database
from qianbao.store.outbox import OutboxEvent, append_events


class UnitOfWork:
    """`with UnitOfWork(db, clock) as uow: …; uow.commit()` — leaving the block without commit rolls back."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._events: list[OutboxEvent] = []
        self._conn: Connection | None = None

    def __enter__(self) -> Self:
        self._conn = self._db.engine.connect()
        self._conn.begin()
        self._events = []
        return self

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("unit of work used outside its `with` block")
        return self._conn

    def emit(self, event: OutboxEvent) -> None:
        self._events.append(event)

    def commit(self) -> None:
        append_events(self.conn, self._events, self._clock.now_us())
        self._events = []
        self.conn.commit()

    def rollback(self) -> None:
        self._events = []
        self.conn.rollback()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.conn.in_transaction():
                self.conn.rollback()
        finally:
            self.conn.close()
            self._conn = None

"""The unit of work and the transactional outbox, on both databases."""

from __future__ import annotations

import threading

import pytest

from qianbao.clock import FixedClock
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.store.database import Database
from qianbao.store.outbox import OutboxEvent, claim_unpublished, mark_published, outbox
from qianbao.store.unit_of_work import UnitOfWork
from tests.conftest import PostgresServer, unique
from tests.support.ledger import open_accounts


def _event(aggregate_id: str, kind: str = "transfer.succeeded") -> OutboxEvent:
    return OutboxEvent(
        type=kind, aggregate_type="transfer", aggregate_id=aggregate_id, payload={"id": aggregate_id}
    )


def _events_for(db: Database, aggregate_id: str) -> list[dict[str, object]]:
    with db.read() as conn:
        rows = conn.execute(
            outbox.select().where(outbox.c.aggregate_id == aggregate_id).order_by(outbox.c.seq)
        )
        return [dict(row._mapping) for row in rows]


def test_events_commit_with_the_money_movement(fresh_db: Database, clock: FixedClock) -> None:
    engine = LedgerEngine(fresh_db, clock)
    _, (a, b) = open_accounts(engine, 2, funded=1_000)
    transfer_id = unique("trf")
    with UnitOfWork(fresh_db, clock) as uow:
        [result] = engine.apply_in(uow.conn, [TransferSpec.posted(transfer_id, a, b, 300, "CNY")])
        assert result.code is ResultCode.OK
        uow.emit(_event(transfer_id))
        uow.commit()
    [row] = _events_for(fresh_db, transfer_id)
    assert row["type"] == "transfer.succeeded"
    assert row["payload"] == {"id": transfer_id}
    assert row["created_at"] == clock.now_us()
    assert row["published_at"] is None


def test_leaving_without_commit_discards_both_the_transfer_and_its_event(
    fresh_db: Database, clock: FixedClock
) -> None:
    engine = LedgerEngine(fresh_db, clock)
    _, (a, b) = open_accounts(engine, 2, funded=1_000)
    transfer_id = unique("trf")
    with pytest.raises(RuntimeError, match="boom"), UnitOfWork(fresh_db, clock) as uow:
        engine.apply_in(uow.conn, [TransferSpec.posted(transfer_id, a, b, 300, "CNY")])
        uow.emit(_event(transfer_id))
        raise RuntimeError("boom")
    assert _events_for(fresh_db, transfer_id) == []
    with fresh_db.read() as conn:
        assert (
            conn.exec_driver_sql(
                "SELECT count(*) FROM ledger_transfers WHERE id = "
                + ("%s" if fresh_db.is_postgresql else "?"),
                (transfer_id,),
            ).scalar_one()
            == 0
        )
        balance = conn.exec_driver_sql(
            "SELECT credits_posted - debits_posted FROM ledger_accounts WHERE id = "
            + ("%s" if fresh_db.is_postgresql else "?"),
            (b,),
        ).scalar_one()
    assert balance == 1_000


def test_explicit_rollback_drops_pending_events(db: Database, clock: FixedClock) -> None:
    aggregate = unique("agg")
    with UnitOfWork(db, clock) as uow:
        uow.emit(_event(aggregate))
        uow.rollback()
    assert _events_for(db, aggregate) == []


def test_unit_of_work_outside_its_block_is_an_error(db: Database, clock: FixedClock) -> None:
    uow = UnitOfWork(db, clock)
    with pytest.raises(RuntimeError):
        _ = uow.conn


def test_claim_and_mark_published(fresh_db: Database, clock: FixedClock) -> None:
    ids = [unique("agg") for _ in range(3)]
    with UnitOfWork(fresh_db, clock) as uow:
        for aggregate in ids:
            uow.emit(_event(aggregate))
        uow.commit()
    with fresh_db.write() as conn:
        claimed = claim_unpublished(conn, limit=10)
        assert [e.aggregate_id for e in claimed] == ids  # oldest first
        mark_published(conn, [claimed[0].seq], now_us=clock.now_us() + 1)
    with fresh_db.write() as conn:
        remaining = claim_unpublished(conn, limit=10)
    assert [e.aggregate_id for e in remaining] == ids[1:]


def test_two_dispatchers_never_claim_the_same_event(postgres_server: PostgresServer) -> None:
    """PostgreSQL only: SKIP LOCKED lets concurrent dispatchers share the outbox (SQLite has one writer)."""
    db = Database(postgres_server.create(template=postgres_server.migrated_template()))
    clock = FixedClock()
    with UnitOfWork(db, clock) as uow:
        for _ in range(20):
            uow.emit(_event(unique("agg")))
        uow.commit()
    first_holds = threading.Event()
    release = threading.Event()
    first: list[int] = []

    def hold_some() -> None:
        with db.write() as conn:
            first.extend(e.seq for e in claim_unpublished(conn, limit=5))
            first_holds.set()
            release.wait(10)

    holder = threading.Thread(target=hold_some)
    holder.start()
    assert first_holds.wait(10)
    try:
        with db.write() as conn:
            second = [e.seq for e in claim_unpublished(conn, limit=100)]
    finally:
        release.set()
        holder.join(10)
    assert len(first) == 5
    assert len(second) == 15
    assert not set(first) & set(second)
    db.dispose()

"""The floor server of `qianbao bench api` on PostgreSQL: each floor answers the bench's requests the way
the bench assumes (201, and one row per 201 where the floor writes), including under concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from qianbao.benchmarks.api_floor_app import GroupWriter, create_floor_app, floor_metadata, floor_writes
from qianbao.store.database import Database
from tests.conftest import PostgresServer

BODY = {"from_wallet_id": "wal_x", "to": {"wallet_id": "wal_y"}, "amount": {"currency": "CNY", "amount": 123}}


@pytest.fixture
def floor_db(postgres_server: PostgresServer) -> Iterator[Database]:
    db = Database(postgres_server.create())
    floor_metadata.create_all(db.engine)
    try:
        yield db
    finally:
        db.dispose()


def _rows(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return {str(k): int(a) for k, a in conn.execute(select(floor_writes.c.key, floor_writes.c.amount))}


@pytest.mark.parametrize("floor", ["transaction", "async", "group"])
def test_a_writing_floor_answers_201_with_one_row_per_request(floor_db: Database, floor: str) -> None:
    with TestClient(create_floor_app(floor_db.url)) as client:
        for i in range(3):
            answer = client.post(f"/floor/{floor}", json=BODY, headers={"Idempotency-Key": f"{floor}-{i}"})
            assert answer.status_code == 201
            assert answer.json()["amount"] == {"currency": "CNY", "amount": 123}
    assert _rows(floor_db) == {f"{floor}-{i}": 123 for i in range(3)}


def test_the_http_floor_writes_nothing(floor_db: Database) -> None:
    with TestClient(create_floor_app(floor_db.url)) as client:
        assert client.post("/floor/http", json=BODY, headers={"Idempotency-Key": "k"}).status_code == 201
        assert client.get("/healthz").json() == {"status": "ok"}
    assert _rows(floor_db) == {}


def test_group_commit_writes_every_concurrent_request_in_shared_transactions(floor_db: Database) -> None:
    with TestClient(create_floor_app(floor_db.url)) as client:

        def post(i: int) -> int:
            return client.post("/floor/group", json=BODY, headers={"Idempotency-Key": f"g-{i}"}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(post, range(40)))
    assert statuses == [201] * 40
    assert sorted(_rows(floor_db)) == sorted(f"g-{i}" for i in range(40))


def _transactions(db: Database) -> int:
    """Distinct writing transactions of the rows (rows written by one transaction share its xmin)."""
    with db.read() as conn:
        return int(conn.execute(text("SELECT count(DISTINCT xmin::text) FROM floor_writes")).scalar_one())


def test_what_queued_up_while_the_writer_was_busy_is_one_transaction(floor_db: Database) -> None:
    async def scenario() -> None:
        writer = GroupWriter(floor_db, asyncio.get_running_loop())
        writes = [asyncio.ensure_future(writer.write(f"q-{i}", i)) for i in range(25)]
        await asyncio.sleep(0)  # every write is queued before the writer thread looks
        writer.start()
        await asyncio.gather(*writes)
        writer.stop()

    asyncio.run(scenario())
    assert _rows(floor_db) == {f"q-{i}": i for i in range(25)}
    assert _transactions(floor_db) == 1


def test_a_failed_group_write_fails_every_request_of_the_batch(floor_db: Database) -> None:
    with TestClient(create_floor_app(floor_db.url), raise_server_exceptions=False) as client:
        with floor_db.write() as conn:
            conn.execute(text("DROP TABLE floor_writes"))
        answer = client.post("/floor/group", json=BODY, headers={"Idempotency-Key": "lost"})
        assert answer.status_code == 500  # not a 201 for a row that was never written, and no hang


def test_a_body_without_the_payment_fields_is_refused(floor_db: Database) -> None:
    with TestClient(create_floor_app(floor_db.url)) as client:
        answer = client.post("/floor/transaction", json={"qr": "x"}, headers={"Idempotency-Key": "k"})
        assert answer.status_code == 422
    with floor_db.read() as conn:
        assert conn.execute(select(func.count()).select_from(floor_writes)).scalar_one() == 0


def test_the_floors_refuse_sqlite() -> None:
    with pytest.raises(RuntimeError, match="PostgreSQL"):
        create_floor_app("sqlite:///:memory:")


@pytest.mark.parametrize("floor", ["transaction", "async", "group"])
def test_with_several_statements_each_request_writes_that_many_rows(floor_db: Database, floor: str) -> None:
    with TestClient(create_floor_app(floor_db.url, statements=4)) as client:
        for i in range(2):
            answer = client.post(f"/floor/{floor}", json=BODY, headers={"Idempotency-Key": f"{floor}-{i}"})
            assert answer.status_code == 201
    with floor_db.read() as conn:
        rows = conn.execute(select(floor_writes.c.key, func.count()).group_by(floor_writes.c.key)).all()
    counts = {str(key): int(count) for key, count in rows}
    assert counts == {f"{floor}-0": 4, f"{floor}-1": 4}


def test_the_threaded_floor_uses_the_servers_thread_count(
    floor_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QIANBAO_THREADS", "5")

    async def tokens() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    with TestClient(create_floor_app(floor_db.url)) as client:
        assert client.portal.call(tokens) == 5


def test_zero_statements_is_refused(floor_db: Database) -> None:
    with pytest.raises(RuntimeError, match="at least 1"):
        create_floor_app(floor_db.url, statements=0)

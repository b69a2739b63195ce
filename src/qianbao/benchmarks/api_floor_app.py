"""The floor server of `qianbao bench api`: what this machine's stack can do per request, with no payment.

The same stack as `qianbao serve` (uvicorn with uvloop and httptools, FastAPI, SQLAlchemy Core on psycopg,
the same `Database` settings), serving the bench's payment requests (same bodies, headers and
connections) with four endpoints that do less than a payment:
  - `POST /floor/http`: parse the JSON body and answer 201. The framework's ceiling for any endpoint.
  - `POST /floor/transaction`: the same, plus ONE database transaction of one INSERT, run in the thread
    pool like qianbao's sync endpoints (as many threads as `QIANBAO_THREADS` gives `qianbao serve`).
    The ceiling of any design that commits once per request.
  - `POST /floor/async`: the same one-INSERT transaction per request, but on the event loop with
    psycopg's async connections (a pool of `ASYNC_CONNECTIONS` per worker): no thread pool, no SQLAlchemy.
    The most generous version of a commit-per-request design in Python.
  - `POST /floor/group`: the same INSERT, but requests are queued and a writer thread commits whatever
    has queued up in one transaction (group commit, like the ledger's batcher). The ceiling of a design
    that shares transactions between requests.
Each row written carries the request's Idempotency-Key, so the bench can check that every 201 was a row.
With `QIANBAO_FLOOR_STATEMENTS=N` each request writes N rows, one statement each (a payment needs
several statements; the group floor then writes the batch with N multi-row statements).

Started by `qianbao bench api` as `uvicorn qianbao.benchmarks.api_floor_app:app --workers N`, with the
scratch database in `QIANBAO_FLOOR_DATABASE_URL` (the bench creates `floor_writes` there first).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
import psycopg
from fastapi import FastAPI, Header
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.engine import make_url

from qianbao.config import Settings
from qianbao.store.database import Database, normalise_url

DATABASE_ENV = "QIANBAO_FLOOR_DATABASE_URL"
STATEMENTS_ENV = "QIANBAO_FLOOR_STATEMENTS"
ASYNC_CONNECTIONS = 16  # per worker: the bench's 64 connections over 2 workers, two requests each
GROUP_MAX = 512  # most requests in one group-commit transaction

floor_metadata = MetaData()
floor_writes = Table(
    "floor_writes",
    floor_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False),
    Column("amount", Integer, nullable=False),
)


class FloorAmount(BaseModel):
    currency: str
    amount: int


class FloorPayment(BaseModel):
    """The fields the bench's P2P and QR bodies share (the rest is accepted and ignored)."""

    from_wallet_id: str
    amount: FloorAmount


@dataclass
class _Queued:
    key: str
    amount: int
    done: asyncio.Future[None]


class GroupWriter:
    """A thread that writes everything queued since its last commit in one transaction."""

    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop, statements: int = 1) -> None:
        self._db, self._loop, self._statements = db, loop, statements
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="floor-group-writer", daemon=True)

    def start(self) -> GroupWriter:
        self._thread.start()
        return self

    async def write(self, key: str, amount: int) -> None:
        item = _Queued(key, amount, self._loop.create_future())
        self._queue.put(item)
        await item.done

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < GROUP_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            error: BaseException | None = None
            try:
                rows = [{"key": b.key, "amount": b.amount} for b in batch]
                with self._db.write() as conn:
                    for _ in range(self._statements):
                        conn.execute(insert(floor_writes), rows)
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                error = exc
            for item in batch:
                self._loop.call_soon_threadsafe(_settle, item.done, error)


class AsyncConnections:
    """A fixed set of psycopg async connections handed out in turn (opened on first use)."""

    def __init__(self, db: Database, size: int, statements: int = 1) -> None:
        self._dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._size, self._statements = size, statements
        self._free: asyncio.Queue[psycopg.AsyncConnection[Any]] | None = None
        self._opening = asyncio.Lock()

    async def _queue(self) -> asyncio.Queue[psycopg.AsyncConnection[Any]]:
        if self._free is not None:
            return self._free
        async with self._opening:
            if self._free is None:
                free: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
                for _ in range(self._size):
                    free.put_nowait(await psycopg.AsyncConnection.connect(self._dsn))
                self._free = free
        return self._free

    async def insert(self, key: str, amount: int) -> None:
        free = await self._queue()
        conn = await free.get()
        try:
            async with conn.transaction():
                for _ in range(self._statements):
                    await conn.execute(_ASYNC_INSERT, (key, amount))
        finally:
            free.put_nowait(conn)

    async def close(self) -> None:
        if self._free is not None:
            while not self._free.empty():
                await self._free.get_nowait().close()


_ASYNC_INSERT = "INSERT INTO floor_writes (key, amount) VALUES (%s, %s)"


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def create_floor_app(database_url: str | None = None, statements: int | None = None) -> FastAPI:
    url = database_url or os.environ.get(DATABASE_ENV)
    if statements is None:
        statements = int(os.environ.get(STATEMENTS_ENV) or 1)
    if statements < 1:
        raise RuntimeError(f"{STATEMENTS_ENV} must be at least 1")
    if not url:
        raise RuntimeError(f"set {DATABASE_ENV} to the bench's scratch database")
    if make_url(normalise_url(url)).get_backend_name() != "postgresql":
        raise RuntimeError("the floors run on PostgreSQL")
    db = Database(url)
    state: dict[str, GroupWriter] = {}
    connections = AsyncConnections(db, ASYNC_CONNECTIONS, statements)

    threads = Settings().threads

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The same thread pool as `qianbao serve` (QIANBAO_THREADS), so the threaded floor compares like
        # with like.
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        state["writer"] = GroupWriter(db, asyncio.get_running_loop(), statements).start()
        try:
            yield
        finally:
            state["writer"].stop()
            await connections.close()
            db.dispose()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/floor/http", status_code=201)
    async def http_only(body: FloorPayment) -> dict[str, Any]:
        return _answer(body)

    @app.post("/floor/transaction", status_code=201)
    def one_transaction(
        body: FloorPayment, key: Annotated[str, Header(alias="Idempotency-Key")]
    ) -> dict[str, Any]:
        with db.write() as conn:
            for _ in range(statements):
                conn.execute(insert(floor_writes), {"key": key, "amount": body.amount.amount})
        return _answer(body)

    @app.post("/floor/async", status_code=201)
    async def async_transaction(
        body: FloorPayment, key: Annotated[str, Header(alias="Idempotency-Key")]
    ) -> dict[str, Any]:
        await connections.insert(key, body.amount.amount)
        return _answer(body)

    @app.post("/floor/group", status_code=201)
    async def group_commit(
        body: FloorPayment, key: Annotated[str, Header(alias="Idempotency-Key")]
    ) -> dict[str, Any]:
        await state["writer"].write(key, body.amount.amount)
        return _answer(body)

    return app


def _answer(body: FloorPayment) -> dict[str, Any]:
    return {"status": "succeeded", "from_wallet_id": body.from_wallet_id, "amount": body.amount.model_dump()}


def app() -> FastAPI:
    """uvicorn's factory (`--factory`): each worker process builds its own app and connection pool."""
    return create_floor_app()

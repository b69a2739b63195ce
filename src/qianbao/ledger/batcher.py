"""Group commit: many concurrent callers' transfers applied in one database transaction.

Callers (threads or asyncio tasks) put requests on a queue; one writer thread takes everything waiting,
plus whatever arrives within a short window, and applies it as one batch through `LedgerEngine`. Under
load a batch holds thousands of transfers, so the per-transaction cost (locks, fsync) is shared; when idle
a lone request waits at most the window. Each caller gets exactly its own results, in order.

This is a throughput device only: correctness comes from the database (row locks, UNIQUE keys), so any
number of processes may each run their own batcher against one database.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import TransferResult, TransferSpec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    specs: Sequence[TransferSpec]
    future: Future[list[TransferResult]] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    async_future: asyncio.Future[list[TransferResult]] | None = None


_STOP = _Request(specs=())


class BatcherClosed(RuntimeError):
    pass


class TransferBatcher:
    def __init__(self, engine: LedgerEngine, *, window_ms: float = 1.0, max_batch: int = 4096) -> None:
        self.engine = engine
        self.window = window_ms / 1000
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        self.transfers = 0

    def start(self) -> TransferBatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ledger-batcher", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> TransferBatcher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- submitting -----------------------------------------------------------------------------------

    def submit(self, specs: Sequence[TransferSpec]) -> Future[list[TransferResult]]:
        """Queue one caller's request group (a linked chain never extends past its end)."""
        self._check_open()
        future: Future[list[TransferResult]] = Future()
        self._queue.put(_Request(specs=specs, future=future))
        return future

    def create_transfers(self, specs: Sequence[TransferSpec], timeout: float | None = None) -> list[TransferResult]:
        return self.submit(specs).result(timeout)

    async def create_transfers_async(self, specs: Sequence[TransferSpec]) -> list[TransferResult]:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[TransferResult]] = loop.create_future()
        self._queue.put(_Request(specs=specs, loop=loop, async_future=future))
        return await future

    def _check_open(self) -> None:
        if self._closed:
            raise BatcherClosed("the ledger batcher is shut down")
        if self._thread is None:
            raise BatcherClosed("the ledger batcher was not started")

    # -- the writer thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            size = len(first.specs)
            deadline = time.monotonic() + self.window
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                size += len(item.specs)
            self._apply(batch)

    def _apply(self, batch: list[_Request]) -> None:
        specs: list[TransferSpec] = []
        ends: list[int] = []
        for request in batch:
            specs.extend(request.specs)
            ends.append(len(specs) - 1)
        try:
            results = self.engine.create_transfers(specs, group_ends=ends) if specs else []
        except Exception as exc:  # noqa: BLE001 - every waiting caller must hear about the failure
            log.exception("ledger batch of %d transfers failed", len(specs))
            for request in batch:
                _fail(request, exc)
            return
        self.batches += 1
        self.transfers += len(specs)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[TransferResult]], list[TransferResult]]]] = {}
        start = 0
        for request in batch:
            mine = results[start : start + len(request.specs)]
            start += len(request.specs)
            if request.future is not None:
                request.future.set_result(mine)
            elif request.loop is not None and request.async_future is not None:
                by_loop.setdefault(request.loop, []).append((request.async_future, mine))
        # One wake-up per event loop per batch, not one per caller.
        for loop, pairs in by_loop.items():
            loop.call_soon_threadsafe(_resolve_all, pairs)


def _resolve_all(pairs: list[tuple[asyncio.Future[list[TransferResult]], list[TransferResult]]]) -> None:
    for future, results in pairs:
        if not future.done():
            future.set_result(results)


def _fail(request: _Request, exc: Exception) -> None:
    if request.future is not None:
        request.future.set_exception(exc)
    elif request.loop is not None and request.async_future is not None:
        fut = request.async_future
        request.loop.call_soon_threadsafe(lambda: None if fut.done() else fut.set_exception(exc))

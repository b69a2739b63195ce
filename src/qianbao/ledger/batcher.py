"""Group commit: many concurrent callers' transfers applied in one database transaction.

Callers (threads or asyncio tasks) put requests on a queue; one writer thread takes everything waiting,
plus whatever arrives within a short window, and applies it as one batch through `LedgerEngine`. Under
load a batch holds thousands of transfers, so the per-transaction cost (locks, fsync) is shared; when idle
a lone request waits at most the window. Each caller gets exactly its own results, in order.

Two threads share the work: one collects the next batch while the other commits the current one.

This is a throughput device only: correctness comes from the database (row locks, UNIQUE keys), so any
number of processes may each run their own batcher against one database.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
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


@dataclass(slots=True)
class _Batch:
    requests: list[_Request]
    specs: list[TransferSpec]
    group_ends: frozenset[int]


class TransferBatcher:
    def __init__(self, engine: LedgerEngine, *, window_ms: float = 1.0, max_batch: int = 4096) -> None:
        self.engine = engine
        self.window = window_ms / 1000
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        # One collected batch waits for the writer: it keeps the writer busy, and a deeper queue would only
        # split the same concurrent requests into smaller batches.
        self._prepared: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._closed = False
        self._gate = threading.Lock()  # makes "check open, then enqueue" atomic with close()
        self.batches = 0
        self.transfers = 0

    def start(self) -> TransferBatcher:
        if self._thread is None:
            self._writer = threading.Thread(target=self._write_loop, name="ledger-writer", daemon=True)
            self._writer.start()
            self._thread = threading.Thread(target=self._run, name="ledger-batcher", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the threads."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._writer is not None:
            self._writer.join(timeout)

    def __enter__(self) -> TransferBatcher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- submitting -----------------------------------------------------------------------------------

    def submit(self, specs: Sequence[TransferSpec]) -> Future[list[TransferResult]]:
        """Queue one caller's request group (a linked chain never extends past its end)."""
        future: Future[list[TransferResult]] = Future()
        specs = list(specs)  # the writer needs its length; an iterator would break the batch
        with self._gate:  # nothing may be queued behind the stop marker
            self._check_open()
            self._queue.put(_Request(specs=specs, future=future))
        return future

    def create_transfers(
        self, specs: Sequence[TransferSpec], timeout: float | None = None
    ) -> list[TransferResult]:
        return self.submit(specs).result(timeout)

    async def create_transfers_async(self, specs: Sequence[TransferSpec]) -> list[TransferResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[TransferResult]] = loop.create_future()
        specs = list(specs)
        with self._gate:
            self._check_open()
            self._queue.put(_Request(specs=specs, loop=loop, async_future=future))
        return await future

    def _check_open(self) -> None:
        if self._closed:
            raise BatcherClosed("the ledger batcher is shut down")
        if self._thread is None:
            raise BatcherClosed("the ledger batcher was not started")

    # -- the collecting thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._collect()
        except Exception as exc:  # noqa: BLE001 - logged; the batcher then refuses work instead of hanging
            # The collector must never die silently: refuse new work and fail everyone still waiting.
            log.exception("the ledger batcher's collecting thread failed")
            with self._gate:
                self._closed = True
            self._fail_queued(exc)
        finally:
            self._prepared.put(None)

    def _fail_queued(self, exc: Exception) -> None:
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not _STOP:
                _fail(request, exc)

    def _collect(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            requests = [first]
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
                requests.append(item)
                size += len(item.specs)
            try:
                batch = self._prepare(requests)
            except Exception as exc:
                for request in requests:  # taken off the queue: they must hear about it here
                    _fail(request, exc)
                raise
            self._prepared.put(batch)

    def _prepare(self, requests: list[_Request]) -> _Batch:
        specs: list[TransferSpec] = []
        ends: list[int] = []
        taken = []
        for request in requests:
            # A caller that cancelled before its batch formed is dropped; from here on it cannot cancel,
            # since its transfers may be committed.
            if request.future is not None and not request.future.set_running_or_notify_cancel():
                continue
            taken.append(request)
            specs.extend(request.specs)
            ends.append(len(specs) - 1)
        return _Batch(taken, specs, frozenset(ends))

    # -- the writer thread ----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            batch = self._prepared.get()
            if batch is None:
                return
            self._apply(batch)

    def _apply(self, batch: _Batch) -> None:
        try:
            results = self._commit(batch) if batch.specs else []
        except Exception as exc:  # noqa: BLE001 - every waiting caller must hear about the failure
            log.exception("ledger batch of %d transfers failed", len(batch.specs))
            for request in batch.requests:
                _fail(request, exc)
            return
        self.batches += 1
        self.transfers += len(batch.specs)
        try:
            self._deliver(batch, results)
        except Exception:  # noqa: BLE001 - delivering to one caller must never stop the writer
            log.exception("delivering ledger results failed")

    def _deliver(self, batch: _Batch, results: list[TransferResult]) -> None:
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[TransferResult]], list[TransferResult]]]
        ] = {}
        start = 0
        for request in batch.requests:
            mine = results[start : start + len(request.specs)]
            start += len(request.specs)
            if request.future is not None:
                request.future.set_result(mine)
            elif request.loop is not None and request.async_future is not None:
                by_loop.setdefault(request.loop, []).append((request.async_future, mine))
        # One wake-up per event loop per batch, not one per caller.
        for loop, pairs in by_loop.items():
            _call_in(loop, _resolve_all, pairs)

    def _commit(self, batch: _Batch) -> list[TransferResult]:
        return self.engine.create_transfers(batch.specs, group_ends=batch.group_ends)


def _resolve_all(pairs: list[tuple[asyncio.Future[list[TransferResult]], list[TransferResult]]]) -> None:
    for future, results in pairs:
        if not future.done():
            future.set_result(results)


def _fail(request: _Request, exc: Exception) -> None:
    if request.future is not None:
        if not request.future.done():
            request.future.set_exception(exc)
    elif request.loop is not None and request.async_future is not None:
        fut = request.async_future
        _call_in(request.loop, lambda: None if fut.done() else fut.set_exception(exc))


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> None:
    """Run `callback` on `loop`; a loop that has closed belongs to a caller that left, so skip it."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        log.debug("a caller's event loop closed before its ledger results arrived")

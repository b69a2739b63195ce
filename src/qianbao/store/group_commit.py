"""Group commit with no thread of its own: the callers take turns writing each other's batches.

A caller queues its item and, if nobody is writing, becomes the writer: it takes everything queued
(up to `max_batch`), runs `process` over it (one database transaction, by the processor's contract)
and hands every caller in the batch its result. While a batch is in flight the next callers queue;
when it commits, the writer lets go and wakes the oldest caller still waiting, who writes the next
batch at once. So batches form from what arrived while the previous one was committing, never on a
timer: a lone request is a batch of one and waits for nothing, and under load the per-transaction
cost is shared by everyone who arrived meanwhile.

An asyncio caller (`run_async`: an `async` route) waits without holding a thread, so all the
requests in flight, not only as many as the thread pool has threads, can join a batch; since it cannot
take its turn, a writer thread is started for it when nobody is writing, and it stops when the queue
is empty. Thread-pool callers and asyncio callers share the queue and the batches.

This is a throughput device only. Correctness comes from the database (row locks, UNIQUE keys,
conditional writes): any number of processes, each with its own committer, may write to one database.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")

# What a processor returns for each item, in order: its result, or the exception to raise for it.
Processor = Callable[[Sequence[I]], Sequence["R | BaseException"]]


@dataclass(eq=False, slots=True)
class _Ticket(Generic[I, R]):
    item: I
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    result: R | None = None
    error: BaseException | None = None
    # An asyncio caller: it holds no thread while it waits, so a writer thread writes its batch.
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[R] | None = None


class GroupCommitter(Generic[I, R]):
    def __init__(self, process: Processor[I, R], *, max_batch: int = 256) -> None:
        self._process = process
        self.max_batch = max_batch
        self._queue: deque[_Ticket[I, R]] = deque()
        self._guard = threading.Lock()  # the queue
        self._writing = threading.Lock()  # held by the caller writing a batch
        self._draining = False  # a writer thread is writing for asyncio callers
        self.batches = 0
        self.items = 0

    async def run_async(self, item: I) -> R:
        """`run` for an asyncio caller: it waits without holding a thread, so every request in flight
        can join the next batch (a thread-pool caller holds its thread until its batch commits). A
        writer thread is started when asyncio callers are queued and nobody is writing for them."""
        loop = asyncio.get_running_loop()
        ticket: _Ticket[I, R] = _Ticket(item, loop=loop, future=loop.create_future())
        with self._guard:
            self._queue.append(ticket)
            start = not self._draining
            self._draining = True
        if start:
            threading.Thread(target=self._drain, name="payment-writer", daemon=True).start()
        assert ticket.future is not None  # noqa: S101 - set above
        return await ticket.future

    def _drain(self) -> None:
        """Write batches until the queue is empty, then stop (the next asyncio caller starts another)."""
        while True:
            with self._writing:
                self._write_one_batch()
            with self._guard:
                if not self._queue:
                    self._draining = False
                    return

    def run(self, item: I) -> R:
        """Queue `item`, wait for its batch to commit (writing it, if nobody else is), return its result
        or raise its error."""
        ticket: _Ticket[I, R] = _Ticket(item)
        with self._guard:
            self._queue.append(ticket)
        while not ticket.done:
            if self._writing.acquire(blocking=False):
                try:
                    # Nobody else writes now, so a ticket not done is still queued: take the batch.
                    if not ticket.done:
                        self._write_one_batch()
                finally:
                    self._writing.release()
                # Released first, then the queue looked at: whoever queued meanwhile either found the
                # lock free or is woken here, so nobody waits with nobody writing.
                self._wake_oldest()
            else:
                ticket.wake.wait()
                ticket.wake.clear()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value] # None only when R admits it

    def _write_one_batch(self) -> None:
        with self._guard:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
        if not batch:
            return
        results: Sequence[R | BaseException]
        try:
            results = self._process([t.item for t in batch])
            if len(results) != len(batch):
                raise RuntimeError("a batch processor must answer every item")
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch must hear of it
            results = [exc] * len(batch)
        self.batches += 1
        self.items += len(batch)
        for ticket, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                ticket.error = result
            else:
                ticket.result = result
            ticket.done = True
            ticket.wake.set()
            if ticket.loop is not None:
                _settle_in(ticket)

    def _wake_oldest(self) -> None:
        with self._guard:
            oldest = self._queue[0] if self._queue else None
            start = oldest is not None and oldest.loop is not None and not self._draining
            if start:
                self._draining = True
        if start:  # an asyncio caller has no thread to take its turn: give it a writer
            threading.Thread(target=self._drain, name="payment-writer", daemon=True).start()
        elif oldest is not None:
            oldest.wake.set()


def _settle_in(ticket: _Ticket[Any, Any]) -> None:
    """Hand an asyncio caller its outcome on its own event loop (a closed loop: the caller left)."""
    future, loop = ticket.future, ticket.loop
    assert future is not None and loop is not None  # noqa: S101 - asyncio tickets have both

    def settle() -> None:
        if future.done():
            return
        if ticket.error is not None:
            future.set_exception(ticket.error)
        else:
            future.set_result(ticket.result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass

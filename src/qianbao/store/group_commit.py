"""Group commit with no thread of its own: the callers take turns writing each other's batches.

A caller queues its item and, if nobody is writing, becomes the writer: it takes everything queued
(up to `max_batch`), runs `process` over it (one database transaction, by the processor's contract)
and hands every caller in the batch its result. While a batch is in flight the next callers queue;
when it commits, the writer lets go and wakes the oldest caller still waiting, who writes the next
batch at once. So batches form from what arrived while the previous one was committing, never on a
timer: a lone request is a batch of one and waits for nothing, and under load the per-transaction
cost is shared by everyone who arrived meanwhile.

This is a throughput device only. Correctness comes from the database (row locks, UNIQUE keys,
conditional writes): any number of processes, each with its own committer, may write to one database.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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


class GroupCommitter(Generic[I, R]):
    def __init__(self, process: Processor[I, R], *, max_batch: int = 256) -> None:
        self._process = process
        self.max_batch = max_batch
        self._queue: deque[_Ticket[I, R]] = deque()
        self._guard = threading.Lock()  # the queue
        self._writing = threading.Lock()  # held by the caller writing a batch
        self.batches = 0
        self.items = 0

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

    def _wake_oldest(self) -> None:
        with self._guard:
            oldest = self._queue[0] if self._queue else None
        if oldest is not None:
            oldest.wake.set()

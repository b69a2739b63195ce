"""The group committer: callers take turns writing each other's batches (store/group_commit.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from qianbao.store.group_commit import GroupCommitter


def test_a_lone_call_is_a_batch_of_one_written_by_its_caller() -> None:
    writers: list[str] = []

    def process(items: Sequence[int]) -> list[int | BaseException]:
        writers.append(threading.current_thread().name)
        return [i * 2 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(process)
    assert committer.run(21) == 42
    assert writers == [threading.current_thread().name]
    assert (committer.batches, committer.items) == (1, 1)


def test_callers_arriving_while_a_batch_is_in_flight_form_the_next_batch() -> None:
    in_flight = threading.Event()
    release = threading.Event()
    batches: list[list[int]] = []

    def process(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        if len(batches) == 1:
            in_flight.set()
            assert release.wait(10)
        return [i + 100 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(process)
    results: dict[int, int] = {}

    def call(i: int) -> None:
        results[i] = committer.run(i)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert in_flight.wait(10)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, 21)]
    for thread in others:
        thread.start()
    while committer._queue.__len__() < 20:  # every other caller is queued behind the batch in flight
        threading.Event().wait(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert results == {i: i + 100 for i in range(21)}  # each caller gets its own result
    assert batches[0] == [0]
    assert sorted(batches[1]) == list(range(1, 21)) and len(batches) == 2  # one batch for all who waited


def test_an_item_answered_with_an_error_raises_for_its_caller_only() -> None:
    def process(items: Sequence[int]) -> list[int | BaseException]:
        return [ValueError(f"odd {i}") if i % 2 else i for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(process)
    assert committer.run(2) == 2
    with pytest.raises(ValueError, match="odd 3"):
        committer.run(3)


def test_a_failed_batch_fails_every_caller_of_it_and_the_next_batch_runs() -> None:
    calls = 0

    def process(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the database went away")
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(process)
    with pytest.raises(RuntimeError, match="went away"):
        committer.run(1)
    assert committer.run(2) == 2


def test_a_processor_that_answers_too_few_items_fails_the_batch() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(lambda _items: [])
    with pytest.raises(RuntimeError, match="answer every item"):
        committer.run(1)


def test_batches_never_exceed_the_cap_and_nobody_is_left_waiting() -> None:
    sizes: list[int] = []
    gate = threading.Lock()

    def process(items: Sequence[int]) -> list[int | BaseException]:
        with gate:
            sizes.append(len(items))
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(process, max_batch=3)
    barrier = threading.Barrier(40)
    results: list[int] = []

    def call(i: int) -> None:
        barrier.wait()
        results.append(committer.run(i))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == list(range(40))
    assert max(sizes) <= 3 and sum(sizes) == 40


def test_asyncio_callers_wait_without_threads_and_share_batches_with_thread_callers() -> None:
    """Forty coroutines on one event loop and two threads: every caller gets its own result, and the
    coroutines' items are written in few batches by writer threads (they hold none themselves)."""
    sizes: list[int] = []
    writers: set[str] = set()

    def process(items: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(items))
        writers.add(threading.current_thread().name)
        threading.Event().wait(0.002)  # a commit takes a while: callers pile up meanwhile
        return [ValueError("seven") if i == 7 else i * 10 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(process)

    async def callers() -> list[int | str]:
        async def one(i: int) -> int | str:
            try:
                return await committer.run_async(i)
            except ValueError as exc:
                return str(exc)

        return list(await asyncio.gather(*(one(i) for i in range(40))))

    threaded: dict[int, int] = {}
    threads = [
        threading.Thread(target=lambda i=i: threaded.__setitem__(i, committer.run(i))) for i in (100, 101)
    ]
    for thread in threads:
        thread.start()
    got = asyncio.run(callers())
    for thread in threads:
        thread.join(10)
    assert got == [("seven" if i == 7 else i * 10) for i in range(40)]
    assert threaded == {100: 1000, 101: 1010}
    assert sum(sizes) == 42 and len(sizes) < 42  # batched
    # The event loop's thread never writes: the coroutines' batches are written by the writer thread or
    # by a thread caller taking its turn (which of them depends on timing).
    assert threading.main_thread().name not in writers
    assert writers <= {"payment-writer", *(t.name for t in threads)}


def test_an_asyncio_caller_alone_is_written_at_once() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(lambda items: [i + 1 for i in items])
    assert asyncio.run(committer.run_async(1)) == 2
    assert asyncio.run(committer.run_async(2)) == 3  # a new writer after the last one stopped


def test_coroutines_alone_are_written_by_the_writer_thread_never_by_the_event_loop() -> None:
    writers: set[str] = set()

    def process(items: Sequence[int]) -> list[int | BaseException]:
        writers.add(threading.current_thread().name)
        threading.Event().wait(0.001)
        return [i for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(process)

    async def callers() -> list[int]:
        return list(await asyncio.gather(*(committer.run_async(i) for i in range(20))))

    assert asyncio.run(callers()) == list(range(20))
    assert writers == {"payment-writer"}

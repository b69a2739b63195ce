"""`TransferBatcher` (group commit) on SQLite and PostgreSQL.

Concurrent callers, threads or asyncio tasks, must each get exactly their own results in order. Requests
really share batches. A chain never crosses from one caller's request into another's. A failure reaches
every caller waiting on it without killing the batcher. Closing drains the queue and refuses new work.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import psycopg
import pytest

from qianbao.ledger.batcher import BatcherClosed, TransferBatcher
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import ResultCode, TransferResult, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.verify import verify_ledger
from qianbao.store.database import Database
from tests.conftest import unique
from tests.support.ledger import open_accounts

R = ResultCode
WAIT = 30  # seconds; a generous bound so a hang fails the test instead of blocking the run


@pytest.fixture
def make_batcher(engine: LedgerEngine) -> Iterator[Callable[..., TransferBatcher]]:
    made: list[TransferBatcher] = []

    def make(other: LedgerEngine | None = None, **options: object) -> TransferBatcher:
        batcher = TransferBatcher(other or engine, **options).start()  # type: ignore[arg-type]
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close(timeout=2)


def codes(results: list[TransferResult]) -> list[ResultCode]:
    return [r.code for r in results]


def totals(reader: LedgerReader, account_id: str) -> tuple[int, int, int, int]:
    a = reader.get_account(account_id)
    assert a is not None
    return (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)


def client_requests(wallet: str, merchant: str, client: int, rounds: int) -> list[list[TransferSpec]]:
    """A client's sequence of requests with results known in advance: only this client spends from
    `wallet` (funded with 1,000), so nothing another client does can change them."""
    requests = []
    for i in range(rounds):
        shape = (client + i) % 4
        pay = TransferSpec.posted(unique(f"c{client}r{i}"), wallet, merchant, 10, "CNY")
        if shape == 0:
            requests.append([pay])
        elif shape == 1:  # a refused transfer between two good ones
            too_much = TransferSpec.posted(unique("big"), wallet, merchant, 10_000, "CNY")
            requests.append([pay, too_much, TransferSpec.posted(unique("p"), wallet, merchant, 1, "CNY")])
        elif shape == 2:  # hold then post part of it
            hold = TransferSpec.pending(unique("h"), wallet, merchant, 20, "CNY", linked=True)
            requests.append([hold, TransferSpec.post(unique("ph"), hold.id, 5)])
        else:  # a replay of this request's first transfer, and a zero amount
            requests.append([pay, pay, TransferSpec.posted(unique("z"), wallet, merchant, 0, "CNY")])
    return requests


EXPECTED_BY_SHAPE = {
    0: [R.OK],
    1: [R.OK, R.EXCEEDS_CREDITS, R.OK],
    2: [R.OK, R.OK],
    3: [R.OK, R.EXISTS, R.AMOUNT_MUST_BE_POSITIVE],
}
SPENT_BY_SHAPE = {0: 10, 1: 11, 2: 5, 3: 10}


def check_client(
    results: list[list[TransferResult]], requests: list[list[TransferSpec]], client: int
) -> None:
    assert len(results) == len(requests)
    for i, (got, sent) in enumerate(zip(results, requests, strict=True)):
        assert [r.id for r in got] == [s.id for s in sent]
        assert codes(got) == EXPECTED_BY_SHAPE[(client + i) % 4]


def spent(client: int, rounds: int) -> int:
    return sum(SPENT_BY_SHAPE[(client + i) % 4] for i in range(rounds))


# -- many callers -----------------------------------------------------------------------------------


def test_threads_each_get_exactly_their_own_results_in_order(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    clients, rounds = 16, 6
    _, wallets = open_accounts(engine, clients, funded=1_000)
    _, (merchant,) = open_accounts(engine, 1)
    batcher = make_batcher(window_ms=2)
    plans = [client_requests(wallets[c], merchant, c, rounds) for c in range(clients)]
    results: list[list[list[TransferResult]]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start = threading.Barrier(clients)

    def client(c: int) -> None:
        try:
            start.wait(WAIT)
            for request in plans[c]:
                results[c].append(batcher.create_transfers(request, timeout=WAIT))
        except BaseException as exc:  # reported below, with the client's number
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    for c in range(clients):
        check_client(results[c], plans[c], c)
    reader = LedgerReader(engine.db)
    for c in range(clients):
        assert totals(reader, wallets[c]) == (spent(c, rounds), 1_000, 0, 0)
    assert totals(reader, merchant) == (0, sum(spent(c, rounds) for c in range(clients)), 0, 0)
    assert batcher.transfers == sum(len(r) for plan in plans for r in plan)
    assert verify_ledger(engine.db).ok


def test_asyncio_clients_each_get_exactly_their_own_results_in_order(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    clients, rounds = 30, 4
    _, wallets = open_accounts(engine, clients, funded=1_000)
    _, (merchant,) = open_accounts(engine, 1)
    batcher = make_batcher(window_ms=2)
    plans = [client_requests(wallets[c], merchant, c, rounds) for c in range(clients)]

    async def client(c: int) -> list[list[TransferResult]]:
        return [await batcher.create_transfers_async(request) for request in plans[c]]

    async def main() -> list[list[list[TransferResult]]]:
        return await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(clients))), WAIT)

    results = asyncio.run(main())
    for c in range(clients):
        check_client(results[c], plans[c], c)
    reader = LedgerReader(engine.db)
    assert totals(reader, merchant) == (0, sum(spent(c, rounds) for c in range(clients)), 0, 0)
    assert verify_ledger(engine.db).ok


def test_threads_and_asyncio_tasks_share_batches(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    submitters = 50
    funding, (merchant,) = open_accounts(engine, 1)
    batcher = make_batcher(window_ms=20)
    specs = [TransferSpec.posted(unique("g"), funding, merchant, 1, "CNY") for _ in range(2 * submitters)]
    start = threading.Barrier(submitters + 1)
    thread_results: dict[int, list[TransferResult]] = {}

    def submit(i: int) -> None:
        start.wait(WAIT)
        thread_results[i] = batcher.create_transfers([specs[i]], timeout=WAIT)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(submitters)]
    for t in threads:
        t.start()
    start.wait(WAIT)
    for t in threads:
        t.join(WAIT)
    assert {i: codes(r) for i, r in thread_results.items()} == {i: [R.OK] for i in range(submitters)}
    assert [r[0].id for _, r in sorted(thread_results.items())] == [s.id for s in specs[:submitters]]
    batches_for_threads = batcher.batches
    assert 1 <= batches_for_threads < submitters

    async def main() -> list[list[TransferResult]]:
        tasks = [batcher.create_transfers_async([s]) for s in specs[submitters:]]
        return await asyncio.wait_for(asyncio.gather(*tasks), WAIT)

    async_results = asyncio.run(main())
    assert [r[0].id for r in async_results] == [s.id for s in specs[submitters:]]
    assert all(codes(r) == [R.OK] for r in async_results)
    assert 1 <= batcher.batches - batches_for_threads < submitters
    assert batcher.transfers == 2 * submitters
    assert totals(LedgerReader(engine.db), merchant) == (0, 2 * submitters, 0, 0)


# -- chains and batches -----------------------------------------------------------------------------


def test_a_chain_stays_inside_its_callers_request(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    funding, (alice, bob, carol) = open_accounts(engine, 3, funded=100)
    batcher = make_batcher(window_ms=400)  # long enough that all five requests share one batch

    def pay(payer: str, amount: int, linked: bool = False) -> TransferSpec:
        return TransferSpec.posted(unique("l"), payer, carol, amount, "CNY", linked=linked)

    requests = [
        [pay(alice, 10, linked=True), pay(alice, 10, linked=True)],  # ends linked: open chain
        [pay(bob, 7)],  # would close the chain above if chains crossed requests
        [pay(bob, 5, linked=True), pay(bob, 6)],  # a chain of its own
        [pay(alice, 20, linked=True), pay(alice, 500)],  # the second overdraws: all-or-none
        [TransferSpec.posted(unique("f"), funding, alice, 1, "CNY")],
    ]
    futures = [batcher.submit(r) for r in requests]
    results = [f.result(WAIT) for f in futures]
    assert batcher.batches == 1
    assert [codes(r) for r in results] == [
        [R.LINKED_EVENT_CHAIN_OPEN, R.LINKED_EVENT_CHAIN_OPEN],
        [R.OK],
        [R.OK, R.OK],
        [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS],
        [R.OK],
    ]
    for got, sent in zip(results, requests, strict=True):
        assert [r.id for r in got] == [s.id for s in sent]
    reader = LedgerReader(engine.db)
    assert totals(reader, alice) == (0, 101, 0, 0)
    assert totals(reader, bob) == (18, 100, 0, 0)
    assert totals(reader, carol) == (0, 118, 0, 0)
    for request, result in zip(requests, results, strict=True):
        for spec, r in zip(request, result, strict=True):
            assert (reader.get_transfer(spec.id) is not None) == (r.code is R.OK)
    assert verify_ledger(engine.db).ok


def test_requests_queued_in_order_are_decided_in_order(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    """A caller may queue a hold and its capture without waiting in between; batches keep queue order."""
    funding, (alice, bob) = open_accounts(engine, 2, funded=100)
    batcher = make_batcher(window_ms=0.5, max_batch=1)  # every request is a batch of its own
    futures: list[Future[list[TransferResult]]] = []
    for i in range(20):
        hold = TransferSpec.pending(unique(f"q{i}h"), alice, bob, 5, "CNY")
        futures.append(batcher.submit([hold]))
        futures.append(batcher.submit([TransferSpec.post(unique(f"q{i}p"), hold.id, 2)]))
    assert all(codes(f.result(WAIT)) == [R.OK] for f in futures)
    assert totals(LedgerReader(engine.db), alice) == (40, 100, 0, 0)


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["database", "other"])
def test_an_engine_failure_reaches_every_waiting_caller_and_the_batcher_recovers(
    make_batcher: Callable[..., TransferBatcher],
    engine: LedgerEngine,
    backend: str,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    funding, (alice, bob) = open_accounts(engine, 2, funded=100)
    batcher = make_batcher(window_ms=300)
    repo = engine.repo
    real_insert = repo.insert_transfers
    broken = threading.Event()
    broken.set()
    # Raised by the insert on every path: a driver error not worth retrying (the disk or server is gone),
    # or any other exception (a bug).
    failure: Exception
    if kind == "other":
        failure = RuntimeError("unexpected")
    elif backend == "sqlite":
        failure = sqlite3.OperationalError("disk I/O error")
    else:
        failure = psycopg.OperationalError("server closed the connection unexpectedly")

    def insert_transfers(conn: object, transfers: object) -> None:
        if broken.is_set():
            raise failure
        real_insert(conn, transfers)  # type: ignore[arg-type]

    monkeypatch.setattr(repo, "insert_transfers", insert_transfers)
    first = [TransferSpec.posted(unique("x"), alice, bob, 30, "CNY") for _ in range(3)]
    async_spec = TransferSpec.posted(unique("y"), bob, alice, 10, "CNY")

    async def waiters() -> tuple[list[Future[list[TransferResult]]], BaseException | None]:
        futures = [batcher.submit([spec]) for spec in first]
        try:
            await asyncio.wait_for(batcher.create_transfers_async([async_spec]), WAIT)
        except Exception as exc:  # the failure under test
            return futures, exc
        return futures, None

    futures, async_error = asyncio.run(waiters())
    assert batcher.batches == 0  # all four were in the failed batch
    assert async_error is failure
    assert all(future.exception(WAIT) is failure for future in futures)

    broken.clear()
    reader = LedgerReader(engine.db)
    assert totals(reader, alice) == (0, 100, 0, 0)  # the failed batch left no trace
    # The same requests sent again are new (nothing was stored), and later requests work.
    again = [batcher.submit([spec]) for spec in [*first, async_spec]]
    assert [codes(f.result(WAIT)) for f in again] == [[R.OK]] * 4
    later = batcher.create_transfers([TransferSpec.posted(unique("z"), bob, alice, 10, "CNY")], timeout=WAIT)
    assert codes(later) == [R.OK]
    assert totals(reader, alice) == (90, 120, 0, 0)
    assert totals(reader, bob) == (20, 190, 0, 0)
    assert verify_ledger(engine.db).ok


def test_a_broken_database_fails_every_caller_without_hanging(
    make_batcher: Callable[..., TransferBatcher],
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Tables missing (a database nobody migrated): every caller hears the driver's error, every time."""
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_server").create()
    else:
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    db = Database(url)
    try:
        batcher = make_batcher(LedgerEngine(db), window_ms=50)
        for _ in range(2):
            futures = [
                batcher.submit([TransferSpec.posted(unique("b"), "a", "b", 1, "CNY")]) for _ in range(3)
            ]
            errors = [f.exception(WAIT) for f in futures]
            assert all(e is not None and ("ledger_" in str(e) or "no such table" in str(e)) for e in errors)
        assert batcher.batches == 0
        batcher.close(timeout=WAIT)
    finally:
        db.dispose()


# -- closing ----------------------------------------------------------------------------------------


def test_close_drains_what_was_queued(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    funding, (alice,) = open_accounts(engine, 1)
    batcher = make_batcher(window_ms=500, max_batch=3)
    specs = [TransferSpec.posted(unique("d"), funding, alice, 1, "CNY") for _ in range(10)]
    futures = [batcher.submit([s]) for s in specs]
    started = time.monotonic()
    batcher.close(timeout=WAIT)
    assert time.monotonic() - started < WAIT
    assert all(f.done() for f in futures)
    assert [codes(f.result(0)) for f in futures] == [[R.OK]] * 10
    assert batcher.batches >= 4  # at most three transfers a batch
    assert totals(LedgerReader(engine.db), alice) == (0, 10, 0, 0)


def test_submitting_after_close_raises(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    funding, (alice,) = open_accounts(engine, 1)
    batcher = make_batcher()
    spec = TransferSpec.posted(unique("c"), funding, alice, 1, "CNY")
    assert codes(batcher.create_transfers([spec], timeout=WAIT)) == [R.OK]
    batcher.close()
    batcher.close()  # closing twice is harmless
    late = TransferSpec.posted(unique("c"), funding, alice, 1, "CNY")
    with pytest.raises(BatcherClosed):
        batcher.submit([late])
    with pytest.raises(BatcherClosed):
        batcher.create_transfers([late])
    with pytest.raises(BatcherClosed):
        asyncio.run(batcher.create_transfers_async([late]))
    assert LedgerReader(engine.db).get_transfer(late.id) is None


def test_submitting_before_start_raises(engine: LedgerEngine) -> None:
    batcher = TransferBatcher(engine)
    with pytest.raises(BatcherClosed):
        batcher.submit([TransferSpec.posted(unique("s"), "a", "b", 1, "CNY")])
    batcher.close()


# -- known bugs -------------------------------------------------------------------------------------


# These bugs are in the threads, not the database: one backend is enough.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
HANG = 2  # seconds: a request this late is taken as never answered


@SQLITE_ONLY
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_cancelled_caller_does_not_take_the_batcher_down(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    funding, (alice,) = open_accounts(engine, 1)
    batcher = make_batcher(window_ms=200)
    gave_up = batcher.submit([TransferSpec.posted(unique("k"), funding, alice, 1, "CNY")])
    waiting = batcher.submit([TransferSpec.posted(unique("k"), funding, alice, 1, "CNY")])

    async def impatient() -> None:
        # An async caller awaiting the future with a timeout: the timeout cancels the wrapped future.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(gave_up), 0.01)

    asyncio.run(impatient())
    assert gave_up.cancelled()
    try:
        assert codes(waiting.result(HANG)) == [R.OK]
        later = TransferSpec.posted(unique("k"), funding, alice, 1, "CNY")
        assert codes(batcher.create_transfers([later], HANG)) == [R.OK]
    finally:
        batcher.close(timeout=0.2)


@SQLITE_ONLY
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_asyncio_caller_whose_loop_closed_does_not_take_the_batcher_down(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    funding, (alice,) = open_accounts(engine, 1)
    batcher = make_batcher(window_ms=300)

    async def impatient() -> None:
        spec = TransferSpec.posted(unique("i"), funding, alice, 1, "CNY")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.create_transfers_async([spec]), 0.05)

    asyncio.run(impatient())  # the loop is closed before the batch is applied
    time.sleep(0.5)
    later = TransferSpec.posted(unique("i"), funding, alice, 1, "CNY")
    try:
        assert codes(batcher.create_transfers([later], timeout=HANG)) == [R.OK]
    finally:
        batcher.close(timeout=0.2)


@SQLITE_ONLY
def test_a_submit_racing_close_is_either_refused_or_applied(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    funding, (alice,) = open_accounts(engine, 1)
    batcher = make_batcher()
    check_open = batcher._check_open

    closer = threading.Thread(target=batcher.close, kwargs={"timeout": WAIT})

    def check_then_close() -> None:
        check_open()
        closer.start()  # another thread's shutdown begins at exactly this instant
        time.sleep(0.05)  # and gets every chance to run ahead of the enqueue

    monkeypatch.setattr(batcher, "_check_open", check_then_close)
    try:
        future = batcher.submit([TransferSpec.posted(unique("r"), funding, alice, 1, "CNY")])
    except BatcherClosed:
        return
    finally:
        closer.join(HANG)
    assert not closer.is_alive()
    assert codes(future.result(HANG)) == [R.OK]


def test_requests_queued_while_the_writer_is_busy_see_the_ones_queued_before(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer commits slowly; meanwhile a caller queues a hold, something else, and the hold's capture
    without waiting in between. (The removed speculative batcher answered the capture `pending_not_found`:
    it decided the capture from the database as it was before the hold's batch committed.)"""
    funding, (alice, bob, carol) = open_accounts(engine, 3, funded=100)
    batcher = make_batcher(window_ms=1)
    engine_create = engine.create_transfers

    def slow_create(*args: object, **kwargs: object) -> list[TransferResult]:
        time.sleep(0.3)  # a busy database: the writer commits slowly
        return engine_create(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "create_transfers", slow_create)
    hold = TransferSpec.pending(unique("h"), alice, bob, 10, "CNY")
    held = batcher.submit([hold])
    time.sleep(0.05)  # the writer has taken the hold's batch
    other = batcher.submit([TransferSpec.posted(unique("o"), funding, carol, 1, "CNY")])
    time.sleep(0.05)
    captured = batcher.submit([TransferSpec.post(unique("c"), hold.id, 4)])
    assert codes(held.result(WAIT)) == [R.OK]
    assert codes(other.result(WAIT)) == [R.OK]
    assert codes(captured.result(WAIT)) == [R.OK]
    assert batcher.batches >= 2
    assert totals(LedgerReader(engine.db), alice) == (4, 100, 0, 0)


def test_a_generator_of_transfers_is_accepted(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine
) -> None:
    funding, (alice,) = open_accounts(engine, 1)
    batcher = make_batcher()
    specs = (TransferSpec.posted(unique("g"), funding, alice, n, "CNY") for n in (1, 2))
    assert codes(batcher.submit(specs).result(HANG)) == [R.OK, R.OK]


@SQLITE_ONLY
def test_a_collector_that_dies_fails_its_callers_and_refuses_new_ones(
    make_batcher: Callable[..., TransferBatcher], engine: LedgerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    funding, (alice,) = open_accounts(engine, 1)
    batcher = make_batcher()

    def broken(_requests: object) -> object:
        raise RuntimeError("collector bug")

    monkeypatch.setattr(batcher, "_prepare", broken)
    future = batcher.submit([TransferSpec.posted(unique("d"), funding, alice, 1, "CNY")])
    with pytest.raises(RuntimeError, match="collector bug"):
        future.result(HANG)
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            late = batcher.submit([TransferSpec.posted(unique("d"), funding, alice, 1, "CNY")])
        except BatcherClosed:
            break
        # Queued just before the collector stopped: it must be failed, never left waiting.
        with pytest.raises((RuntimeError, BatcherClosed)):
            late.result(HANG)
        time.sleep(0.01)
    else:
        pytest.fail("the batcher kept accepting work after its collector died")

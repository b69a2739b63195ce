"""`qianbao bench ledger`: the group-commit engine against the plain design, on the same database.

Engine side: `clients` concurrent asyncio clients, each with one transfer in flight at a time, submit
through one `TransferBatcher` (one process, one database connection for writes).
Baseline side, same database, same number of clients: the plain design, one database transaction per
transfer (two balance UPDATEs in id order with an overdraft guard, two entry INSERTs, COMMIT), the clients
sharing a pool of `baseline_connections` connections (a plain server has a bounded pool too).
Both use durable commits: PostgreSQL synchronous_commit=on; SQLite WAL with synchronous=FULL.
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import make_url

from qianbao.ledger.batcher import TransferBatcher
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import AccountSpec, NormalBalance, TransferSpec
from qianbao.ledger.verify import verify_ledger
from qianbao.store import migrate
from qianbao.store.database import Database, normalise_url

HOT_ACCOUNT = "bench:hot"
FUNDING = "bench:funding"
Progress = Callable[[int], None]


@dataclass(frozen=True)
class LedgerBenchParams:
    transfers: int = 200_000
    accounts: int = 10_000
    clients: int = 1024
    hot_share: float = 0.0
    batch_max: int = 8192
    window_ms: float = 1.0
    baseline_transfers: int = 30_000
    baseline_connections: int = 0  # 0: 32 on PostgreSQL, 1 on SQLite (its single writer)
    seed: int = 1


@dataclass
class RunStats:
    transfers: int
    seconds: float
    latencies: list[float]
    failed: int

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class LedgerBenchResult:
    database: str
    params: LedgerBenchParams
    engine: RunStats
    baseline: RunStats
    baseline_connections: int
    batches: int
    verified: bool

    def summary(self) -> dict[str, Any]:
        return {
            "benchmark": "ledger",
            "database": self.database,
            "transfers_per_s": round(self.engine.per_second, 1),
            "baseline_transfers_per_s": round(self.baseline.per_second, 1),
            "ratio": round(self.engine.per_second / self.baseline.per_second, 2)
            if self.baseline.per_second
            else None,
            "p50_ms": round(self.engine.percentile_ms(0.50), 2),
            "p99_ms": round(self.engine.percentile_ms(0.99), 2),
            "baseline_p50_ms": round(self.baseline.percentile_ms(0.50), 2),
            "baseline_p99_ms": round(self.baseline.percentile_ms(0.99), 2),
            "avg_batch": round(self.engine.transfers / self.batches, 1) if self.batches else 0,
            "engine_failed": self.engine.failed,
            "baseline_failed": self.baseline.failed,
            "verified": self.verified,
            **asdict(self.params),
            "baseline_connections": self.baseline_connections,
        }


def _pair(rng: random.Random, accounts: int, hot_share: float) -> tuple[int, int]:
    debit = rng.randrange(accounts)
    if hot_share and rng.random() < hot_share:
        return debit, -1
    credit = rng.randrange(accounts - 1)
    return debit, credit if credit < debit else credit + 1


def _wallet(i: int) -> str:
    return HOT_ACCOUNT if i < 0 else f"bench:w{i}"


# -- engine ---------------------------------------------------------------------------------------------


def setup_engine_accounts(engine: LedgerEngine, params: LedgerBenchParams) -> None:
    specs = [AccountSpec(FUNDING, "CNY", "bench.funding", normal_balance=NormalBalance.DEBIT)]
    specs.append(AccountSpec(HOT_ACCOUNT, "CNY", "bench.merchant", debits_must_not_exceed_credits=True))
    specs += [
        AccountSpec(_wallet(i), "CNY", "bench.wallet", debits_must_not_exceed_credits=True)
        for i in range(params.accounts)
    ]
    engine.create_accounts(specs)
    funding = [
        TransferSpec.posted(f"fund:{i}", FUNDING, _wallet(i), 10**9, "CNY") for i in range(params.accounts)
    ]
    for start in range(0, len(funding), 5000):
        engine.create_transfers(funding[start : start + 5000], group_ends=range(5000))


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, float]], float]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux and macOS
        return asyncio.run
    return uvloop.run


def run_engine(engine: LedgerEngine, params: LedgerBenchParams, progress: Progress) -> tuple[RunStats, int]:
    batcher = TransferBatcher(engine, window_ms=params.window_ms, max_batch=params.batch_max).start()
    latencies: list[float] = []
    failed = 0
    done = 0
    per_client = params.transfers // params.clients
    plan = []
    for number in range(params.clients):
        rng = random.Random(params.seed * 100_003 + number)
        specs = []
        for k in range(per_client):
            debit, credit = _pair(rng, params.accounts, params.hot_share)
            specs.append(
                [
                    TransferSpec.posted(
                        f"b:{number}:{k}", _wallet(debit), _wallet(credit), 1 + rng.randrange(1000), "CNY"
                    )
                ]
            )
        plan.append(specs)

    async def client(requests: list[list[TransferSpec]]) -> None:
        nonlocal failed, done
        submit = batcher.create_transfers_async
        clock = time.perf_counter
        mine = []
        for request in requests:
            started = clock()
            result = (await submit(request))[0]
            mine.append(clock() - started)
            if not result.succeeded:
                failed += 1
            done += 1
        latencies.extend(mine)

    async def report() -> None:
        while True:
            await asyncio.sleep(0.2)
            progress(done)

    async def main() -> float:
        reporter = asyncio.create_task(report())
        started = time.perf_counter()
        await asyncio.gather(*(client(requests) for requests in plan))
        elapsed = time.perf_counter() - started
        reporter.cancel()
        progress(done)
        return elapsed

    try:
        # The clients run on uvloop when it is installed, as the API server (uvicorn) does.
        seconds = _event_loop_runner()(main())
    finally:
        batcher.close()
    return RunStats(per_client * params.clients, seconds, latencies, failed), batcher.batches


# -- baseline: the plain design ---------------------------------------------------------------------------

_PLAIN_SCHEMA = (
    "CREATE TABLE bench_plain_accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0))",
    "CREATE TABLE bench_plain_entries (id {serial} PRIMARY KEY, transfer_id TEXT NOT NULL,"
    " account_id BIGINT NOT NULL, amount BIGINT NOT NULL, balance_after BIGINT NOT NULL)",
    "CREATE INDEX bench_plain_entries_account ON bench_plain_entries (account_id, id)",
)


def setup_plain(db: Database, params: LedgerBenchParams) -> None:
    serial = "BIGSERIAL" if db.is_postgresql else "INTEGER"
    with db.write() as conn:
        for statement in _PLAIN_SCHEMA:
            conn.exec_driver_sql(statement.format(serial=serial))
        p = "%s" if db.is_postgresql else "?"
        rows = [(i, 10**9) for i in range(-1, params.accounts)]
        conn.exec_driver_sql(f"INSERT INTO bench_plain_accounts (id, balance) VALUES ({p}, {p})", rows)


def run_plain(db: Database, params: LedgerBenchParams, connections: int, progress: Progress) -> RunStats:
    raw = [db.engine.raw_connection() for _ in range(connections)]
    p = "%s" if db.is_postgresql else "?"
    begin = "BEGIN" if db.is_postgresql else "BEGIN IMMEDIATE"
    debit_sql = (
        f"UPDATE bench_plain_accounts SET balance = balance - {p} WHERE id = {p} AND balance >= {p}"
        " RETURNING balance"
    )
    credit_sql = f"UPDATE bench_plain_accounts SET balance = balance + {p} WHERE id = {p} RETURNING balance"
    entry_sql = (
        "INSERT INTO bench_plain_entries (transfer_id, account_id, amount, balance_after)"
        f" VALUES ({p}, {p}, {p}, {p})"
    )

    def transfer(conn: Any, tid: str, debit: int, credit: int, amount: int) -> bool:
        cur = conn.cursor()
        try:
            if not db.is_postgresql:
                cur.execute(begin)
            # Lock order by id, like the engine, so the plain design cannot deadlock.
            first, second = (debit, credit) if debit < credit else (credit, debit)
            balances: dict[int, int] = {}
            for account in (first, second):
                if account == debit:
                    cur.execute(debit_sql, (amount, debit, amount))
                else:
                    cur.execute(credit_sql, (amount, credit))
                row = cur.fetchone()
                if row is None:
                    conn.rollback()
                    return False
                balances[account] = row[0]
            cur.execute(entry_sql, (tid, debit, -amount, balances[debit]))
            cur.execute(entry_sql, (tid, credit, amount, balances[credit]))
            conn.commit()
            return True
        finally:
            cur.close()

    latencies: list[float] = []
    failed = 0
    done = 0
    lock = threading.Lock()
    per_client = max(1, params.baseline_transfers // params.clients)
    plan = []
    for number in range(params.clients):
        rng = random.Random(params.seed * 7_919 + number)
        triples = [
            (*_pair(rng, params.accounts, params.hot_share), 1 + rng.randrange(1000))
            for _ in range(per_client)
        ]
        plan.append(triples)
    # N closed-loop clients (one request in flight each) served by K connections, with K threads: a
    # client's next request joins the queue when its previous one completes, and its latency counts the
    # time it waited for a connection. One thread per client would measure Python's thread switching.
    ready: queue.SimpleQueue[tuple[int, int, float] | None] = queue.SimpleQueue()
    for number in range(params.clients):
        ready.put((number, 0, 0.0))

    def server(conn: Any) -> None:
        nonlocal failed, done
        mine: list[float] = []
        bad = 0
        while (item := ready.get()) is not None:
            number, k, queued_at = item
            started = queued_at or time.perf_counter()
            debit, credit, amount = plan[number][k]
            ok = transfer(conn, f"p:{number}:{k}", debit, credit, amount)
            finished = time.perf_counter()
            mine.append(finished - started)
            bad += not ok
            with lock:
                done += 1
                if done == per_client * params.clients:
                    for _ in raw:
                        ready.put(None)
            if k + 1 < per_client:
                ready.put((number, k + 1, finished))
        with lock:
            latencies.extend(mine)
            failed += bad

    threads = [threading.Thread(target=server, args=(conn,), daemon=True) for conn in raw]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        progress(done)
    seconds = time.perf_counter() - started
    progress(done)
    for conn in raw:
        conn.close()
    return RunStats(per_client * params.clients, seconds, latencies, failed)


def run_ledger_bench(
    url: str, params: LedgerBenchParams, progress_factory: Callable[[str, int], Progress]
) -> LedgerBenchResult:
    """Run both sides on the database at `url` (which should be empty and disposable)."""
    postgresql = make_url(normalise_url(url)).get_backend_name() == "postgresql"
    connections = params.baseline_connections or (32 if postgresql else 1)
    db = Database(url, pool_size=connections + 4)
    try:
        if db.is_postgresql:
            with db.write() as conn:
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"  # noqa: S101
        migrate.upgrade(db)
        engine = LedgerEngine(db)
        setup_engine_accounts(engine, params)
        engine_stats, batches = run_engine(
            engine, params, progress_factory("group commit engine", params.transfers)
        )
        setup_plain(db, params)
        total = max(1, params.baseline_transfers // params.clients) * params.clients
        baseline = run_plain(db, params, connections, progress_factory("plain design (baseline)", total))
        verified = verify_ledger(db).ok
        return LedgerBenchResult(db.dialect, params, engine_stats, baseline, connections, batches, verified)
    finally:
        db.dispose()

"""Driver benchmark: psycopg 3 (sync, threads) vs asyncpg (asyncio tasks) on PostgreSQL.

Standalone script; it creates a throw-away database next to the one given by
``--database-url`` and drops it again at the end (also on error / Ctrl-C)::

    .venv/bin/python bench/drivers.py --database-url postgresql://postgres@127.0.0.1:5432/test --seconds 5

Workloads (all with ``synchronous_commit=on``):

* plain transfer -- one transaction per transfer (2 UPDATEs + 2 INSERTs + COMMIT) with
  N concurrent clients, each with its own connection (threads for psycopg, tasks for asyncpg);
* batch insert   -- batches of rows inserted in one transaction per batch with each driver's
  bulk methods (executemany, INSERT ... SELECT FROM unnest(...), COPY); psycopg also gets
  ``unnest_text`` (default text-format %s params) and ``copy_binary`` for reference;
  methods run in interleaved rounds (each round: every method inserts the same number of
  batches into a freshly truncated table) so they see the same table sizes and noise;
* round trip     -- ``SELECT 1`` latency, single client.

SQLite (stdlib sqlite3 vs aiosqlite) is only reported as skipped when aiosqlite is missing.

The last line printed is a single JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import random
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.table import Table

PgConn: TypeAlias = psycopg.Connection[tuple[Any, ...]]
Row: TypeAlias = tuple[str, int, int, str]

INITIAL_BALANCE = 1_000_000_000
WARMUP_TRANSFERS = 10
WARMUP_ROUND_TRIPS = 200

SCHEMA = """
CREATE TABLE accounts (
    id      bigint PRIMARY KEY,
    balance bigint NOT NULL
);
CREATE TABLE entries (
    id          bigserial PRIMARY KEY,
    transfer_id bigint      NOT NULL,
    account_id  bigint      NOT NULL,
    amount      bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_account_id_idx ON entries (account_id);
CREATE TABLE batch_rows (
    id      text   PRIMARY KEY,
    a       bigint NOT NULL,
    b       bigint NOT NULL,
    payload jsonb  NOT NULL
);
CREATE INDEX batch_rows_a_idx ON batch_rows (a);
CREATE INDEX batch_rows_b_idx ON batch_rows (b);
"""

# psycopg uses %s placeholders, asyncpg uses $n; the statements are otherwise identical.
PG_DEBIT = "UPDATE accounts SET balance = balance - %s WHERE id = %s"
PG_CREDIT = "UPDATE accounts SET balance = balance + %s WHERE id = %s"
PG_ENTRY = "INSERT INTO entries (transfer_id, account_id, amount) VALUES (%s, %s, %s)"
AP_DEBIT = "UPDATE accounts SET balance = balance - $1 WHERE id = $2"
AP_CREDIT = "UPDATE accounts SET balance = balance + $1 WHERE id = $2"
AP_ENTRY = "INSERT INTO entries (transfer_id, account_id, amount) VALUES ($1, $2, $3)"

PG_BATCH_INSERT = "INSERT INTO batch_rows (id, a, b, payload) VALUES (%s, %s, %s, %s::jsonb)"
AP_BATCH_INSERT = "INSERT INTO batch_rows (id, a, b, payload) VALUES ($1, $2, $3, $4::jsonb)"
UNNEST_TAIL = " AS u(id, a, b, payload)"
PG_BATCH_UNNEST_TEXT = (
    "INSERT INTO batch_rows (id, a, b, payload) SELECT id, a, b, payload::jsonb"
    " FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[])" + UNNEST_TAIL
)
# %b = binary parameters: arrays travel in binary format (asyncpg always does this).
PG_BATCH_UNNEST_BINARY = PG_BATCH_UNNEST_TEXT.replace("%s", "%b")
AP_BATCH_UNNEST = (
    "INSERT INTO batch_rows (id, a, b, payload) SELECT id, a, b, payload::jsonb"
    " FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])" + UNNEST_TAIL
)
PG_COPY_TEXT = "COPY batch_rows (id, a, b, payload) FROM STDIN"
PG_COPY_BINARY = "COPY batch_rows (id, a, b, payload) FROM STDIN (FORMAT BINARY)"
BATCH_COLUMNS = ["id", "a", "b", "payload"]


# --------------------------------------------------------------------------- helpers


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` pointing at database ``dbname`` (usable by both drivers)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in [0, 1])."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class LatencyStats:
    count: int
    elapsed_s: float
    per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def from_samples(cls, samples: list[float], elapsed_s: float) -> LatencyStats:
        ordered = sorted(samples)
        return cls(
            count=len(ordered),
            elapsed_s=elapsed_s,
            per_s=len(ordered) / elapsed_s if elapsed_s > 0 else 0.0,
            p50_ms=percentile(ordered, 0.50) * 1000,
            p99_ms=percentile(ordered, 0.99) * 1000,
            mean_ms=statistics.fmean(ordered) * 1000 if ordered else float("nan"),
        )

    def as_json(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "elapsed_s": round(self.elapsed_s, 3),
            "per_s": round(self.per_s, 1),
            "p50_ms": round(self.p50_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "mean_ms": round(self.mean_ms, 4),
        }


@dataclass
class TransferResult:
    driver: str
    clients: int
    stats: LatencyStats
    errors: int
    consistent: bool

    def as_json(self) -> dict[str, Any]:
        return {**self.stats.as_json(), "errors": self.errors, "consistent": self.consistent}


@dataclass
class BatchResult:
    driver: str
    method: str
    batches: int
    rows: int
    db_seconds: float
    batch_latencies: list[float] = field(repr=False)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.db_seconds if self.db_seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        ordered = sorted(self.batch_latencies)
        return {
            "batches": self.batches,
            "rows": self.rows,
            "db_seconds": round(self.db_seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "batch_p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
            "batch_p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
        }


@dataclass
class Config:
    admin_url: str
    bench_url: str
    seconds: float
    clients: list[int]
    accounts: int
    batch_size: int
    batches_per_round: int
    loop: str


# --------------------------------------------------------------------------- setup / reset


def pg_connect(url: str, *, autocommit: bool = True) -> PgConn:
    return psycopg.connect(url, autocommit=autocommit, options="-c synchronous_commit=on")


async def ap_connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, server_settings={"synchronous_commit": "on"})


def create_schema(cfg: Config) -> None:
    with pg_connect(cfg.bench_url) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO accounts (id, balance) SELECT g, %s FROM generate_series(1, %s) AS g",
            (INITIAL_BALANCE, cfg.accounts),
        )
        conn.execute("VACUUM (ANALYZE)")


def reset_transfers(cfg: Config) -> None:
    """Same starting state for every transfer run: fresh balances, empty entries, checkpoint."""
    with pg_connect(cfg.bench_url) as conn:
        conn.execute("TRUNCATE entries RESTART IDENTITY")
        conn.execute("UPDATE accounts SET balance = %s", (INITIAL_BALANCE,))
        conn.execute("VACUUM (ANALYZE) accounts")
        conn.execute("VACUUM (ANALYZE) entries")
        conn.execute("CHECKPOINT")


def check_transfers(cfg: Config, transfers: int) -> bool:
    """Money is conserved and every committed transfer wrote exactly two entries."""
    with pg_connect(cfg.bench_url) as conn:
        row = conn.execute(
            "SELECT (SELECT sum(balance) FROM accounts), (SELECT count(*) FROM entries),"
            " (SELECT coalesce(sum(amount), 0) FROM entries)"
        ).fetchone()
    if row is None:
        raise RuntimeError("consistency query returned no row")
    total, entries, entry_sum = row
    return bool(total == INITIAL_BALANCE * cfg.accounts and entries == 2 * transfers and entry_sum == 0)


def server_settings(url: str) -> dict[str, str]:
    names = ["server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes"]
    out: dict[str, str] = {}
    with pg_connect(url) as conn:
        for name in names:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            out[name] = str(row[0]) if row else "?"
    return out


# --------------------------------------------------------------------------- transfer workload


def pick_pair(rng: random.Random, accounts: int) -> tuple[int, int, int]:
    src = rng.randint(1, accounts)
    dst = rng.randint(1, accounts - 1)
    if dst >= src:
        dst += 1
    return src, dst, rng.randint(1, 100)


def pg_transfer(
    cur: psycopg.Cursor[tuple[Any, ...]], transfer_id: int, src: int, dst: int, amount: int
) -> None:
    conn = cur.connection
    with conn.transaction():
        # Lock rows in id order so concurrent transfers cannot deadlock.
        if src < dst:
            cur.execute(PG_DEBIT, (amount, src))
            cur.execute(PG_CREDIT, (amount, dst))
        else:
            cur.execute(PG_CREDIT, (amount, dst))
            cur.execute(PG_DEBIT, (amount, src))
        cur.execute(PG_ENTRY, (transfer_id, src, -amount))
        cur.execute(PG_ENTRY, (transfer_id, dst, amount))


async def ap_transfer(conn: asyncpg.Connection, transfer_id: int, src: int, dst: int, amount: int) -> None:
    async with conn.transaction():
        if src < dst:
            await conn.execute(AP_DEBIT, amount, src)
            await conn.execute(AP_CREDIT, amount, dst)
        else:
            await conn.execute(AP_CREDIT, amount, dst)
            await conn.execute(AP_DEBIT, amount, src)
        await conn.execute(AP_ENTRY, transfer_id, src, -amount)
        await conn.execute(AP_ENTRY, transfer_id, dst, amount)


RETRYABLE_PG = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
RETRYABLE_AP = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


def run_psycopg_transfers(cfg: Config, clients: int) -> tuple[TransferResult, int]:
    conns = [pg_connect(cfg.bench_url) for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    committed = [0] * clients
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]
    failures: list[BaseException] = []

    def worker(idx: int) -> None:
        try:
            rng = random.Random(idx)
            cur = conns[idx].cursor()
            next_id = idx * 1_000_000_000
            for _ in range(WARMUP_TRANSFERS):
                next_id += 1
                pg_transfer(cur, next_id, *pick_pair(rng, cfg.accounts))
                committed[idx] += 1
            ready.wait()  # all warmed up ...
            ready.wait()  # ... and deadline set
            samples = latencies[idx]
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline[0]:
                    break
                next_id += 1
                try:
                    pg_transfer(cur, next_id, *pick_pair(rng, cfg.accounts))
                except RETRYABLE_PG:
                    errors[idx] += 1
                    continue
                samples.append(time.perf_counter() - t0)
                committed[idx] += 1
        except BaseException as exc:  # surfaced in the main thread below
            failures.append(exc)
            ready.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    try:
        for t in threads:
            t.start()
        start = time.perf_counter()
        try:
            ready.wait()  # every worker connected and warmed up
            start = time.perf_counter()
            deadline[0] = start + cfg.seconds
            ready.wait()  # open the gate
        except threading.BrokenBarrierError:
            pass  # a worker failed; re-raised below
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    finally:
        for c in conns:
            c.close()
    if failures:
        raise failures[0]
    samples = [x for per in latencies for x in per]
    stats = LatencyStats.from_samples(samples, elapsed)
    return TransferResult("psycopg", clients, stats, sum(errors), consistent=False), sum(committed)


async def run_asyncpg_transfers(cfg: Config, clients: int) -> tuple[TransferResult, int]:
    conns = await asyncio.gather(*(ap_connect(cfg.bench_url) for _ in range(clients)))
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    committed = [0] * clients
    rngs = [random.Random(idx) for idx in range(clients)]
    next_ids = [idx * 1_000_000_000 for idx in range(clients)]

    async def warmup(idx: int) -> None:
        for _ in range(WARMUP_TRANSFERS):
            next_ids[idx] += 1
            await ap_transfer(conns[idx], next_ids[idx], *pick_pair(rngs[idx], cfg.accounts))
            committed[idx] += 1

    async def worker(idx: int, deadline: float) -> None:
        conn, rng, samples = conns[idx], rngs[idx], latencies[idx]
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            next_ids[idx] += 1
            try:
                await ap_transfer(conn, next_ids[idx], *pick_pair(rng, cfg.accounts))
            except RETRYABLE_AP:
                errors[idx] += 1
                continue
            samples.append(time.perf_counter() - t0)
            committed[idx] += 1

    try:
        await asyncio.gather(*(warmup(i) for i in range(clients)))
        start = time.perf_counter()
        deadline = start + cfg.seconds
        await asyncio.gather(*(worker(i, deadline) for i in range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    samples = [x for per in latencies for x in per]
    stats = LatencyStats.from_samples(samples, elapsed)
    return TransferResult("asyncpg", clients, stats, sum(errors), consistent=False), sum(committed)


# --------------------------------------------------------------------------- batch insert workload


class BatchSource:
    """Deterministic batches of (random text id, random bigint, increasing bigint, jsonb text)."""

    def __init__(self, seed: int, size: int) -> None:
        self.rng = random.Random(seed)
        self.size = size
        self.counter = 0

    def next_batch(self) -> list[Row]:
        rows: list[Row] = []
        rng = self.rng
        for _ in range(self.size):
            self.counter += 1
            n = self.counter
            payload = json.dumps({"n": n, "kind": "transfer", "memo": f"batch row {n}", "tags": ["a", "b"]})
            rows.append((f"{rng.getrandbits(128):032x}", rng.randint(1, 10_000), n, payload))
        return rows


def _identity(value: Any) -> Any:
    return value


def pg_insert_executemany(conn: PgConn, rows: list[Row]) -> None:
    # psycopg >= 3.1 runs executemany in pipeline mode automatically (libpq >= 14).
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(PG_BATCH_INSERT, rows)


def pg_insert_unnest(conn: PgConn, rows: list[Row]) -> None:
    ids, a_vals, b_vals, payloads = (list(col) for col in zip(*rows, strict=True))
    with conn.transaction():
        conn.execute(PG_BATCH_UNNEST_BINARY, (ids, a_vals, b_vals, payloads))


def pg_insert_unnest_text(conn: PgConn, rows: list[Row]) -> None:
    ids, a_vals, b_vals, payloads = (list(col) for col in zip(*rows, strict=True))
    with conn.transaction():
        conn.execute(PG_BATCH_UNNEST_TEXT, (ids, a_vals, b_vals, payloads))


def pg_insert_copy_text(conn: PgConn, rows: list[Row]) -> None:
    with conn.transaction(), conn.cursor() as cur, cur.copy(PG_COPY_TEXT) as copy:
        for row in rows:
            copy.write_row(row)


def pg_insert_copy_binary(conn: PgConn, rows: list[Row]) -> None:
    with conn.transaction(), conn.cursor() as cur, cur.copy(PG_COPY_BINARY) as copy:
        copy.set_types(["text", "int8", "int8", "jsonb"])
        for ident, a, b, payload in rows:
            # payload is already JSON text: pass it through unchanged (no second json.dumps).
            copy.write_row((ident, a, b, Jsonb(payload, dumps=_identity)))


async def ap_insert_executemany(conn: asyncpg.Connection, rows: list[Row]) -> None:
    # asyncpg >= 0.22 pipelines executemany (Bind/Execute per row, one Sync).
    async with conn.transaction():
        await conn.executemany(AP_BATCH_INSERT, rows)


async def ap_insert_unnest(conn: asyncpg.Connection, rows: list[Row]) -> None:
    ids, a_vals, b_vals, payloads = (list(col) for col in zip(*rows, strict=True))
    async with conn.transaction():
        await conn.execute(AP_BATCH_UNNEST, ids, a_vals, b_vals, payloads)


async def ap_insert_copy(conn: asyncpg.Connection, rows: list[Row]) -> None:
    # Binary COPY; asyncpg's jsonb codec takes JSON text.
    async with conn.transaction():
        await conn.copy_records_to_table("batch_rows", records=rows, columns=BATCH_COLUMNS)


PG_BATCH_METHODS: dict[str, Callable[[PgConn, list[Row]], None]] = {
    "executemany": pg_insert_executemany,
    "unnest": pg_insert_unnest,
    "unnest_text": pg_insert_unnest_text,
    "copy": pg_insert_copy_text,
    "copy_binary": pg_insert_copy_binary,
}
AP_BATCH_METHODS: dict[str, Callable[[asyncpg.Connection, list[Row]], Coroutine[Any, Any, None]]] = {
    "executemany": ap_insert_executemany,
    "unnest": ap_insert_unnest,
    "copy": ap_insert_copy,
}


def new_event_loop_factory(loop_name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


async def timed_ap_insert(
    insert: Callable[[asyncpg.Connection, list[Row]], Coroutine[Any, Any, None]],
    conn: asyncpg.Connection,
    rows: list[Row],
) -> float:
    t0 = time.perf_counter()
    await insert(conn, rows)
    return time.perf_counter() - t0


def reset_batch_table(conn: PgConn) -> None:
    conn.execute("TRUNCATE batch_rows")
    conn.execute("CHECKPOINT")


def batch_row_count(conn: PgConn) -> int:
    row = conn.execute("SELECT count(*) FROM batch_rows").fetchone()
    if row is None:
        raise RuntimeError("count query returned no row")
    return int(row[0])


def run_batch_phase(cfg: Config) -> dict[str, dict[str, BatchResult]]:
    """Interleaved rounds: every round, each method (rotating order) inserts the same number
    of batches into a freshly truncated table, so all methods see the same table sizes and the
    same share of any background noise. Rounds repeat until ``seconds * methods`` has passed."""
    methods = [("psycopg", m) for m in PG_BATCH_METHODS] + [("asyncpg", m) for m in AP_BATCH_METHODS]
    results = {dm: BatchResult(dm[0], dm[1], 0, 0, 0.0, []) for dm in methods}
    source = BatchSource(seed=42, size=cfg.batch_size)
    with (
        asyncio.Runner(loop_factory=new_event_loop_factory(cfg.loop)) as runner,
        pg_connect(cfg.bench_url) as pconn,
    ):
        aconn = runner.run(ap_connect(cfg.bench_url))
        try:

            def insert_one(driver: str, method: str, rows: list[Row]) -> float:
                if driver == "psycopg":
                    t0 = time.perf_counter()
                    PG_BATCH_METHODS[method](pconn, rows)
                    return time.perf_counter() - t0
                elapsed: float = runner.run(timed_ap_insert(AP_BATCH_METHODS[method], aconn, rows))
                return elapsed

            for driver, method in methods:  # warm-up: statement preparation, type lookups
                for _ in range(2):
                    insert_one(driver, method, source.next_batch())
            budget = cfg.seconds * len(methods)
            phase_start = time.perf_counter()
            round_no = 0
            while round_no == 0 or time.perf_counter() - phase_start < budget:
                shift = round_no % len(methods)
                for driver, method in methods[shift:] + methods[:shift]:
                    reset_batch_table(pconn)
                    res = results[(driver, method)]
                    for _ in range(cfg.batches_per_round):
                        rows = source.next_batch()  # row generation is not timed
                        elapsed = insert_one(driver, method, rows)
                        res.batch_latencies.append(elapsed)
                        res.db_seconds += elapsed
                        res.batches += 1
                        res.rows += len(rows)
                    found = batch_row_count(pconn)
                    if found != cfg.batches_per_round * cfg.batch_size:
                        raise RuntimeError(f"{driver}/{method}: {found} rows in table after round")
                round_no += 1
                log(f"batch insert: round {round_no} done")
        finally:
            runner.run(aconn.close())
    out: dict[str, dict[str, BatchResult]] = {}
    for (driver, method), res in results.items():
        out.setdefault(driver, {})[method] = res
    return out


# --------------------------------------------------------------------------- round trip workload


def run_psycopg_round_trip(cfg: Config) -> LatencyStats:
    samples: list[float] = []
    with pg_connect(cfg.bench_url) as conn, conn.cursor() as cur:
        for _ in range(WARMUP_ROUND_TRIPS):
            cur.execute("SELECT 1")
            cur.fetchone()
        start = time.perf_counter()
        deadline = start + cfg.seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            cur.execute("SELECT 1")
            cur.fetchone()
            samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    return LatencyStats.from_samples(samples, elapsed)


async def run_asyncpg_round_trip(cfg: Config) -> LatencyStats:
    samples: list[float] = []
    conn = await ap_connect(cfg.bench_url)
    try:
        for _ in range(WARMUP_ROUND_TRIPS):
            await conn.fetchval("SELECT 1")
        start = time.perf_counter()
        deadline = start + cfg.seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            await conn.fetchval("SELECT 1")
            samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    finally:
        await conn.close()
    return LatencyStats.from_samples(samples, elapsed)


# --------------------------------------------------------------------------- orchestration


def run_async(coro: Coroutine[Any, Any, Any], loop_name: str) -> Any:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def log(msg: str) -> None:
    print(f"[drivers] {msg}", file=sys.stderr, flush=True)


def run_all(cfg: Config) -> dict[str, Any]:
    results: dict[str, Any] = {"plain_transfer": {}, "batch_insert": {}, "round_trip": {}}

    # (a) plain transfers; alternate driver order per client count to spread order effects.
    for i, clients in enumerate(cfg.clients):
        order = ["psycopg", "asyncpg"] if i % 2 == 0 else ["asyncpg", "psycopg"]
        for driver in order:
            reset_transfers(cfg)
            log(f"plain transfer: {driver}, {clients} clients")
            if driver == "psycopg":
                res, committed = run_psycopg_transfers(cfg, clients)
            else:
                res, committed = run_async(run_asyncpg_transfers(cfg, clients), cfg.loop)
            res.consistent = check_transfers(cfg, committed)
            results["plain_transfer"].setdefault(driver, {})[str(clients)] = res

    # (b) batch inserts
    results["batch_insert"] = run_batch_phase(cfg)

    # (c) round trip
    log("round trip: psycopg")
    results["round_trip"]["psycopg"] = run_psycopg_round_trip(cfg)
    log("round trip: asyncpg")
    results["round_trip"]["asyncpg"] = run_async(run_asyncpg_round_trip(cfg), cfg.loop)
    return results


def sqlite_section() -> dict[str, Any]:
    if importlib.util.find_spec("aiosqlite") is None:
        return {"skipped": True, "reason": "aiosqlite is not installed; sqlite3 vs aiosqlite not compared"}
    return {"skipped": True, "reason": "aiosqlite is installed but this script does not benchmark SQLite"}


def render(cfg: Config, settings: dict[str, str], results: dict[str, Any], sqlite: dict[str, Any]) -> None:
    console = Console(width=120)
    console.print(
        f"PostgreSQL {settings['server_version']}  fsync={settings['fsync']}  "
        f"synchronous_commit={settings['synchronous_commit']}  "
        f"wal_sync_method={settings['wal_sync_method']}  "
        f"seconds/run={cfg.seconds}  accounts={cfg.accounts}  batch={cfg.batch_size}  "
        f"python={platform.python_version()}  psycopg={psycopg.__version__} ({psycopg.pq.__impl__})  "
        f"asyncpg={asyncpg.__version__}  loop={cfg.loop}  cpus={os.cpu_count()}  "
        f"loadavg(1m) start={settings['loadavg_1m_at_start']} end={settings['loadavg_1m_at_end']}"
    )

    t = Table(title="(a) plain transfer: 1 txn per transfer (2 UPDATE + 2 INSERT + COMMIT)")
    for col in ["driver", "clients", "transfers", "transfers/s", "p50 ms", "p99 ms", "errors", "consistent"]:
        t.add_column(col, justify="right")
    for clients in cfg.clients:
        for driver in ["psycopg", "asyncpg"]:
            r: TransferResult = results["plain_transfer"][driver][str(clients)]
            t.add_row(
                driver,
                str(clients),
                str(r.stats.count),
                f"{r.stats.per_s:,.0f}",
                f"{r.stats.p50_ms:.2f}",
                f"{r.stats.p99_ms:.2f}",
                str(r.errors),
                str(r.consistent),
            )
    console.print(t)

    t = Table(
        title=f"(b) batch insert: {cfg.batch_size} rows/txn (text PK, 2 bigint idx, jsonb); "
        f"interleaved rounds of {cfg.batches_per_round} batches/method from an empty table"
    )
    for col in ["driver", "method", "batches", "rows/s", "batch p50 ms", "batch p99 ms"]:
        t.add_column(col, justify="right")
    for driver, methods in results["batch_insert"].items():
        for method, b in methods.items():
            bj = b.as_json()
            t.add_row(
                driver,
                method,
                str(b.batches),
                f"{b.rows_per_s:,.0f}",
                f"{bj['batch_p50_ms']:.1f}",
                f"{bj['batch_p99_ms']:.1f}",
            )
    console.print(t)

    t = Table(title="(c) round trip: SELECT 1, single client")
    for col in ["driver", "calls", "calls/s", "p50 us", "p99 us", "mean us"]:
        t.add_column(col, justify="right")
    for driver, s in results["round_trip"].items():
        t.add_row(
            driver,
            str(s.count),
            f"{s.per_s:,.0f}",
            f"{s.p50_ms * 1000:.1f}",
            f"{s.p99_ms * 1000:.1f}",
            f"{s.mean_ms * 1000:.1f}",
        )
    console.print(t)
    console.print(f"SQLite: {sqlite['reason']}")


def to_json(cfg: Config, settings: dict[str, str], results: dict[str, Any], sqlite: dict[str, Any]) -> str:
    doc = {
        "meta": {
            "seconds_per_run": cfg.seconds,
            "clients": cfg.clients,
            "accounts": cfg.accounts,
            "batch_size": cfg.batch_size,
            "batches_per_round": cfg.batches_per_round,
            "event_loop": cfg.loop,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__}, libpq {psycopg.pq.version()})",
            "asyncpg": asyncpg.__version__,
            "server": settings,
        },
        "plain_transfer": {
            driver: {clients: r.as_json() for clients, r in per.items()}
            for driver, per in results["plain_transfer"].items()
        },
        "batch_insert": {
            driver: {method: b.as_json() for method, b in per.items()}
            for driver, per in results["batch_insert"].items()
        },
        "round_trip": {driver: s.as_json() for driver, s in results["round_trip"].items()},
        "sqlite": sqlite,
    }
    return json.dumps(doc, separators=(",", ":"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", required=True, help="existing database used to create/drop the bench db")
    p.add_argument("--seconds", type=float, default=5.0, help="measured duration of each run")
    p.add_argument("--clients", default="1,8,32", help="comma-separated client counts for plain transfers")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=2_000)
    p.add_argument(
        "--batches-per-round", type=int, default=10, help="batches per method per interleaved batch round"
    )
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="event loop for asyncpg")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dbname = f"qianbao_drivers_{secrets.token_hex(4)}"
    cfg = Config(
        admin_url=args.database_url,
        bench_url=with_database(args.database_url, dbname),
        seconds=args.seconds,
        clients=[int(c) for c in args.clients.split(",") if c.strip()],
        accounts=args.accounts,
        batch_size=args.batch_size,
        batches_per_round=args.batches_per_round,
        loop=args.loop,
    )
    ident = sql.Identifier(dbname)
    with pg_connect(cfg.admin_url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    log(f"created database {dbname}")
    try:
        with pg_connect(cfg.admin_url) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(ident))
        create_schema(cfg)
        settings = server_settings(cfg.bench_url)
        settings["loadavg_1m_at_start"] = f"{os.getloadavg()[0]:.2f}"
        results = run_all(cfg)
        settings["loadavg_1m_at_end"] = f"{os.getloadavg()[0]:.2f}"
    finally:
        with pg_connect(cfg.admin_url) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        log(f"dropped database {dbname}")
    sqlite = sqlite_section()
    render(cfg, settings, results, sqlite)
    print(to_json(cfg, settings, results, sqlite))
    return 0


if __name__ == "__main__":
    sys.exit(main())

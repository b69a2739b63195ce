"""`qianbao bench api`: payments per second through the HTTP API, against the ledger engine alone.

One run:
  1. starts `qianbao serve` (N uvicorn workers) on a fresh scratch database, or targets `--url`;
  2. creates the population over HTTP, as clients would: payers (sign-up by SMS code, sign-in, sandbox
     funding) and merchants (owner sign-up, merchant, its static QR code);
  3. drives it with `wrk` and bench/api_payments.lua: P2P transfers (`POST /v1/transfers`, to another
     payer's wallet id) and QR payments (`POST /v1/payments`, a merchant's static code), each with a
     unique Idempotency-Key, over C connections, first a short warm-up, then the measured run;
  4. checks the books: every request the server answered 201 (its idempotency records) is exactly one new
     ledger transfer, wrk saw all of them but those in flight when it stopped, and `verify` agrees;
  5. stops the server and measures the ledger engine alone (the group-commit batcher of `qianbao bench
     ledger`, same database server, as many clients as the HTTP run has connections): the API's rate over
     the ledger's is the overhead ratio.

What the bench changes from a default sandbox server, and why (docs/benchmarks.md):
  - argon2 parameters lowered (sign-up and sign-in of the population only: payments below the step-up
    thresholds hash nothing), demo data off, log level `warning` (no access log);
  - each sign-up comes from its own loopback source address (127.x.y.z), at most `SIGNUPS_PER_ADDRESS`
    per address, because the server allows 20 SMS codes per IP and hour; the payments all come from one.
Limits, step-up and rate limits are the defaults: amounts are small (¥1-¥10 by default) and go to payees
the payer has paid before or to merchants (never a "new payee"), under every tier-4 limit.
"""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from qianbao.benchmarks.api_floors import Floor, run_floors
from qianbao.benchmarks.api_params import PAYMENT_CODE, ApiBenchParams, BenchError
from qianbao.benchmarks.api_population import LoopbackHttp, create_population, request_lines
from qianbao.benchmarks.api_server import Server, check_loopback, started_server, tail, wait_healthy
from qianbao.benchmarks.api_wrk import WrkResult, cpu_cores, cpu_sample, run_wrk, wrk_command
from qianbao.ledger.tables import transfers as ledger_transfers
from qianbao.ledger.verify import verify_ledger
from qianbao.store.database import Database, normalise_url
from qianbao.store.idempotency_tables import idempotency_keys

Progress = Callable[[int], None]

Log = Callable[[str], None]

P2P_CODE = "p2p"

# -- the books ------------------------------------------------------------------------------------------


def payment_transfers(db: Database) -> int:
    """Ledger transfers that are payments (P2P and merchant payments; merchant fees are their own legs)."""
    with db.read() as conn:
        found = conn.execute(
            select(func.count()).where(ledger_transfers.c.code.in_((P2P_CODE, PAYMENT_CODE)))
        ).scalar_one()
    return int(found)


def answered(db: Database, key_prefix: str) -> dict[int, int]:
    """How the server answered the requests whose Idempotency-Key starts with `key_prefix`, by status
    (0: still in progress)."""
    with db.read() as conn:
        rows = conn.execute(
            select(idempotency_keys.c.status_code, func.count())
            .where(idempotency_keys.c.key.startswith(key_prefix, autoescape=True))
            .group_by(idempotency_keys.c.status_code)
        ).all()
    return {int(status): int(count) for status, count in rows}


def settle(db: Database, key_prefix: str, seconds: float = 30) -> dict[int, int]:
    """Wait until the server has finished the requests wrk left in flight when it stopped: nothing in
    progress, and neither the answers nor the ledger's payments changed over the last half second (a
    payment pipeline's batch marks nothing in progress: it commits its answers and payments at once)."""
    deadline = time.monotonic() + seconds
    last: tuple[dict[int, int], int] | None = None
    while True:
        outcome = answered(db, key_prefix)
        now = (outcome, payment_transfers(db))
        if (not outcome.get(0) and now == last) or time.monotonic() > deadline:
            return outcome
        last = now
        time.sleep(0.5)


@dataclass
class Books:
    server_succeeded: int
    server_outcomes: dict[int, int]
    new_payment_transfers: int
    wrk_unseen: int
    verified: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_books(db: Database, key_prefix: str, before: int, wrk: WrkResult, connections: int) -> Books:
    outcomes = settle(db, key_prefix)
    new = payment_transfers(db) - before
    succeeded = outcomes.get(201, 0)
    problems = []
    if new != succeeded:
        problems.append(f"{succeeded} payments answered 201 but {new} new ledger payment transfers")
    unseen = succeeded - wrk.succeeded
    if not 0 <= unseen <= connections:
        problems.append(f"wrk counted {wrk.succeeded} successes, the server {succeeded}")
    if outcomes.get(0):
        problems.append(f"{outcomes[0]} requests were still in progress")
    report = verify_ledger(db)
    if not report.ok:
        problems.append(f"ledger verify failed: {report}")
    return Books(succeeded, outcomes, new, unseen, report.ok, problems)


# -- the ledger alone ------------------------------------------------------------------------------------


@dataclass
class LedgerOnly:
    transfers: int
    seconds: float
    clients: int
    p50_ms: float
    p99_ms: float
    failed: int

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds else 0.0


def ledger_only(database_url: str, transfers: int, clients: int, progress: Progress) -> LedgerOnly:
    """The group-commit engine of `qianbao bench ledger` (its own scratch database, same server)."""
    from qianbao.benchmarks.ledger import LedgerBenchParams, run_engine, setup_engine_accounts
    from qianbao.benchmarks.scratch import scratch_database
    from qianbao.ledger.engine import LedgerEngine
    from qianbao.store import migrate

    params = LedgerBenchParams(transfers=transfers, clients=clients, accounts=max(2, min(10_000, transfers)))
    with scratch_database(database_url, prefix="qianbao_bench_ledger") as url:
        db = Database(url, pool_size=4)
        try:
            migrate.upgrade(db)
            engine = LedgerEngine(db)
            setup_engine_accounts(engine, params)
            stats, _batches = run_engine(engine, params, progress)
        finally:
            db.dispose()
    return LedgerOnly(
        stats.transfers,
        stats.seconds,
        clients,
        stats.percentile_ms(0.5),
        stats.percentile_ms(0.99),
        stats.failed,
    )


# -- the whole run ----------------------------------------------------------------------------------------


@dataclass
class ApiBenchResult:
    database: str
    params: ApiBenchParams
    server: str
    population_seconds: float
    wrk: WrkResult
    books: Books | None
    ledger: LedgerOnly | None
    cpu_cores: dict[str, float]
    synchronous_commit: str | None
    floors: list[Floor] = field(default_factory=list)
    floor_error: str | None = None

    @property
    def server_cpu_ms_per_payment(self) -> float | None:
        """CPU time of the server processes per successful payment: unlike the rate, it does not depend
        on how much of the machine other processes take."""
        cores = self.cpu_cores.get("server")
        if cores is None or not self.wrk.payments_per_s:
            return None
        return round(cores / self.wrk.payments_per_s * 1000, 2)

    def summary(self) -> dict[str, Any]:
        w = self.wrk
        ratio = None
        if self.ledger is not None and self.ledger.per_second:
            ratio = round(w.payments_per_s / self.ledger.per_second, 3)
        return {
            "benchmark": "api",
            "database": self.database,
            "server": self.server,
            "requests_per_s": round(w.requests_per_s, 1),
            "payments_per_s": round(w.payments_per_s, 1),
            "p50_ms": w.latency_ms.get("p50"),
            "p99_ms": w.latency_ms.get("p99"),
            "p999_ms": w.latency_ms.get("p999"),
            "max_ms": w.latency_ms.get("max"),
            "requests": w.requests,
            "succeeded": w.succeeded,
            "failed": w.failed,
            "statuses": {str(k): v for k, v in sorted(w.statuses.items())},
            "kinds": w.kinds,
            "socket_errors": w.socket_errors,
            "seconds": round(w.seconds, 2),
            "ledger_transfers_per_s": None if self.ledger is None else round(self.ledger.per_second, 1),
            "ledger_p50_ms": None if self.ledger is None else round(self.ledger.p50_ms, 2),
            "ledger_p99_ms": None if self.ledger is None else round(self.ledger.p99_ms, 2),
            "ledger_clients": None if self.ledger is None else self.ledger.clients,
            "api_over_ledger": ratio,
            "floors": {floor.name: floor.summary() for floor in self.floors},
            "floor_error": self.floor_error,
            "api_over_floor": {
                floor.name: round(w.payments_per_s / floor.per_second, 3)
                for floor in self.floors
                if floor.per_second
            },
            "books_ok": None if self.books is None else self.books.ok,
            "ledger_verified": None if self.books is None else self.books.verified,
            "server_succeeded": None if self.books is None else self.books.server_succeeded,
            "new_payment_transfers": None if self.books is None else self.books.new_payment_transfers,
            "in_flight_at_stop": None if self.books is None else self.books.wrk_unseen,
            "cpu_cores": self.cpu_cores,
            "server_cpu_ms_per_payment": self.server_cpu_ms_per_payment,
            "population_seconds": round(self.population_seconds, 1),
            "synchronous_commit": self.synchronous_commit,
            **{k: v for k, v in asdict(self.params).items() if k != "ledger_clients"},
        }


def _is_postgresql(database_url: str) -> bool:
    return make_url(normalise_url(database_url)).get_backend_name() == "postgresql"


def _synchronous_commit(db: Database) -> str | None:
    if not db.is_postgresql:
        return None
    with db.read() as conn:
        return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def run_api_bench(
    params: ApiBenchParams,
    *,
    database_url: str | None,
    url: str | None,
    script: Path,
    wrk: str,
    progress_factory: Callable[[str, int], Progress],
    log: Log,
    keep: bool = False,
) -> ApiBenchResult:
    """Start a server on a scratch database (or use `url`), populate, drive, check; then the ledger alone.

    With `url`, `database_url` is the database that server uses (for the books; without it they are not
    checked) and no scratch database is made."""
    if not script.is_file():
        raise BenchError(f"the wrk script {script} is missing (run from a source checkout or give --script)")
    if url is not None:
        check_loopback(url)
    with tempfile.TemporaryDirectory(prefix="qianbao-bench-api-") as tmp:
        work_dir = Path(tmp)
        if url is not None:
            server = Server(url.rstrip("/"), None, None)
            result = _drive(params, server, database_url, script, wrk, work_dir, progress_factory, log)
        else:
            from qianbao.benchmarks.scratch import scratch_database

            if database_url is None:
                raise BenchError("give --database-url (the database server to make a scratch database on)")
            with scratch_database(database_url, keep=keep, prefix="qianbao_bench_api") as scratch:
                log(f"scratch database {make_url(scratch).database}; starting the server")
                with started_server(scratch, params.workers, work_dir) as server:
                    try:
                        result = _drive(params, server, scratch, script, wrk, work_dir, progress_factory, log)
                    except BenchError as exc:
                        assert server.log_path is not None  # noqa: S101 - a started server has a log
                        raise BenchError(
                            f"{exc}\nthe server's log ends with:\n{tail(server.log_path)}"
                        ) from None
        if params.floor_s and database_url is not None and not _is_postgresql(database_url):
            log("floors skipped: they run on PostgreSQL")
        elif params.floor_s and database_url is not None:
            lines = (work_dir / "population.tsv").read_text().splitlines()
            try:
                result.floors = run_floors(
                    params, database_url, lines, script=script, wrk=wrk, work_dir=work_dir, log=log
                )
            except (BenchError, OSError, SQLAlchemyError) as exc:
                # The payments were measured and their books checked: report that, and why no floors.
                result.floor_error = str(exc)
                log(f"floors failed: {exc}")
        if params.ledger_transfers and database_url is not None:
            clients = params.ledger_clients or params.connections
            log(f"ledger engine alone: {params.ledger_transfers:,} transfers, {clients} clients")
            progress = progress_factory("ledger engine alone", params.ledger_transfers)
            result.ledger = ledger_only(database_url, params.ledger_transfers, clients, progress)
        return result


def _drive(
    params: ApiBenchParams,
    server: Server,
    database_url: str | None,
    script: Path,
    wrk: str,
    work_dir: Path,
    progress_factory: Callable[[str, int], Progress],
    log: Log,
) -> ApiBenchResult:
    http = LoopbackHttp(server.url)
    wait_healthy(http, 30)
    rng = random.Random(params.seed)  # noqa: S311 - a benchmark's request mix
    label = "population (sign-up, funding, merchants)"
    population = create_population(http, params, progress_factory(label, params.payers + params.merchants))
    log(
        f"population: {len(population.payers)} payers, {len(population.merchants)} merchants"
        f" in {population.seconds:.0f} s"
    )
    population_file = work_dir / "population.tsv"
    population_file.write_text("\n".join(request_lines(population, params, rng)) + "\n")
    run_id = secrets.token_hex(4)
    db = None if database_url is None else Database(database_url, pool_size=2)
    try:
        sync_commit = None if db is None else _synchronous_commit(db)
        if params.warmup_s:
            log(f"warm-up: {params.warmup_s} s")
            warm_prefix = f"bench-{run_id}-warm"
            run_wrk(
                wrk_command(wrk, script, server.url, population_file, warm_prefix, params, params.warmup_s)
            )
            if db is not None:
                settle(db, warm_prefix)
        before = 0 if db is None else payment_transfers(db)
        prefix = f"bench-{run_id}-run"
        log(f"measured run: {params.duration_s} s, {params.connections} connections")
        cpu_before = cpu_sample(server.pid)
        started = time.perf_counter()
        measured, _raw = run_wrk(
            wrk_command(wrk, script, server.url, population_file, prefix, params, params.duration_s)
        )
        window = time.perf_counter() - started
        cores = cpu_cores(cpu_before, cpu_sample(server.pid), window, server=server.pid is not None)
        books = None if db is None else check_books(db, prefix, before, measured, params.connections)
        return ApiBenchResult(
            database="unknown" if db is None else db.dialect,
            params=params,
            server=server.url if server.pid is None else f"started, {params.workers} worker(s)",
            population_seconds=population.seconds,
            wrk=measured,
            books=books,
            ledger=None,
            cpu_cores=cores,
            synchronous_commit=sync_commit,
        )
    finally:
        if db is not None:
            db.dispose()

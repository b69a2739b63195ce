"""The floors of `qianbao bench api`: the same requests against `api_floor_app`, measured in the same run.

Each floor replays the bench's request file (same bodies, headers, connections, wrk script) against one
endpoint of the floor server, on its own scratch database. Together they say how far this machine's
stack (uvicorn, FastAPI, SQLAlchemy, psycopg, PostgreSQL, on these cores) can go at all:
  - `http`: the framework with no database;
  - `transaction`: one database transaction per request, one INSERT in it, in the thread pool like
    qianbao's endpoints;
  - `async`: the same on the event loop with psycopg's async connections (no threads, no SQLAlchemy);
  - `group`: the same INSERT, with requests sharing group-committed transactions.
A payment costs more than any floor; the ratios to them show where the distance is.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from qianbao.benchmarks.api_floor_app import DATABASE_ENV, STATEMENTS_ENV, floor_metadata, floor_writes
from qianbao.benchmarks.api_params import ApiBenchParams, BenchError
from qianbao.benchmarks.api_server import free_port, started_process
from qianbao.benchmarks.api_wrk import WrkResult, cpu_cores, cpu_sample, run_wrk, wrk_command
from qianbao.store.database import Database

FLOORS = ("http", "transaction", "async", "group")
# Which floors write a row per successful request (checked after the run).
WRITING = frozenset({"transaction", "async", "group"})


@dataclass(frozen=True)
class Floor:
    name: str
    wrk: WrkResult
    server_cores: float | None
    rows_written: int | None

    @property
    def per_second(self) -> float:
        return self.wrk.payments_per_s

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.server_cores is None or not self.per_second:
            return None
        return round(self.server_cores / self.per_second * 1000, 3)

    def summary(self) -> dict[str, Any]:
        return {
            "per_s": round(self.per_second, 1),
            "p50_ms": self.wrk.latency_ms.get("p50"),
            "p99_ms": self.wrk.latency_ms.get("p99"),
            "p999_ms": self.wrk.latency_ms.get("p999"),
            "answered_201": self.wrk.succeeded,
            "other_answers": self.wrk.failed,
            "server_cpu_ms_per_request": self.cpu_ms_per_request,
        }


def floor_lines(lines: list[str], floor: str) -> list[str]:
    """The bench's request templates with their path replaced by the floor's endpoint."""
    out = []
    for line in lines:
        kind, _path, rest = line.split("\t", 2)
        out.append("\t".join((kind, f"/floor/{floor}", rest)))
    return out


def floor_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "qianbao.benchmarks.api_floor_app:app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip


def run_floors(
    params: ApiBenchParams,
    database_url: str,
    request_lines: list[str],
    *,
    script: Path,
    wrk: str,
    work_dir: Path,
    log: Any,
) -> list[Floor]:
    """Start the floor server on a scratch database next to `database_url` and measure each floor."""
    from qianbao.benchmarks.scratch import scratch_database

    floors = []
    with scratch_database(database_url, prefix="qianbao_bench_floor") as scratch:
        db = Database(scratch, pool_size=2)
        try:
            floor_metadata.create_all(db.engine)
            port = free_port()
            env = {DATABASE_ENV: scratch, STATEMENTS_ENV: str(params.floor_statements)}
            with started_process(floor_command(port, params.workers), env, work_dir, "floor") as server:
                for floor in FLOORS:
                    log(
                        f"floor {floor}: {params.floor_s} s, {params.connections} connections,"
                        f" {params.floor_statements} statement(s) per request"
                    )
                    requests = work_dir / f"floor-{floor}.tsv"
                    requests.write_text("\n".join(floor_lines(request_lines, floor)) + "\n")
                    prefix = f"floor-{floor}-"
                    command = wrk_command(wrk, script, server.url, requests, prefix, params, params.floor_s)
                    before = cpu_sample(server.pid)
                    started = time.perf_counter()
                    result, _raw = run_wrk(command)
                    window = time.perf_counter() - started
                    cores = cpu_cores(before, cpu_sample(server.pid), window, server=True).get("server")
                    rows = (
                        _rows_settled(db, prefix, result, per_request=params.floor_statements)
                        if floor in WRITING
                        else None
                    )
                    floors.append(Floor(floor, result, cores, rows))
        finally:
            db.dispose()
    return floors


def _rows_settled(
    db: Database, prefix: str, result: WrkResult, seconds: float = 10, *, per_request: int = 1
) -> int:
    """Rows the floor wrote for this run, once the requests wrk left in flight have finished; every 201
    wrk saw must be `per_request` rows (a floor that answers without writing would flatter the design)."""
    wanted = result.succeeded * per_request
    deadline = time.monotonic() + seconds
    while True:
        with db.read() as conn:
            rows = int(
                conn.execute(
                    select(func.count()).where(floor_writes.c.key.startswith(prefix, autoescape=True))
                ).scalar_one()
            )
        if rows >= wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if rows < wanted:
        name = prefix.strip("-")
        raise BenchError(
            f"the {name} floor answered {result.succeeded} times 201 but wrote {rows} rows, not {wanted}"
        )
    return rows

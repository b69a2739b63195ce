"""`qianbao bench …`: throughput and latency, always with a baseline measured in the same run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qianbao.config import Settings

console = Console(stderr=False)
FLOOR_LABELS = {
    "http": "framework only",
    "transaction": "1 transaction/request",
    "async": "1 async transaction/request",
    "group": "group commit",
}
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@contextmanager
def progress_bars() -> Iterator[tuple[Progress, ProgressFactory]]:
    """Rich progress bars, and a factory giving each stage of a bench its own bar (label, total)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:

        def factory(label: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(label, total=total)
            return lambda done: progress.update(task, completed=done)

        yield progress, factory


bench_app = typer.Typer(help="Benchmarks (the last output line is one JSON object).", no_args_is_help=True)


@bench_app.command("ledger")
def bench_ledger(
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Server (or SQLite path) to benchmark on.")
    ] = None,
    transfers: Annotated[int, typer.Option(min=1, help="Transfers through the engine.")] = 200_000,
    accounts: Annotated[int, typer.Option(min=2, help="Wallet accounts.")] = 10_000,
    clients: Annotated[
        int, typer.Option(min=1, help="Concurrent clients, one transfer in flight each.")
    ] = 1024,
    hot_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of transfers paying one hot merchant account.")
    ] = 0.0,
    batch_max: Annotated[int, typer.Option(min=1, help="Most transfers per database transaction.")] = 8192,
    window_ms: Annotated[
        float, typer.Option(min=0.0, help="How long a batch waits for more transfers.")
    ] = 1.0,
    baseline_transfers: Annotated[
        int, typer.Option(min=1, help="Transfers through the plain design.")
    ] = 30_000,
    baseline_connections: Annotated[
        int,
        typer.Option(min=0, help="Connections the plain design may use (0: 32 on PostgreSQL, 1 on SQLite)."),
    ] = 0,
    keep: Annotated[bool, typer.Option(help="Keep the scratch database afterwards.")] = False,
) -> None:
    """Group-commit ledger engine vs. one transaction per transfer, on a fresh scratch database."""
    from qianbao.benchmarks.ledger import LedgerBenchParams, run_ledger_bench
    from qianbao.benchmarks.scratch import scratch_database

    url = database_url or Settings().database_url
    params = LedgerBenchParams(
        transfers=transfers, accounts=accounts, clients=clients, hot_share=hot_share, batch_max=batch_max,
        window_ms=window_ms, baseline_transfers=baseline_transfers, baseline_connections=baseline_connections,
    )  # fmt: skip
    with progress_bars() as (_progress, factory), scratch_database(url, keep=keep) as scratch:
        result = run_ledger_bench(scratch, params, factory)
    summary = result.summary()
    table = Table(title=f"ledger benchmark on {result.database}")
    for column in ("design", "transfers/s", "p50 ms", "p99 ms", "transfers", "declined"):
        table.add_column(column, justify="right")
    table.add_row(
        "group commit", f"{summary['transfers_per_s']:,.0f}",
        f"{summary['p50_ms']:.2f}", f"{summary['p99_ms']:.2f}",
        f"{result.engine.transfers:,}", f"{result.engine.failed:,}",
    )  # fmt: skip
    table.add_row(
        f"plain ({result.baseline_connections} conn)", f"{summary['baseline_transfers_per_s']:,.0f}",
        f"{summary['baseline_p50_ms']:.2f}", f"{summary['baseline_p99_ms']:.2f}",
        f"{result.baseline.transfers:,}", f"{result.baseline.failed:,}",
    )  # fmt: skip
    console.print(table)
    console.print(
        f"ratio {summary['ratio']}x · average batch {summary['avg_batch']} · "
        f"clients {clients} · hot share {hot_share} · ledger verified: {result.verified}"
    )
    print(json.dumps(summary))  # noqa: T201 - the machine-readable last line


@bench_app.command("api")
def bench_api(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Database server for the scratch database of the started server (PostgreSQL recommended);"
            " with --url: the database that server uses, to check the books.",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Drive a server already running on this machine instead of starting one."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes of the started server.")] = 2,
    connections: Annotated[int, typer.Option(min=1, help="Concurrent HTTP connections (wrk -c).")] = 64,
    threads: Annotated[int, typer.Option(min=1, help="wrk threads (-t).")] = 1,
    duration: Annotated[int, typer.Option(min=1, help="Seconds of the measured run.")] = 30,
    warmup: Annotated[int, typer.Option(min=0, help="Seconds of warm-up before it (not counted).")] = 5,
    payers: Annotated[int, typer.Option(min=2, help="Paying users (each also receives P2P).")] = 400,
    merchants: Annotated[int, typer.Option(min=1, help="Merchants paid by static QR code.")] = 20,
    qr_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests that are QR payments (rest: P2P).")
    ] = 0.5,
    amount_min: Annotated[int, typer.Option(min=1, help="Smallest amount, fen.")] = 100,
    amount_max: Annotated[int, typer.Option(min=1, help="Largest amount, fen.")] = 1000,
    ledger_transfers: Annotated[
        int, typer.Option(min=0, help="Transfers for the ledger-engine-alone rate (0: skip it).")
    ] = 60_000,
    ledger_clients: Annotated[
        int, typer.Option(min=0, help="Its concurrent clients (0: as many as --connections).")
    ] = 0,
    floor_seconds: Annotated[
        int,
        typer.Option(
            min=0,
            help="Seconds of each floor: the same requests against a no-payment server of the same stack"
            " (framework only; one transaction each, threaded or async; group commit). 0: skip them.",
        ),
    ] = 10,
    floor_statements: Annotated[
        int,
        typer.Option(min=1, max=100, help="INSERT statements per request in the floors that write."),
    ] = 1,
    script: Annotated[
        Path | None, typer.Option(help="The wrk Lua script (default: bench/api_payments.lua).")
    ] = None,
    wrk: Annotated[str | None, typer.Option(help="The wrk executable (default: wrk on PATH).")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the scratch database afterwards.")] = False,
) -> None:
    """Payments per second through the HTTP API (P2P and QR, unique Idempotency-Keys) with wrk, checked
    against the ledger, and the ledger engine's own rate measured in the same run.

    Needs wrk (`apt-get install -y wrk`). Starts `qianbao serve` on a scratch database unless --url is
    given; what the bench changes from a default server is in docs/benchmarks.md."""
    from qianbao.benchmarks.api import run_api_bench
    from qianbao.benchmarks.api_params import DEFAULT_SCRIPT, ApiBenchParams, BenchError
    from qianbao.benchmarks.api_wrk import find_wrk

    if amount_max < amount_min:
        raise typer.BadParameter("--amount-max must be at least --amount-min")
    params = ApiBenchParams(
        workers=workers, connections=connections, threads=threads, duration_s=duration, warmup_s=warmup,
        payers=payers, merchants=merchants, qr_share=qr_share, amount_min=amount_min, amount_max=amount_max,
        ledger_transfers=ledger_transfers, ledger_clients=ledger_clients, floor_s=floor_seconds,
        floor_statements=floor_statements,
    )  # fmt: skip
    if database_url is None and url is None:
        database_url = Settings().database_url
    try:
        wrk_path = find_wrk(wrk)
        with progress_bars() as (progress, factory):
            result = run_api_bench(
                params, database_url=database_url, url=url, script=script or DEFAULT_SCRIPT, wrk=wrk_path,
                progress_factory=factory, log=progress.console.print, keep=keep,
            )  # fmt: skip
    except BenchError as exc:
        console.print(f"[red]bench api:[/] {exc}")
        raise typer.Exit(1) from None
    summary = result.summary()
    table = Table(title=f"API benchmark on {result.database} ({result.server})")
    for column in ("", "per s", "p50 ms", "p99 ms", "p99.9 ms", "count"):
        table.add_column(column, justify="right")
    w = result.wrk
    table.add_row(
        "requests", f"{w.requests_per_s:,.0f}", f"{w.latency_ms['p50']:.1f}", f"{w.latency_ms['p99']:.1f}",
        f"{w.latency_ms['p999']:.1f}", f"{w.requests:,}",
    )  # fmt: skip
    table.add_row("successful payments", f"{w.payments_per_s:,.0f}", "", "", "", f"{w.succeeded:,}")
    if result.ledger is not None:
        table.add_row(
            f"ledger engine alone ({result.ledger.clients} clients)", f"{result.ledger.per_second:,.0f}",
            f"{result.ledger.p50_ms:.1f}", f"{result.ledger.p99_ms:.1f}", "", f"{result.ledger.transfers:,}",
        )  # fmt: skip
    for floor in result.floors:
        table.add_row(
            f"floor: {FLOOR_LABELS[floor.name]}", f"{floor.per_second:,.0f}",
            f"{floor.wrk.latency_ms['p50']:.1f}", f"{floor.wrk.latency_ms['p99']:.1f}",
            f"{floor.wrk.latency_ms['p999']:.1f}", f"{floor.wrk.succeeded:,}",
        )  # fmt: skip
    console.print(table)
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(w.statuses.items()))
    console.print(f"answers by status: {statuses} · kinds: {w.kinds} · socket errors: {w.socket_errors}")
    for status, sample in sorted(w.samples.items()):
        console.print(f"  a {status} answer: {sample[:300]}", markup=False, soft_wrap=True)
    if summary["api_over_ledger"] is not None:
        console.print(f"API / ledger engine alone: {summary['api_over_ledger']}")
    console.print(f"CPU cores used during the run: {result.cpu_cores}")
    if result.server_cpu_ms_per_payment is not None:
        console.print(f"server CPU per successful payment: {result.server_cpu_ms_per_payment} ms")
    if result.floor_error is not None:
        console.print(f"[red]floors not measured:[/] {result.floor_error}", markup=True)
    for floor in result.floors:
        console.print(
            f"floor {floor.name}: server CPU per request {floor.cpu_ms_per_request} ms;"
            f" API / this floor: {summary['api_over_floor'].get(floor.name)}"
        )
    books = result.books
    if books is None:
        console.print("books not checked (give --database-url with --url)")
    else:
        console.print(
            f"books: {books.server_succeeded:,} answered 201 by the server, {books.new_payment_transfers:,}"
            f" new ledger payment transfers, {books.wrk_unseen} in flight when wrk stopped;"
            f" ledger verified: {books.verified}"
        )
        for problem in books.problems:
            console.print(f"[red]books:[/] {problem}")
    print(json.dumps(summary))  # noqa: T201 - the machine-readable last line
    if books is not None and not books.ok:
        raise typer.Exit(1)

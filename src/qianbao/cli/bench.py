"""`qianbao bench …`: throughput and latency, always with a baseline measured in the same run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qianbao.config import Settings

bench_app = typer.Typer(help="Benchmarks (the last output line is one JSON object).", no_args_is_help=True)
console = Console(stderr=False)


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

        with scratch_database(url, keep=keep) as scratch:
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

"""`qianbao ledger …`: verify the books, inspect an account, expire holds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qianbao.clock import rfc3339
from qianbao.config import Settings
from qianbao.store.database import Database

ledger_app = typer.Typer(help="The double-entry ledger.", no_args_is_help=True)
console = Console()

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite:///PATH or postgresql://… (env QIANBAO_DATABASE_URL)"),
]


def _database(url: str | None) -> Database:
    settings = Settings(database_url=url) if url else Settings()
    return Database(settings.database_url)


@ledger_app.command()
def verify(database_url: DatabaseUrl = None) -> None:
    """Recompute every balance from history; exit 1 and name the accounts if anything differs."""
    from qianbao.ledger.verify import verify_ledger

    db = _database(database_url)
    try:
        with Progress(
            TextColumn("verifying accounts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("verify", total=None)
            report = verify_ledger(db, lambda done, total: progress.update(task, completed=done, total=total))
    finally:
        db.dispose()
    console.print(
        f"checked {report.accounts} accounts, {report.transfers} transfers, {report.currencies} currencies"
    )
    if report.ok:
        console.print("[green]ledger OK[/]: every balance agrees with its history; debits equal credits")
        return
    table = Table(title=f"{len(report.findings)} problem(s)", show_lines=False)
    table.add_column("kind")
    table.add_column("account / currency / transfer")
    table.add_column("detail")
    for finding in report.findings:
        table.add_row(finding.kind, finding.subject, finding.detail)
    console.print(table)
    raise typer.Exit(1)


@ledger_app.command()
def show(
    account_id: Annotated[str, typer.Argument(help="Ledger account id.")],
    database_url: DatabaseUrl = None,
    limit: Annotated[int, typer.Option(help="History rows to show.", min=1, max=100)] = 20,
) -> None:
    """Show an account's balances and its most recent history."""
    from qianbao.ledger.queries import LedgerReader

    db = _database(database_url)
    try:
        reader = LedgerReader(db)
        account = reader.get_account(account_id)
        if account is None:
            console.print(f"[red]no account[/] {account_id!r}")
            raise typer.Exit(1)
        page = reader.account_history(account_id, limit=limit)
    finally:
        db.dispose()
    console.print(
        f"[bold]{account.id}[/] {account.currency} {account.code}"
        f" ({account.normal_balance}-normal, {account.status})\n"
        f"balance {account.balance}  available {account.available}  "
        f"pending out {account.debits_pending}  pending in {account.credits_pending}"
    )
    table = Table()
    for column in ("time", "transfer", "kind", "direction", "amount", "balance after"):
        table.add_column(column)
    for entry in page.entries:
        t = entry.transfer
        table.add_row(
            rfc3339(t.created_at), t.id, t.kind, entry.direction, str(t.amount), str(entry.balance_after)
        )
    console.print(table)


@ledger_app.command()
def sweep(database_url: DatabaseUrl = None) -> None:
    """Expire every hold whose timeout has passed (the server also does this continuously)."""
    from qianbao.ledger.engine import LedgerEngine

    db = _database(database_url)
    try:
        engine = LedgerEngine(db)
        total = 0
        while (expired := engine.expire_pending()) > 0:
            total += expired
    finally:
        db.dispose()
    console.print(f"expired {total} hold(s)")

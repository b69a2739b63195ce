"""`qianbao keys …`: the data keys that encrypt personal data: their status, and rotation.

Key material comes from the same place the server takes it (`QIANBAO_MASTER_KEY`, or the key file,
`QIANBAO_KEY_FILE` or `<var dir>/keys.json`), but these commands never create it: rotating under a fresh
master key would only fail later. Nothing here prints key material, only key ids and counts.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qianbao.clock import SystemClock, rfc3339
from qianbao.config import Settings
from qianbao.security.crypto import CryptoError, KeyMaterial, load_key_material
from qianbao.security.keyring import KeyRing
from qianbao.store.database import Database

app = typer.Typer(help="Data keys for personal data: status and rotation.", no_args_is_help=True)
console = Console()

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite:///PATH or postgresql://… (env QIANBAO_DATABASE_URL)"),
]


def _settings(database_url: str | None) -> Settings:
    return Settings(database_url=database_url) if database_url else Settings()


def _material(settings: Settings) -> KeyMaterial:
    try:
        return load_key_material(
            master_key_b64=settings.master_key.get_secret_value() if settings.master_key else None,
            index_key_b64=settings.index_key.get_secret_value() if settings.index_key else None,
            key_file=settings.resolved_key_file,
            create_if_missing=False,
        )
    except CryptoError as exc:
        console.print(f"[red]error[/] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def status(database_url: DatabaseUrl = None) -> None:
    """List the data keys (id, state, dates) and how many encrypted values each one holds."""
    from qianbao.security.rotation import key_status

    db = Database(_settings(database_url).database_url)
    try:
        keys = key_status(db)
    finally:
        db.dispose()
    table = Table(title="Data keys (key material is never shown)")
    for column in ("id", "state", "created", "retired", "values"):
        table.add_column(column, justify="right" if column == "values" else "left")
    for key in keys:
        table.add_row(
            key.id,
            key.state,
            rfc3339(key.created_at),
            "" if key.retired_at is None else rfc3339(key.retired_at),
            str(key.values),
        )
    console.print(table)
    if not keys:
        console.print("no data keys yet: the server creates the first one when it starts")


@app.command()
def rotate(
    database_url: DatabaseUrl = None,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            min=0,
            help="Seconds to give running servers to load the new key before re-encrypting "
            "(default: their refresh interval plus a margin).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Values per write transaction.")] = 500,
) -> None:
    """Make a new data key active and re-encrypt every value under it, while the service runs.

    Retired keys stay in the database: backups taken before the rotation still need them."""
    from qianbao.security.rotation import DEFAULT_WAIT_S, RotationError, rotate_data_keys

    settings = _settings(database_url)
    material = _material(settings)
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        keyring = KeyRing(db, SystemClock(), material)
        try:
            keyring.cipher()  # refuses a master key that did not wrap this database's keys
        except CryptoError as exc:
            console.print(f"[red]error[/] {exc}")
            raise typer.Exit(2) from exc
        wait_s = DEFAULT_WAIT_S if wait is None else wait
        if wait_s:
            console.print(f"new key made active; waiting {wait_s:g} s for running servers to load it")
        with Progress(
            TextColumn("re-encrypting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("rotate", total=None)
            try:
                report = rotate_data_keys(
                    db,
                    keyring,
                    batch_size=batch_size,
                    wait_s=wait_s,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            except RotationError as exc:
                console.print(f"[red]rotation incomplete[/] {exc}")
                raise typer.Exit(1) from exc
    finally:
        db.dispose()
    table = Table(title=f"Re-encrypted under {report.new_key_id}")
    for column in ("column", "re-encrypted", "changed meanwhile", "unreadable"):
        table.add_column(column, justify="left" if column == "column" else "right")
    for label, counts in report.columns.items():
        table.add_row(label, str(counts.reencrypted), str(counts.conflicts), str(len(counts.unreadable)))
    console.print(table)
    console.print(
        f"active key [bold]{report.new_key_id}[/]; {report.reencrypted} value(s) re-encrypted in "
        f"{report.passes} pass(es)."
    )
    console.print(f"retired keys are kept (backups need them): {', '.join(report.retired_key_ids) or '-'}")
    if report.unreadable:
        for label, counts in report.columns.items():
            for row_key in counts.unreadable:
                console.print(f"[red]unreadable[/] {label} row {row_key}")
        raise typer.Exit(1)

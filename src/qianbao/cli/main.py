"""`qianbao`: serve the platform, migrate the database, check the ledger, run benchmarks."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.console import Console

from qianbao.cli.bench import bench_app
from qianbao.cli.errors import app as errors_app
from qianbao.cli.keys import app as keys_app
from qianbao.cli.ledger import ledger_app
from qianbao.cli.operators import app as operators_app
from qianbao.cli.qr import app as qr_app
from qianbao.cli.worker import worker
from qianbao.config import Environment, Settings
from qianbao.errors import QianbaoError

app = typer.Typer(
    help="qianbao digital wallet platform.", no_args_is_help=True, pretty_exceptions_enable=False
)
db_app = typer.Typer(help="Database schema: upgrade and inspect migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")
app.add_typer(bench_app, name="bench")
app.add_typer(errors_app, name="errors")
app.add_typer(keys_app, name="keys")
app.add_typer(operators_app, name="operators")
app.add_typer(qr_app, name="qr")
app.command()(worker)
console = Console()

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite:///PATH or postgresql://… (env QIANBAO_DATABASE_URL)"),
]


def settings_with(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


# What the app reads of the options `serve` takes: the address it listens on is also the OpenAPI
# document's `servers` and the API docs' connect-src, unless QIANBAO_PUBLIC_URL names another.
HANDED_DOWN = ("database_url", "env", "host", "port")


def hand_down(settings: Settings) -> None:
    """The app is built by uvicorn (in each worker process) from the environment, not from these
    settings: put the effective values of the options there, so that it sees what the server does."""
    for name in HANDED_DOWN:
        os.environ[f"QIANBAO_{name.upper()}"] = str(getattr(settings, name))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (env QIANBAO_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env QIANBAO_PORT).")] = None,
    database_url: DatabaseUrl = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (env QIANBAO_WORKERS).")] = None,
    env: Annotated[Environment | None, typer.Option(help="sandbox or production (env QIANBAO_ENV).")] = None,
) -> None:
    """Migrate the database, seed sandbox demo data on first start, and serve the API."""
    import uvicorn

    from qianbao.api import http_protocol
    from qianbao.bootstrap import build_identity
    from qianbao.clock import SystemClock
    from qianbao.demo import DEMO_PASSWORD, DEMO_PIN, seed_demo_data
    from qianbao.ledger.engine import LedgerEngine
    from qianbao.money import Money, format_money
    from qianbao.store import migrate
    from qianbao.store.database import Database

    settings = settings_with(host=host, port=port, database_url=database_url, workers=workers, env=env)
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        migrate.upgrade(db)
        console.print(f"[green]database[/] {db.dialect} at schema revision {migrate.current_revision(db)}")
        if settings.is_sandbox and settings.seed_demo_data:
            identity = build_identity(settings, db, SystemClock(), LedgerEngine(db))
            try:
                demo_users = seed_demo_data(identity)
            finally:
                identity.limiter.close()
            console.print("[bold]Sandbox demo users[/] (sign in with POST /v1/sessions):")
            for u in demo_users:
                balance = format_money(Money(u.opening_balance, "CNY"))
                console.print(
                    f"  {u.label}: phone {u.phone}, password {DEMO_PASSWORD}, payment PIN {DEMO_PIN},"
                    f" main wallet {u.wallet_id} ({balance})",
                    soft_wrap=True,
                )
                if u.merchant is not None:
                    console.print(
                        f"    owns the shop {u.merchant[0]}: merchant {u.merchant_id}", soft_wrap=True
                    )
    finally:
        db.dispose()
    hand_down(settings)
    console.print(
        f"serving on http://{settings.host}:{settings.port} ({settings.workers} worker(s), {settings.env})"
    )
    uvicorn.run(
        "qianbao.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        # Request heads bounded in size and header count (QIANBAO_MAX_HEADER_BYTES / _COUNT).
        http=http_protocol.IMPORT_PATH,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1; the app believes only
        # QIANBAO_TRUSTED_PROXIES (qianbao.api.client_address).
        proxy_headers=False,
    )


@db_app.command("upgrade")
def db_upgrade(
    database_url: DatabaseUrl = None,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply schema migrations (safe to run while other processes start: they take turns)."""
    from qianbao.store import migrate
    from qianbao.store.database import Database

    db = Database(settings_with(database_url=database_url).database_url)
    try:
        migrate.upgrade(db, revision)
        console.print(f"schema at revision {migrate.current_revision(db)} ({db.dialect})")
    finally:
        db.dispose()


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Show the schema revision of the database and the newest one this version knows."""
    from qianbao.store import migrate
    from qianbao.store.database import Database

    db = Database(settings_with(database_url=database_url).database_url)
    try:
        current = migrate.current_revision(db)
    finally:
        db.dispose()
    head = migrate.head_revision()
    console.print(f"current: {current or '(empty database)'}   head: {head}")
    if current != head:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except QianbaoError as exc:
        console.print(f"[red]error[/] {exc.code}: {exc.detail}")
        raise SystemExit(2) from exc

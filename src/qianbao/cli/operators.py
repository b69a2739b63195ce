"""`qianbao operators`: create, list and disable staff accounts (operators sign in with password + TOTP).

Operators are created only here, on the server, never over HTTP: whoever can run this command already
controls the deployment, while an admin creating accounts over the API could give themselves a second
identity and approve their own maker-checker requests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from qianbao.clock import SystemClock, rfc3339
from qianbao.config import Settings
from qianbao.errors import QianbaoError
from qianbao.identity import operators
from qianbao.identity.context import IdentityContext
from qianbao.security import audit

app = typer.Typer(help="Operators (staff accounts): create, list, disable.", no_args_is_help=True)
console = Console()

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite:///PATH or postgresql://… (env QIANBAO_DATABASE_URL)"),
]
CLI_ACTOR = audit.Actor("system", "cli")


@contextmanager
def identity_context(database_url: str | None) -> Iterator[IdentityContext]:
    """The identity services on a migrated database, as the server builds them."""
    from qianbao.bootstrap import build_identity
    from qianbao.ledger.engine import LedgerEngine
    from qianbao.store import migrate
    from qianbao.store.database import Database

    overrides: dict[str, Any] = {} if database_url is None else {"database_url": database_url}
    settings = Settings(**overrides)
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        migrate.upgrade(db)
        clock = SystemClock()
        ctx = build_identity(settings, db, clock, LedgerEngine(db, clock))
        try:
            ctx.keys.ensure_active_key()
            yield ctx
        finally:
            ctx.limiter.close()
    finally:
        db.dispose()


def _fail(exc: QianbaoError) -> typer.Exit:
    reasons = exc.extra.get("reasons")
    suffix = f" ({', '.join(reasons)})" if isinstance(reasons, list) else ""
    console.print(f"[red]error[/] {exc.code}: {exc.detail}{suffix}")
    return typer.Exit(2)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@app.command("create")
def create(
    username: Annotated[str, typer.Argument(help="Sign-in name: lower-case letters, digits, . _ -")],
    name: Annotated[str, typer.Option("--name", help="Display name, shown in the audit log and UI.")],
    role: Annotated[
        list[str],
        typer.Option("--role", help=f"Repeat for several: {', '.join(operators.ROLES)}."),
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an operator. Prints the TOTP secret and its otpauth:// URI ONCE: add it to an authenticator
    app now; sign-in needs a code from it."""
    password = _read_password(password_stdin)
    try:
        with identity_context(database_url) as ctx:
            created = operators.create_operator(
                ctx, username=username, display_name=name, password=password, roles=role, actor=CLI_ACTOR
            )
    except QianbaoError as exc:
        raise _fail(exc) from exc
    op = created.operator
    console.print(
        f"[green]operator created[/] {op.username} ({op.id}) roles: {', '.join(op.roles)}", soft_wrap=True
    )
    console.print(
        Panel(
            "Add this to the operator's authenticator app now; it is not shown again.",
            title="TOTP (mandatory second factor)",
        )
    )
    console.print(f"secret: {created.totp_secret}", soft_wrap=True, highlight=False)
    console.print(f"uri: {created.provisioning_uri}", soft_wrap=True, highlight=False)


@app.command("list")
def list_(database_url: DatabaseUrl = None) -> None:
    """Every operator with roles and status."""
    try:
        with identity_context(database_url) as ctx:
            found = operators.list_operators(ctx)
    except QianbaoError as exc:
        raise _fail(exc) from exc
    table = Table(title="Operators")
    for column in ("username", "name", "roles", "status", "created", "id"):
        table.add_column(column)
    for op in found:
        status = "[green]active[/]" if op.status == "active" else f"[red]{op.status}[/]"
        table.add_row(
            op.username, op.display_name, ", ".join(op.roles), status, rfc3339(op.created_at), op.id
        )
    console.print(table)


@app.command("disable")
def disable(
    username: Annotated[str, typer.Argument(help="The operator to disable.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Disable an operator: sign-in is refused and their sessions end at once."""
    try:
        with identity_context(database_url) as ctx:
            op = operators.disable_operator(ctx, actor=CLI_ACTOR, username=username.strip().lower())
    except QianbaoError as exc:
        raise _fail(exc) from exc
    console.print(f"[yellow]operator disabled[/] {op.username} ({op.id})")

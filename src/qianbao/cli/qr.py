"""`qianbao qr …`: EMVCo merchant-presented QR payloads."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from qianbao.errors import InvalidInput
from qianbao.payments import emvco

app = typer.Typer(help="EMVCo merchant-presented QR codes.", no_args_is_help=True)


@app.callback()
def qr() -> None:
    """EMVCo merchant-presented QR codes (a group, so that `qr parse` stays a subcommand)."""


@app.command("parse")
def parse(payload: Annotated[str, typer.Argument(help="The QR code's text, exactly as scanned.")]) -> None:
    """Decode any EMVCo merchant-presented payload and print its fields as JSON."""
    try:
        parsed = emvco.parse(payload)
    except InvalidInput as exc:
        typer.echo(f"error {exc.code} ({exc.extra.get('reason')}): {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(parsed.as_json(), ensure_ascii=False, indent=2))

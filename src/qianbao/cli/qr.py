"""`qianbao qr …`: EMVCo merchant-presented QR payloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from qianbao.errors import InvalidInput
from qianbao.payments import emvco
from qianbao.payments.qr_images import decode_qr_image

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


@app.command("decode")
def decode(
    image: Annotated[
        Path, typer.Argument(help="A photo or screenshot of a QR code.", exists=True, dir_okay=False)
    ],
) -> None:
    """Read the QR code in an image and print its text and EMVCo fields as JSON."""
    try:
        payload = decode_qr_image(image.read_bytes())
        parsed = emvco.parse(payload)
    except InvalidInput as exc:
        typer.echo(f"error {exc.code} ({exc.extra.get('reason')}): {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps({"payload": payload, **parsed.as_json()}, ensure_ascii=False, indent=2))

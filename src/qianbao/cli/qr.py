"""`qianbao qr …`: EMVCo merchant-presented QR payloads, and the customer's payment codes."""

from __future__ import annotations

import binascii
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from qianbao.errors import InvalidInput
from qianbao.payments import emvco, payment_code_model
from qianbao.payments.qr_images import MAX_IMAGE_BYTES, decode_qr_image

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
    """Read the QR code in an image (PNG, JPEG, WebP or GIF) and print its text and EMVCo fields as JSON."""
    try:
        with image.open("rb") as file:
            # One byte past the limit is enough for the decoder to refuse a file too large to read whole.
            payload = decode_qr_image(file.read(MAX_IMAGE_BYTES + 1))
        parsed = emvco.parse(payload)
    except InvalidInput as exc:
        typer.echo(f"error {exc.code} ({exc.extra.get('reason')}): {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps({"payload": payload, **parsed.as_json()}, ensure_ascii=False, indent=2))


@app.command("payment-code")
def payment_code(
    secret: Annotated[str, typer.Option(help="The device secret (base32) shown when codes were enabled.")],
    number: Annotated[str, typer.Option(help="The device's 7-digit number.")],
    seq: Annotated[int, typer.Option(min=0, max=9, help="The sequence digit: 0-9, one per payment.")] = 0,
) -> None:
    """Print the payment code (付款码) a device shows now: what the wallet app computes offline. Handy
    to test a till against the sandbox without a phone."""
    try:
        code = payment_code_model.payment_code(secret, number, time.time(), seq)
    except (ValueError, binascii.Error) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(code)

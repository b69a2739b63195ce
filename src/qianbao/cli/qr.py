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


# Exit codes of `qr parse` and `qr decode`, so scripts can tell a damaged code from a valid one.
EXIT_BAD_CRC = 1
EXIT_NOT_EMVCO = 2


def _print_parsed(payload: str, parsed: emvco.ParsedQr, *, with_payload: bool) -> None:
    """Print the fields as JSON; a CRC that does not hold still prints them, then exits non-zero."""
    shown = {"payload": payload, **parsed.as_json()} if with_payload else parsed.as_json()
    typer.echo(json.dumps(shown, ensure_ascii=False, indent=2))
    if not parsed.crc_ok:
        typer.echo(
            f"error: the CRC (ID 63) is {payload[-4:]!r}, the payload's is "
            f"{emvco.crc16_ccitt_false(payload[:-4])!r}: the code is damaged or was edited",
            err=True,
        )
        raise typer.Exit(EXIT_BAD_CRC)


@app.command("parse")
def parse(payload: Annotated[str, typer.Argument(help="The QR code's text, exactly as scanned.")]) -> None:
    """Decode any EMVCo merchant-presented payload and print its fields as JSON.

    Exit status: 0 when the payload is EMVCo and its CRC holds; 1 when the CRC does not hold (the fields
    are still printed); 2 when it is not an EMVCo payload at all."""
    try:
        parsed = emvco.parse(payload)
    except InvalidInput as exc:
        typer.echo(f"error {exc.code} ({exc.extra.get('reason')}): {exc.detail}", err=True)
        raise typer.Exit(EXIT_NOT_EMVCO) from exc
    _print_parsed(payload, parsed, with_payload=False)


@app.command("decode")
def decode(
    image: Annotated[
        Path, typer.Argument(help="A photo or screenshot of a QR code.", exists=True, dir_okay=False)
    ],
) -> None:
    """Read the QR code in an image (PNG, JPEG, WebP or GIF) and print its text and EMVCo fields as JSON
    (exit status as for `qr parse`)."""
    try:
        with image.open("rb") as file:
            # One byte past the limit is enough for the decoder to refuse a file too large to read whole.
            payload = decode_qr_image(file.read(MAX_IMAGE_BYTES + 1))
        parsed = emvco.parse(payload)
    except InvalidInput as exc:
        typer.echo(f"error {exc.code} ({exc.extra.get('reason')}): {exc.detail}", err=True)
        raise typer.Exit(EXIT_NOT_EMVCO) from exc
    _print_parsed(payload, parsed, with_payload=True)


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

"""Reading QR codes from pictures: our own PNGs, photo-like distortions, and hostile uploads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from qianbao.api.problems import localized_message
from qianbao.cli.main import app
from qianbao.errors import InvalidInput
from qianbao.payments.emvco import build_merchant_qr, qr_png
from qianbao.payments.qr_images import decode_qr_image

PAYLOAD = build_merchant_qr(
    merchant_id="mer_0001", name="莲花茶馆", city="杭州", mcc="5812", amount_minor=2580, order_ref="T-88",
    dynamic=True,
)  # fmt: skip


def encoded(image: Image.Image, kind: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def test_our_own_png_reads_back_exactly() -> None:
    assert decode_qr_image(qr_png(PAYLOAD)) == PAYLOAD


def test_a_photo_like_picture_still_reads() -> None:
    """Rotated, scaled down, blurred, on a grey background, saved as a lossy JPEG."""
    code = Image.open(io.BytesIO(qr_png(PAYLOAD, scale=8))).convert("L")
    canvas = Image.new("L", (code.width * 2, code.height * 2), 170)
    canvas.paste(code, (code.width // 3, code.height // 2))
    photo = (
        canvas.rotate(17, expand=True, fillcolor=170).resize((700, 700)).filter(ImageFilter.GaussianBlur(1))
    )
    assert decode_qr_image(encoded(photo, "JPEG", quality=60)) == PAYLOAD


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"not an image at all", "not_an_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not_an_image"),
        (encoded(Image.new("L", (200, 200), 255)), "no_qr_code"),
        (b"x" * (8 * 1024 * 1024 + 1), "image_too_large"),
    ],
)
def test_bad_uploads_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        decode_qr_image(data)
    assert refused.value.extra["reason"] == reason


def test_a_decompression_bomb_is_refused_before_it_expands() -> None:
    """A tiny PNG that declares 20,000 × 20,000 pixels."""
    bomb = encoded(Image.new("1", (20_000, 20_000), 1), optimize=True)
    assert len(bomb) < 1_000_000
    with pytest.raises(InvalidInput) as refused:
        decode_qr_image(bomb)
    assert refused.value.extra["reason"] == "image_too_large"


@pytest.mark.parametrize("kind", ["WEBP", "GIF"])
def test_the_other_formats_a_phone_produces_read_too(kind: str) -> None:
    assert decode_qr_image(encoded(Image.open(io.BytesIO(qr_png(PAYLOAD))).convert("RGB"), kind)) == PAYLOAD


@pytest.mark.parametrize("kind", ["TIFF", "BMP", "PCX", "SGI", "PPM"])
def test_formats_no_phone_produces_are_refused_though_pillow_reads_them(kind: str) -> None:
    """Each of these holds a readable QR code, and Pillow would open it: its decoder is not let near it."""
    picture = encoded(Image.open(io.BytesIO(qr_png(PAYLOAD))).convert("RGB"), kind)
    with pytest.raises(InvalidInput) as refused:
        decode_qr_image(picture)
    assert refused.value.extra["reason"] == "unsupported_format"
    assert kind in refused.value.detail


def test_a_postscript_file_is_refused_without_ghostscript_being_asked() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(InvalidInput) as refused:
        decode_qr_image(eps)
    assert refused.value.extra["reason"] == "unsupported_format"


def test_more_pixels_than_a_phone_photo_are_refused_before_decoding() -> None:
    """5000 × 5000 (25 megapixels): above 4096 × 4096, under the 40 megapixels allowed before."""
    picture = encoded(Image.new("1", (5000, 5000), 1), optimize=True)
    assert len(picture) < 100_000
    with pytest.raises(InvalidInput) as refused:
        decode_qr_image(picture)
    assert refused.value.extra["reason"] == "image_too_large"
    # A few kilobytes: the message says pixels, not megabytes.
    shown = {
        language: localized_message("validation_error", language, 422, refused.value.user_text, None)
        for language in ("en", "zh-CN")
    }
    assert shown == {
        "en": "The picture has too many pixels. Send one of at most 4096 × 4096 pixels, such as a phone "
        "photo or a screenshot.",
        "zh-CN": "图片像素过多，请发送不超过 4096 × 4096 像素的图片，例如手机照片或截图。",
    }


def test_too_many_bytes_are_said_in_megabytes() -> None:
    with pytest.raises(InvalidInput) as refused:
        decode_qr_image(b"x" * (8 * 1024 * 1024 + 1))
    assert localized_message("validation_error", "en", 422, refused.value.user_text, None) == (
        "The picture is too large. Send one of at most 8 MiB."
    )


def test_a_twelve_megapixel_phone_photo_still_reads() -> None:
    code = Image.open(io.BytesIO(qr_png(PAYLOAD, scale=12))).convert("L")
    photo = Image.new("L", (4032, 3024), 200)
    photo.paste(code, (1500, 1000))
    assert decode_qr_image(encoded(photo, "JPEG", quality=85)) == PAYLOAD


def test_the_cli_decodes_an_image(tmp_path: Path) -> None:
    image = tmp_path / "code.png"
    image.write_bytes(qr_png(PAYLOAD))
    result = CliRunner().invoke(app, ["qr", "decode", str(image)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["payload"] == PAYLOAD and body["amount"] == {"amount": 2580, "currency": "CNY"}
    blank = tmp_path / "blank.png"
    blank.write_bytes(encoded(Image.new("L", (100, 100), 255)))
    assert CliRunner().invoke(app, ["qr", "decode", str(blank)]).exit_code == 2


def test_the_cli_refuses_what_the_api_refuses(tmp_path: Path) -> None:
    tiff = tmp_path / "code.tiff"
    tiff.write_bytes(encoded(Image.open(io.BytesIO(qr_png(PAYLOAD))).convert("RGB"), "TIFF"))
    result = CliRunner().invoke(app, ["qr", "decode", str(tiff)])
    assert result.exit_code == 2 and "unsupported_format" in result.output

"""Reading QR codes from pictures: a customer's upload or a photo of a printed merchant code.

Decoding is `zxing-cpp` (robust to rotation, scale, blur and JPEG noise); Pillow only opens the image.
Uploads are untrusted: the size in bytes and in pixels is bounded before any decoding, so a small file
that claims to be a huge image (a decompression bomb) is refused rather than expanded.
"""

from __future__ import annotations

import io
import warnings

import zxingcpp
from PIL import Image, UnidentifiedImageError

from qianbao import invalid
from qianbao.errors import InvalidInput

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # a 12-megapixel phone photo is well inside
QR_ONLY = zxingcpp.barcode_formats_from_str("QRCode")


def decode_qr_image(data: bytes) -> str:
    """The text of the first QR code in the image; InvalidInput (with a `reason`) otherwise."""
    if not data:
        raise invalid.because("image_missing", "send the image as the request body", reason="empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_large(f"images are limited to {MAX_IMAGE_BYTES // 2**20} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _too_large("the image has too many pixels")
            image.load()
    except InvalidInput:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise _too_large("the image has too many pixels") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise invalid.because(
            "not_an_image", "this is not an image we can read (PNG, JPEG, WebP…)", reason="not_an_image"
        ) from exc
    found = zxingcpp.read_barcodes(image.convert("L"), formats=QR_ONLY)
    texts = [r.text for r in found if r.valid and r.text]
    if not texts:
        raise invalid.because("no_qr_code", "no QR code was found in the image", reason="no_qr_code")
    return texts[0]


def _too_large(detail: str) -> InvalidInput:
    return invalid.because(
        "image_too_large", detail, reason="image_too_large", params={"max": MAX_IMAGE_BYTES // 2**20}
    )

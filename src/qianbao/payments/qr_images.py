"""Reading QR codes from pictures: a customer's upload or a photo of a printed merchant code.

Decoding is `zxing-cpp` (robust to rotation, scale, blur and JPEG noise); Pillow only opens the image.
Uploads are untrusted:
- only the formats a phone produces are opened (PNG and JPEG; WebP and GIF from apps and chats). Pillow
  knows some forty others (TIFF, PCX, SGI, PSD…, and EPS through Ghostscript where that is installed),
  each a decoder an attacker could aim at; they are recognised by their signature only, to say so;
- the size in bytes and in pixels is bounded before any decoding, so a small file that claims to be a huge
  image (a decompression bomb) is refused rather than expanded;
- decoding is CPU work of up to a second: the server runs it in worker threads, a few at a time
  (`decode_qr_image_in_thread`), so that it never holds up the event loop and with it every other request;
- an upload is admitted (`UploadAdmission`) before a byte of it is read: a few decode, a few more wait
  their turn, and one caller holds at most `DECODE_PER_CALLER` of these places. Further uploads are refused
  at once, unread, so neither memory (each waiting body is up to 8 MiB) nor the wait grows with the
  number of uploads sent.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import threading
import warnings
from collections import Counter
from collections.abc import Iterator

import anyio
import anyio.to_thread
import zxingcpp
from PIL import Image, UnidentifiedImageError

from qianbao import invalid
from qianbao.error_codes import user_text
from qianbao.errors import InvalidInput, RateLimited, ServiceUnavailable

MAX_IMAGE_BYTES = 8 * 1024 * 1024
# Phones save photos at 12 megapixels (4032 × 3024) by default, even those whose sensors have 48 or 50
# (they bin four pixels into one), a 16-megapixel camera at 4608 × 3456, and screenshots are 1 to 4
# megapixels: 4096 × 4096 holds them all. A QR code needs far fewer pixels; each decoded pixel costs
# about 4 bytes (RGB, then the grey copy zxing reads), so one decode holds at most about 64 MiB.
MAX_IMAGE_PIXELS = 4096 * 4096
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# Decoding is CPU-bound (Pillow and zxing release the interpreter lock while they work): more at once than
# there are cores only adds memory, and the other request threads must stay free for everything else.
DECODE_CONCURRENCY = 2
# Uploads admitted beyond those decoding, each waiting with its body in memory: with them the queue holds
# about three seconds of work (decodes of a second at most, two at a time) and at most 6 × 8 MiB of bodies.
DECODE_WAITING = 4
# One caller's share of those places, so that no single account can fill them: an app sends one picture
# and waits for its answer.
DECODE_PER_CALLER = 2
# When a refused upload may be sent again: by then the queue has moved on.
BUSY_RETRY_AFTER_S = 3
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
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _too_many_pixels(f"the image has more than {MAX_IMAGE_PIXELS:,} pixels")
            image.load()
    except InvalidInput:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise _too_many_pixels("the image has too many pixels") from exc
    except UnidentifiedImageError as exc:
        other = recognised_format(data)
        if other is not None:
            raise invalid.because(
                "unsupported_image_format",
                f"this looks like a {other} image; only PNG, JPEG, WebP and GIF are accepted",
                reason="unsupported_format",
                params={"format": other},
            ) from exc
        raise invalid.because(
            "not_an_image",
            "this is not a PNG, JPEG, WebP or GIF image that can be read",
            reason="not_an_image",
        ) from exc
    except (OSError, ValueError) as exc:
        raise invalid.because(
            "not_an_image", "the image is damaged or incomplete", reason="not_an_image"
        ) from exc
    found = zxingcpp.read_barcodes(image.convert("L"), formats=QR_ONLY)
    texts = [r.text for r in found if r.valid and r.text]
    if not texts:
        raise invalid.because("no_qr_code", "no QR code was found in the image", reason="no_qr_code")
    return texts[0]


def recognised_format(data: bytes) -> str | None:
    """A guess at the other image format `data` is in, for the message: only each format's signature check
    runs (on the first 16 bytes, as Pillow does), never its decoder. Formats with weak signatures may be
    taken for one another (a TGA for a CUR)."""
    Image.init()
    prefix = data[:16]
    for name, (_factory, accepts) in Image.OPEN.items():
        if name in ACCEPTED_FORMATS or accepts is None:
            continue
        verdict = accepts(prefix)  # a string is Pillow's "maybe, with a warning": not a clear match
        if verdict and not isinstance(verdict, str):
            return name
    return None


@functools.cache
def decode_slots() -> anyio.CapacityLimiter:
    """One limiter per process, made on first use (inside the event loop, as older anyio requires)."""
    return anyio.CapacityLimiter(DECODE_CONCURRENCY)


class UploadAdmission:
    """The uploads this process has admitted (being read, waiting for a decoding slot, or decoding), by
    caller. `admit` decides before the body is read; a process may run several event loops (tests do),
    hence the lock."""

    def __init__(self, capacity: int, per_caller: int) -> None:
        self.capacity = capacity
        self.per_caller = per_caller
        self._lock = threading.Lock()
        self._by_caller: Counter[str] = Counter()

    @property
    def admitted(self) -> int:
        return self._by_caller.total()

    @contextlib.contextmanager
    def admit(self, caller: str) -> Iterator[None]:
        """Hold one place while the block runs, or raise at once: `RateLimited` (429) when `caller`
        already holds `per_caller` places, `ServiceUnavailable` (503) when all are taken; both carry
        `retry_after`."""
        with self._lock:
            mine, full = self._by_caller[caller], self.admitted >= self.capacity
            if mine < self.per_caller and not full:
                self._by_caller[caller] += 1
        if mine >= self.per_caller:
            raise RateLimited(
                f"{mine} of your pictures are being read already: wait for their answers",
                retry_after=BUSY_RETRY_AFTER_S,
                user_text=user_text("rate_limited", "uploads_in_progress"),
            )
        if full:
            raise ServiceUnavailable(
                f"{self.capacity} pictures are being read already: send this one again in a few seconds",
                retry_after=BUSY_RETRY_AFTER_S,
                user_text=user_text("service_unavailable", "image_decoder_busy"),
            )
        try:
            yield
        finally:
            with self._lock:
                self._by_caller[caller] -= 1
                if not self._by_caller[caller]:
                    del self._by_caller[caller]


@functools.cache
def upload_admission() -> UploadAdmission:
    """One per process, shared by every request."""
    return UploadAdmission(DECODE_CONCURRENCY + DECODE_WAITING, DECODE_PER_CALLER)


async def decode_qr_image_in_thread(data: bytes) -> str:
    """`decode_qr_image` in a worker thread, at most `DECODE_CONCURRENCY` at a time (others wait their
    turn); the event loop goes on answering other requests meanwhile."""
    return await anyio.to_thread.run_sync(decode_qr_image, data, limiter=decode_slots())


def _too_large(detail: str) -> InvalidInput:
    return invalid.because(
        "image_too_large", detail, reason="image_too_large", params={"max": MAX_IMAGE_BYTES // 2**20}
    )


def _too_many_pixels(detail: str) -> InvalidInput:
    """Few bytes, many pixels: the message says pixels (the `reason` stays `image_too_large`)."""
    side = math.isqrt(MAX_IMAGE_PIXELS)
    return invalid.because(
        "image_too_many_pixels", detail, reason="image_too_large", params={"size": f"{side} × {side}"}
    )

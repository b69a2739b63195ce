"""Request guards applied to every route.

NUL characters: PostgreSQL text cannot hold them, so an id or field with one would fail deep in a query
(a 500). They are never valid in qianbao input, so they are refused at the door: in the path as
`not_found` (no object has such an id), in the query string or JSON body as `validation_error`.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from fastapi import Request

from qianbao import invalid
from qianbao.api.body_limits import is_image_upload
from qianbao.errors import NotFound


async def refuse_nul_characters(request: Request) -> None:
    if "\x00" in request.url.path or b"\x00" in unquote_to_bytes(request.scope.get("raw_path", b"") or b""):
        raise NotFound("no such resource")
    if b"%00" in request.url.query.encode().lower() or "\x00" in request.url.query:
        raise invalid.because("nul_character", "the query string must not contain NUL characters")
    content_type = request.headers.get("content-type", "application/json")
    if not content_type.startswith("application/json") or is_image_upload(request):
        # Binary uploads (images) are checked by their own readers, and read only once admitted
        # (`qr_images.UploadAdmission`), whatever Content-Type they claim.
        return
    body = await request.body()
    if b"\\u0000" in body or b"\x00" in body:
        raise invalid.because("nul_character", "text must not contain NUL characters")

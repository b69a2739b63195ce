"""Request bodies have a size limit per route, enforced before they are read whole.

JSON bodies are small (`QIANBAO_MAX_BODY_BYTES`, 64 KiB); only the QR image upload takes more
(`QIANBAO_MAX_IMAGE_UPLOAD_BYTES`, 8 MiB). A declared `Content-Length` over the limit is answered
`413 payload_too_large` at once, without reading a byte of the body. A body sent without one (chunked) is
counted as it streams in: past the limit the application gets no more of it, and whatever it was doing,
the answer is the same 413, and the connection is closed after it. Memory stays bounded whatever the
client sends. Likewise any answer given before the body was read whole (an upload refused before it is
read, below) closes the connection: the server says so (`Connection: close`), as HTTP asks, rather than
leave a client that waits for `100 Continue`, or the unread rest of the body, on it.

An image upload is also read within a time limit (`read_upload`, `UPLOAD_READ_SECONDS`): it holds one of
the few places the server keeps for uploads while it arrives (`qr_images.UploadAdmission`), so a stalled
or deliberately slow client must not keep that place for as long as its connection lasts.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qianbao.api.problems import problem
from qianbao.config import Settings
from qianbao.errors import QianbaoError

IMAGE_UPLOAD_ROUTES = (("POST", "/v1/qr-codes/decode"),)
# 8 MiB in 30 s is about 2.2 Mbit/s, slower than a weak 4G link; a phone photo of a QR code is 1 to 4 MiB,
# and an app on a slow link should send a smaller picture (a QR code needs far fewer pixels).
UPLOAD_READ_SECONDS = 30


class PayloadTooLarge(QianbaoError):
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than {limit} bytes, the limit of this route", limit=limit
        )


class RequestTimeout(QianbaoError):
    code = "request_timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body did not arrive within {seconds:g} seconds: send it again, or a smaller one",
            limit_s=seconds,
        )


async def read_upload(request: Request, *, within_s: float = UPLOAD_READ_SECONDS) -> bytes:
    """The whole body of an upload, or `RequestTimeout` (408) if it has not arrived within `within_s`."""
    with anyio.move_on_after(within_s):
        return await request.body()
    raise RequestTimeout(within_s)


def is_image_upload(request: Request) -> bool:
    return (request.method, request.scope["path"]) in IMAGE_UPLOAD_ROUTES


def route_limits(settings: Settings) -> dict[tuple[str, str], int]:
    """The routes allowed more than the default, by (method, path)."""
    return {route: settings.max_image_upload_bytes for route in IMAGE_UPLOAD_ROUTES}


class BodySizeLimitMiddleware:
    """Refuses bodies over their route's limit with 413, before they are read whole."""

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: Mapping[tuple[str, str], int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get((scope["method"], scope["path"]), self.default_limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, PayloadTooLarge(limit))
            return
        received = 0
        refused: PayloadTooLarge | None = None
        response_started = False
        body_read = declared == 0 or (declared is None and not _chunked(scope))

        async def counting_receive() -> Message:
            nonlocal received, refused, body_read
            if refused is not None:
                raise refused  # the application asks again: it still gets nothing more
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = PayloadTooLarge(limit)
                    raise refused
                body_read = body_read or not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused is not None and not response_started:
                return  # the application's own answer to the cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                response_started = True
                if not body_read:  # answered before the body was read: see the module's docstring
                    message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # Whatever the cut-off body made the application raise, the answer is the 413.
            if refused is None or response_started:
                raise
        if refused is not None and not response_started:
            await _refuse(scope, receive, send, refused)


_CLOSE = (b"connection", b"close")


def _chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _value in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The server has already refused a malformed or repeated Content-Length (400).
            return int(value) if value.isdigit() else None
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, error: PayloadTooLarge) -> None:
    response = problem(Request(scope), error.code, error.detail, **error.extra)
    # The unread rest of the body would otherwise be taken for the next request on this connection
    # (a client waiting for `100 Continue` never sends it): the server closes the connection after this.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)

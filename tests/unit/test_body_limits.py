"""Request bodies over their route's limit: refused with 413 before they are read whole.

The middleware is driven directly with ASGI messages, in front of an application that records how much of
the body it was given: the point is what never reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from fastapi import Request
from starlette.types import Message, Receive, Scope, Send

from qianbao.api.body_limits import BodySizeLimitMiddleware, RequestTimeout, read_upload, route_limits
from qianbao.config import Settings

LIMIT = 1024
IMAGE_LIMIT = 8 * LIMIT
UPLOAD = ("POST", "/v1/qr-codes/decode")


@dataclass
class Reader:
    """An application that reads the whole body as Starlette does (it gives up on an error), then
    answers 200 with the number of bytes it got, or 400 if reading failed."""

    called: bool = False
    given: int = 0

    async def __call__(self, _scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        status = 200
        try:
            while True:
                message = await receive()
                self.given += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except Exception:  # noqa: BLE001 - like FastAPI: "There was an error parsing the body"
            status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": str(self.given).encode()})


@dataclass
class Exchange:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks_taken: int = 0

    @property
    def problem(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


def run(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    chunks: list[bytes],
    *,
    route: tuple[str, str] = ("POST", "/v1/transfers"),
    content_length: int | None = None,
    language: str = "en",
) -> Exchange:
    middleware = BodySizeLimitMiddleware(app, default_limit=LIMIT, limits={UPLOAD: IMAGE_LIMIT})
    headers = [(b"accept-language", language.encode())]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope: dict[str, Any] = {
        "type": "http", "method": route[0], "path": route[1], "raw_path": route[1].encode(),
        "query_string": b"", "headers": headers, "scheme": "http", "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234), "root_path": "",
    }  # fmt: skip
    exchange = Exchange()

    async def receive() -> Message:
        if exchange.chunks_taken >= len(chunks):
            return {"type": "http.disconnect"}
        exchange.chunks_taken += 1
        more = exchange.chunks_taken < len(chunks)
        return {"type": "http.request", "body": chunks[exchange.chunks_taken - 1], "more_body": more}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            exchange.body += message.get("body", b"")

    anyio.run(middleware, scope, receive, send)
    return exchange


def test_a_body_within_the_limit_passes_whole() -> None:
    app = Reader()
    exchange = run(app, [b"x" * 512, b"x" * 512], content_length=LIMIT)
    assert exchange.status == 200 and app.given == LIMIT


def test_a_declared_length_over_the_limit_is_refused_before_the_application_runs() -> None:
    app = Reader()
    exchange = run(app, [b"x" * 10 * LIMIT], content_length=200 * 2**20, language="zh-CN")
    assert not app.called and exchange.chunks_taken == 0
    assert exchange.status == 413 and exchange.headers["content-type"] == "application/problem+json"
    assert exchange.headers["connection"] == "close"
    assert exchange.problem["code"] == "payload_too_large" and exchange.problem["limit"] == LIMIT
    assert exchange.problem["user_message"] == "发送的内容过大，请换一张较小的图片或减少数据后重试。"


def test_a_streamed_body_stops_at_the_limit_and_the_answer_is_413_whatever_the_application_said() -> None:
    app = Reader()
    exchange = run(app, [b"x" * 600] * 100)  # no Content-Length: chunked
    assert app.given == 600  # the chunk that crossed the limit was never handed over
    assert exchange.chunks_taken == 2
    # One answer: the application's own (a 400 saying "600") was dropped, or the body would not parse.
    assert exchange.status == 413 and exchange.problem["code"] == "payload_too_large"


@pytest.mark.parametrize("raises", [ValueError, RuntimeError])
def test_an_application_that_fails_on_the_cut_off_body_still_answers_413(raises: type[Exception]) -> None:
    async def fragile(_scope: Scope, receive: Receive, _send: Send) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception as exc:
            raise raises("could not read the body") from exc

    exchange = run(fragile, [b"x" * 600] * 3)
    assert exchange.status == 413 and exchange.problem["code"] == "payload_too_large"


def test_the_image_upload_route_has_its_own_larger_limit() -> None:
    app = Reader()
    assert run(app, [b"x" * 4 * LIMIT], route=UPLOAD, content_length=4 * LIMIT).status == 200
    assert app.given == 4 * LIMIT
    refused = run(Reader(), [b""], route=UPLOAD, content_length=IMAGE_LIMIT + 1)
    assert refused.status == 413 and refused.problem["limit"] == IMAGE_LIMIT
    # Only for that method and path: the same size elsewhere is refused.
    assert run(Reader(), [b""], route=("PUT", UPLOAD[1]), content_length=4 * LIMIT).status == 413


def test_the_limits_come_from_the_settings() -> None:
    settings = Settings(max_body_bytes=2048, max_image_upload_bytes=4096)
    assert route_limits(settings) == {UPLOAD: 4096}
    assert Settings().max_body_bytes == 64 * 1024 and Settings().max_image_upload_bytes == 8 * 2**20


async def _answer_unread(_scope: Scope, _receive: Receive, send: Send) -> None:
    """An application that answers without reading the body (an upload refused before it is read)."""
    await send({"type": "http.response.start", "status": 503, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_an_answer_before_the_body_was_read_closes_the_connection() -> None:
    unread = run(_answer_unread, [b"x" * 600], route=UPLOAD, content_length=600)
    assert unread.status == 503 and unread.chunks_taken == 0 and unread.headers["connection"] == "close"
    read_whole = run(Reader(), [b"x" * 600], route=UPLOAD, content_length=600)
    assert read_whole.status == 200 and "connection" not in read_whole.headers
    no_body = run(_answer_unread, [b""], route=("GET", "/healthz"))
    assert "connection" not in no_body.headers


def _upload(receive: Receive) -> Request:
    return Request({"type": "http", "method": "POST", "path": UPLOAD[1], "headers": []}, receive)


def test_an_upload_is_read_within_a_time_limit() -> None:
    async def stalled() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def whole() -> Message:
        return {"type": "http.request", "body": b"picture", "more_body": False}

    async def main() -> None:
        with pytest.raises(RequestTimeout) as refused:
            await read_upload(_upload(stalled), within_s=0.01)
        assert refused.value.code == "request_timeout" and refused.value.extra == {"limit_s": 0.01}
        assert await read_upload(_upload(whole), within_s=0.01) == b"picture"

    anyio.run(main)

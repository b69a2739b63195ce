"""The HTTP/1.1 protocol `qianbao serve` runs: uvicorn's httptools protocol with a bounded request head.

llhttp (through httptools) bounds neither the size nor the number of header lines: a megabyte of headers,
or thousands of them, would be parsed and kept for every request. This protocol counts the request head
(the request line and every header line) as it arrives and refuses it once it passes
`QIANBAO_MAX_HEADER_BYTES` or has more than `QIANBAO_MAX_HEADER_COUNT` header lines: `431
headers_too_large` as problem+json, then the connection is closed. The application never sees such a
request.

Two counts, because httptools gathers each header line in its own buffer before handing it over whole:
the parsed request line and header lines give the exact size of a head, and the bytes received while a
head is still incomplete bound what that buffer can hold.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import Request
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from qianbao.api.problems import problem
from qianbao.config import Settings

log = logging.getLogger(__name__)

IMPORT_PATH = "qianbao.api.http_protocol:BoundedHttpToolsProtocol"
CODE = "headers_too_large"
STATUS = 431
# Each header line costs its name, its value and ": " plus CRLF.
LINE_OVERHEAD = 4


@functools.cache
def header_limits() -> tuple[int, int]:
    """(bytes, count), once per process: uvicorn builds a protocol per connection, and worker processes
    read their settings from the environment `qianbao serve` hands down."""
    settings = Settings()
    return settings.max_header_bytes, settings.max_header_count


class HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing; httptools re-raises it as a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes, self.max_header_count = header_limits()
        self.head_bytes = 0  # exact: the request line and the header lines parsed so far
        self.header_count = 0
        self.incomplete_head_bytes: int | None = 0  # received while a head is incomplete; None in a body
        self.head_refused = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.incomplete_head_bytes is None or self.transport.is_closing():
            return
        self.incomplete_head_bytes += len(data)
        if self.incomplete_head_bytes > self.max_head_bytes:
            self.refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = self.header_count = 0
        self.incomplete_head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        self.check_head()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + LINE_OVERHEAD
        self.header_count += 1
        self.check_head()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.incomplete_head_bytes = None
        super().on_headers_complete()

    def check_head(self) -> None:
        if self.head_bytes > self.max_head_bytes or self.header_count > self.max_header_count:
            self.head_refused = True
            raise HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error with 400; the error raised by `check_head` gets its 431.
        if self.head_refused:
            self.refuse_head()
        else:
            super().send_400_response(msg)

    def refuse_head(self) -> None:
        log.warning(
            "request head refused (431): over %d bytes or %d header lines, from %s",
            self.max_head_bytes,
            self.max_header_count,
            self.client[0] if self.client else "-",
        )
        response = problem(
            Request(self._refusal_scope()),
            CODE,
            f"the request line and headers must fit in {self.max_head_bytes} bytes and "
            f"{self.max_header_count} header lines",
            status=STATUS,
            limit=self.max_head_bytes,
            limit_count=self.max_header_count,
        )
        head = [STATUS_LINE[STATUS]]
        for name, value in [*self.server_state.default_headers, *response.raw_headers]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", response.body]))
        self.transport.close()

    def _refusal_scope(self) -> dict[str, Any]:
        """Enough of a request for the problem: its language (if that header arrived) and where it came
        from; nothing else of the refused head is trusted."""
        language = [(n, v) for n, v in (self.headers or []) if n == b"accept-language"][:1]
        return {
            "type": "http",
            "method": "-",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "root_path": "",
            "scheme": self.scheme or "http",
            "server": self.server,
            "client": self.client,
            "headers": language,
        }

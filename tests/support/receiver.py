"""A real HTTP receiver on 127.0.0.1 for webhook tests: it records what it gets and answers the statuses
it is told to, in turn. And a resolver for tests whose receivers are mocks: every name is public."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PUBLIC_ADDRESS = "93.184.216.34"  # a public address; tests behind a MockTransport never connect to it


def public_resolver(host: str, port: int) -> list[str]:
    """Every host name resolves to one public address (no DNS in tests)."""
    del host, port
    return [PUBLIC_ADDRESS]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int = 0  # the sender's side of the TCP connection


@dataclass
class LocalReceiver:
    """A tiny webhook receiver: answers the statuses in `answers` in turn (the last one repeats)."""

    answers: list[int]
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections open, as real receivers do

            def do_POST(self) -> None:  # noqa: N802 - the http.server interface
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, self.client_address[1])
                    )
                    status = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                answer = json.dumps({"received": status < 300}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
                del format, args

        return Handler


@contextmanager
def running_receiver(answers: list[int]) -> Iterator[tuple[LocalReceiver, str]]:
    """A receiver serving on a free port, and the URL to register for it."""
    local = LocalReceiver(answers)
    server = ThreadingHTTPServer(("127.0.0.1", 0), local.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield local, f"http://127.0.0.1:{server.server_address[1]}/hooks/qianbao"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

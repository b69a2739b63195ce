"""What `qianbao serve` itself refuses or believes, against the real server process: request heads and
bodies over their limits, X-Forwarded-For from a peer that is no trusted proxy, the database file's mode."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.support.server import Served, serve

# A refused request is answered at once; this only keeps a failing test from hanging (the server of old
# waited for a body that never came).
SOCKET_TIMEOUT_S = 15
DEMO_PHONE, DEMO_PASSWORD = "+8613800000001", "Demo-Wallet-2026"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cheap_hashing = {
        "QIANBAO_ARGON2_TIME_COST": "1",
        "QIANBAO_ARGON2_MEMORY_KIB": "8",
        "QIANBAO_ARGON2_PARALLELISM": "1",
    }
    with serve(tmp_path_factory.mktemp("serve"), env=cheap_hashing) as running:
        yield running


def exchange(served: Served, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Sends a raw request (in pieces, as a client on a slow link would) and reads the answer until the
    server closes the connection. A server that answers early and closes may reset the rest of the send."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=SOCKET_TIMEOUT_S) as sock:
        data = head + body
        try:
            for start in range(0, len(data), 16 * 1024):
                sock.sendall(data[start : start + 16 * 1024])
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if _complete(received):
                    break
        except ConnectionResetError:
            pass
    status_line, _, rest = received.partition(b"\r\n")
    header_block, _, content = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, content


def _complete(received: bytes) -> bool:
    head, separator, content = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(content) >= int(value)
    return False


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_a_body_declared_too_large_is_refused_before_it_is_sent(served: Served) -> None:
    status, headers, content = exchange(
        served,
        request_head(
            "POST", "/v1/sessions", "Content-Type: application/json", f"Content-Length: {200 * 2**20}",
            "Accept-Language: zh-CN",
        ),
    )  # fmt: skip
    problem = json.loads(content)
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert problem["code"] == "payload_too_large" and problem["limit"] == 64 * 1024
    assert problem["user_message"] == "发送的内容过大，请换一张较小的图片或减少数据后重试。"
    assert headers["connection"] == "close"


def test_a_streamed_body_is_cut_off_at_the_limit(served: Served) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB in all, without a Content-Length
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    response = httpx.post(f"{served.url}/v1/sessions", content=chunks(), timeout=SOCKET_TIMEOUT_S)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_the_image_upload_route_takes_more_than_json_routes_but_not_without_limit(served: Served) -> None:
    photo_sized = httpx.post(
        f"{served.url}/v1/qr-codes/decode", content=b"\xff" * (1024 * 1024),
        headers={"Content-Type": "image/jpeg"}, timeout=SOCKET_TIMEOUT_S,
    )  # fmt: skip
    assert photo_sized.status_code == 401  # refused for want of a session
    too_big = f"Content-Length: {9 * 2**20}"
    status, _, content = exchange(
        served, request_head("POST", "/v1/qr-codes/decode", "Content-Type: image/png", too_big)
    )
    assert status == 413 and json.loads(content)["limit"] == 8 * 2**20


def test_an_upload_is_refused_before_its_body_is_sent(served: Served) -> None:
    # Only the head is sent: a server that read the body before deciding would wait for it in vain.
    status, headers, content = exchange(
        served,
        request_head("POST", "/v1/qr-codes/decode", "Content-Type: image/png", f"Content-Length: {2**20}"),
    )
    assert status == 401 and json.loads(content)["code"] == "unauthenticated"
    assert headers["connection"] == "close"  # the unsent body is not awaited on this connection


def test_a_megabyte_of_headers_is_refused(served: Served) -> None:
    status, headers, content = exchange(served, request_head("GET", "/healthz", "X-Padding: " + "a" * 2**20))
    assert status == 431 and headers["content-type"] == "application/problem+json"
    problem = json.loads(content)
    assert problem["code"] == "headers_too_large" and problem["limit"] == 16 * 1024
    assert problem["user_message"].startswith("The request headers are too large")
    assert problem["support_reference"].startswith("req_")


def test_a_thousand_headers_are_refused_though_they_are_small(served: Served) -> None:
    many = [f"X-H{i}: {i}" for i in range(1000)]  # about 12 KiB: under the size limit, over the count
    status, _, content = exchange(served, request_head("GET", "/healthz", "Accept-Language: zh-CN", *many))
    problem = json.loads(content)
    assert status == 431 and problem["limit_count"] == 100
    assert problem["user_message"] == (
        "请求头过大（数量过多或内容过长，常见原因是 Cookie 过大）。"
        "请减少或缩短请求头，或清除本网站的 Cookie 后重试。"
    )


def test_ordinary_requests_still_pass(served: Served) -> None:
    headers = [f"X-H{i}: {'v' * 50}" for i in range(60)]
    status, _, content = exchange(served, request_head("GET", "/healthz", *headers))
    assert status == 200 and json.loads(content)["status"] == "ok"


def test_a_spoofed_forwarded_for_changes_neither_the_recorded_ip_nor_per_ip_limits(served: Served) -> None:
    """The test client connects from 127.0.0.1, which uvicorn believed by default; no proxy is configured."""
    with httpx.Client(base_url=served.url, timeout=SOCKET_TIMEOUT_S) as client:
        signed_in = client.post(
            "/v1/sessions", json={"phone": DEMO_PHONE, "password": DEMO_PASSWORD},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )  # fmt: skip
        assert signed_in.status_code == 201, signed_in.text
        auth = {"Authorization": f"Bearer {signed_in.json()['token']}"}
        current = [s for s in client.get("/v1/me/sessions", headers=auth).json()["data"] if s["current"]]
        assert current[0]["ip"] == "127.0.0.1"
        # SMS codes: 20 an hour per IP. Each request claims another address; they all count for one.
        answers = [
            client.post(
                "/v1/verifications", json={"phone": f"+861390000{n:04d}"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            ).status_code
            for n in range(21)
        ]  # fmt: skip
        assert answers == [202] * 20 + [429]


def test_the_database_file_and_its_journal_are_private(served: Served) -> None:
    database = served.cwd / "var" / "qianbao.db"
    files = [p for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm")) if p.exists()]
    assert database in files and len(files) == 3  # the server holds connections: the WAL files are there
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: "0o600" for p in files}

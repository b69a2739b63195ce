"""`qianbao serve` as a real process, for tests of what only the server does (uvicorn, its HTTP parser,
worker processes, the database file it creates), not just the ASGI app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

STARTUP_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str
    port: int
    cwd: Path
    health: dict[str, Any] = field(default_factory=dict)
    output: str = ""  # everything the process printed, once it has stopped


@contextmanager
def serve(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Runs `qianbao serve ARGS` in `cwd` (its default database is `cwd/var/qianbao.db`) until the block
    ends, then stops it with Ctrl-C."""
    port = free_port()
    environment = {**os.environ, "QIANBAO_LOG_LEVEL": "warning"}
    environment.pop("QIANBAO_DATABASE_URL", None)
    environment.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "qianbao.cli", "serve", "--port", str(port), *args],
        cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    served = Served(url=f"http://127.0.0.1:{port}", port=port, cwd=cwd)
    try:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline and not served.health:
            try:
                served.health = httpx.get(f"{served.url}/healthz", timeout=2).json()
            except httpx.HTTPError:
                if process.poll() is not None:
                    break
                time.sleep(0.3)
        assert served.health, "server did not come up"
        yield served
    finally:
        process.send_signal(signal.SIGINT)
        try:
            served.output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            served.output, _ = process.communicate()

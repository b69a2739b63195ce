"""The server processes `qianbao bench api` starts and drives: `qianbao serve` on a scratch database, the
floor server, and the checks that a target server is on this machine and answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

from qianbao.benchmarks.api_params import SERVER_ENV, BenchError
from qianbao.benchmarks.api_population import Http, LoopbackHttp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    pid: int | None
    log_path: Path | None


def wait_healthy(http: Http, deadline_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not alive():
            raise BenchError("the server exited during start-up")
        try:
            status, _ = http.call("GET", "/healthz")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise BenchError(f"the server did not answer /healthz within {deadline_s:.0f} s")


@contextmanager
def started_server(database_url: str, workers: int, work_dir: Path) -> Iterator[Server]:
    """`qianbao serve` on a free loopback port with the bench's environment; stopped afterwards."""
    port = free_port()
    command = [
        sys.executable, "-m", "qianbao.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--database-url", database_url,
    ]  # fmt: skip
    env = {**SERVER_ENV, "QIANBAO_VAR_DIR": str(work_dir / "var")}
    with started_process(command, env, work_dir, "server", port=port) as server:
        yield server


@contextmanager
def started_process(
    command: list[str], env: dict[str, str], work_dir: Path, name: str, *, port: int | None = None
) -> Iterator[Server]:
    """A server process (its own session, log in `work_dir/<name>.log`) once it answers /healthz on
    the port given in `command` (`--port`); SIGINT afterwards (uvicorn's supervisor stops its workers)."""
    if port is None:
        port = int(command[command.index("--port") + 1])
    log_path = work_dir / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}", process.pid, log_path)
    try:
        try:
            wait_healthy(LoopbackHttp(server.url), 120, alive=lambda: process.poll() is None)
        except BenchError as exc:
            raise BenchError(f"{exc}; its log:\n{tail(log_path)}") from None
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the process group we started, nothing else
                process.wait(10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BenchError(
            f"--url must be a server on this machine (127.0.0.1, localhost, [::1]), not {host!r}"
        )

"""One process of a multi-process ledger race: client threads submitting through one TransferBatcher.

Usage: python -m tests.integration.workers.ledger_race PLAN.json RESULT.json

PLAN: {"url", "ready_path", "go_path", "window_ms", "clients": [[submission, …], …]} where a
       submission is {"at": seconds after the start or null, "requests": [request, …]} (requests as in
       common.py; a linked chain stays inside one submission).
RESULT: {"clients": [[[id, code], …], …], "batches", "transfers", "retries", "batch_failures"}.
Every client records every (id, result code) it got; an exception is recorded as "error:<text>".

The worker connects, writes READY_PATH, then waits for the parent to write GO_PATH holding the
`time.time()` at which all clients of all processes start (so the processes really race).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from qianbao.ledger.batcher import TransferBatcher
from qianbao.ledger.engine import LedgerEngine
from qianbao.store.database import Database
from tests.integration.workers.common import to_spec, write_json


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.retries = 0
        self.failures = 0
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "retried" in message:
            self.retries += 1
        if record.levelno >= logging.WARNING:
            self.failures += 1
            self.messages.append(f"{record.levelname} {record.name}: {message}")


def _client(batcher: TransferBatcher, submissions: list[dict[str, Any]], start_at: float,
            out: list[list[str]]) -> None:  # fmt: skip
    for submission in submissions:
        if submission.get("at") is not None:
            delay = start_at + submission["at"] - time.time()
            if delay > 0:
                time.sleep(delay)
        requests = submission["requests"]
        try:
            results = batcher.create_transfers([to_spec(r) for r in requests], timeout=60)
        except Exception as exc:  # noqa: BLE001 - recorded, and the test fails on it
            out.extend([r["id"], f"error:{type(exc).__name__}: {exc}"] for r in requests)
            continue
        out.extend([res.id, res.code.value] for res in results)


def _wait_for_go(path: Path, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return float(path.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.001)
    raise SystemExit(f"no start signal at {path} within {timeout} s")


def main(plan_path: str, result_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    counter = _Counter()
    qianbao_log = logging.getLogger("qianbao")
    qianbao_log.setLevel(logging.INFO)
    qianbao_log.addHandler(counter)
    logging.basicConfig(level=logging.WARNING)  # anything unexpected also reaches stderr (the log file)
    db = Database(plan["url"])
    batcher = TransferBatcher(LedgerEngine(db), window_ms=plan.get("window_ms", 1.0)).start()
    with db.read() as conn:  # connect before the start signal, not during the race
        conn.exec_driver_sql("SELECT 1")
    Path(plan["ready_path"]).write_text("ready")
    start_at = _wait_for_go(Path(plan["go_path"]))
    outs: list[list[list[str]]] = [[] for _ in plan["clients"]]
    threads = [
        threading.Thread(target=_client, args=(batcher, subs, start_at, out), name=f"client-{i}")
        for i, (subs, out) in enumerate(zip(plan["clients"], outs, strict=True))
    ]
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    finished = time.time()
    batcher.close()
    db.dispose()
    write_json(
        Path(result_path),
        {
            "clients": outs,
            "started": started,
            "finished": finished,
            "batches": batcher.batches,
            "transfers": batcher.transfers,
            "retries": counter.retries,
            "speculation_misses": getattr(batcher, "speculation_misses", None),
            "batch_failures": counter.failures,
            "messages": counter.messages[:20],
            "unfinished_threads": sum(t.is_alive() for t in threads),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

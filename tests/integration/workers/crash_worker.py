"""A ledger client process that the crash-safety tests SIGKILL in the middle of its work.

Usage: python -m tests.integration.workers.crash_worker PLAN.json ACKS.log

PLAN: {"url", "window_ms", "clients": [[submission, …], …]}, a submission being {"requests": [request, …]}
(requests as in common.py). Client threads submit through one TransferBatcher; after each result is
acknowledged, "<id>\\t<code>\\n" is appended to ACKS.log and fsynced before the client goes on, so whatever
the parent finds there was acknowledged before the process died. An exception is acknowledged as
"error:<type>".
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from qianbao.ledger.batcher import TransferBatcher
from qianbao.ledger.engine import LedgerEngine
from qianbao.store.database import Database
from tests.integration.workers.common import to_spec


class AckLog:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock = threading.Lock()

    def ack(self, pairs: list[tuple[str, str]]) -> None:
        data = "".join(f"{tid}\t{code}\n" for tid, code in pairs).encode()
        with self.lock:
            os.write(self.fd, data)  # one write: a kill leaves whole lines or none
            os.fsync(self.fd)


def _client(batcher: TransferBatcher, submissions: list[dict[str, Any]], acks: AckLog) -> None:
    for submission in submissions:
        requests = submission["requests"]
        try:
            results = batcher.create_transfers([to_spec(r) for r in requests], timeout=60)
        except Exception as exc:  # noqa: BLE001 - acknowledged as an error; the test fails on it
            acks.ack([(r["id"], f"error:{type(exc).__name__}") for r in requests])
            continue
        acks.ack([(res.id, res.code.value) for res in results])


def main(plan_path: str, acks_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    acks = AckLog(acks_path)
    db = Database(plan["url"])
    batcher = TransferBatcher(LedgerEngine(db), window_ms=plan.get("window_ms", 1.0)).start()
    threads = [
        threading.Thread(target=_client, args=(batcher, subs, acks), name=f"client-{i}")
        for i, subs in enumerate(plan["clients"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    batcher.close()
    db.dispose()
    return 1 if any(t.is_alive() for t in threads) else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

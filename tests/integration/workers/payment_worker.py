"""A worker process paying through the payment pipeline, as one of several on one PostgreSQL database.

Usage: python -m tests.integration.workers.payment_worker PLAN.json ACKS.log

PLAN: {"url", "var_dir", "go": a file to wait for (so that every process starts at once, or null),
"clients": [[payment, …], …]}, a payment being {"payer", "from", "to", "amount", "key"}. Each client list
runs in its own thread through `send_transfer` (and so the process's own pipeline). After each outcome,
"<key>\\t<outcome>\\t<transfer id or ->\\n" is appended to ACKS.log and fsynced before the client goes
on: what the parent finds there was acknowledged before the process ended or was killed. The outcome
is "ok" or the refusal's code ("error:<type>" for anything else).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from qianbao.bootstrap import build_container
from qianbao.config import Settings
from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind
from qianbao.payments.transfers import TransferRequest, send_transfer
from tests.integration.workers.common import start_worker
from tests.support.api import make_settings


class AckLog:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock = threading.Lock()

    def ack(self, key: str, outcome: str, transfer_id: str) -> None:
        with self.lock:
            os.write(self.fd, f"{key}\t{outcome}\t{transfer_id}\n".encode())  # whole lines or none
            os.fsync(self.fd)


def _pay(ctx: IdentityContext, payment: dict[str, Any]) -> tuple[str, str]:
    payer = Principal(PrincipalKind.USER, payment["payer"], payment["payer"], device_trusted=True)
    request = TransferRequest(payment["from"], payment["amount"], "CNY", to_wallet_id=payment["to"])
    try:
        record = send_transfer(ctx, payer, request, idempotency_key=payment["key"])
    except QianbaoError as refused:
        return refused.code, str(refused.extra.get("transfer_id", "-"))
    except Exception as exc:  # noqa: BLE001 - acknowledged as an error; the test fails on it
        return f"error:{type(exc).__name__}", "-"
    return "ok", record.id


def _client(
    ctx: IdentityContext, payments: list[dict[str, Any]], acks: AckLog, start: threading.Barrier
) -> None:
    start.wait()
    for payment in payments:
        outcome, transfer_id = _pay(ctx, payment)
        acks.ack(payment["key"], outcome, transfer_id)


def launch(
    settings: Settings, work_dir: Path, name: str, clients: list[list[dict[str, Any]]], go: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a worker process on `settings`' database and keys, paying `clients` once `go` exists;
    its acknowledgements go to the returned file, its output to `<name>.out`."""
    plan = work_dir / f"{name}.json"
    plan.write_text(
        json.dumps(
            {
                "url": settings.database_url,
                "var_dir": str(settings.var_dir),
                "go": str(go),
                "clients": clients,
            }
        )
    )
    acks = work_dir / f"{name}.acks"
    return start_worker("payment_worker", str(plan), str(acks), log=work_dir / f"{name}.out"), acks


def main(plan_path: str, acks_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    container = build_container(make_settings(plan["url"], Path(plan["var_dir"])))
    acks = AckLog(acks_path)
    clients = plan["clients"]
    start = threading.Barrier(len(clients))
    threads = [
        threading.Thread(target=_client, args=(container.identity, payments, acks, start), name=f"client-{i}")
        for i, payments in enumerate(clients)
    ]
    go = plan.get("go")
    while go is not None and not Path(go).exists():
        time.sleep(0.005)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    container.close()
    return 1 if any(t.is_alive() for t in threads) else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

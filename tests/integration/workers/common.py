"""What the multi-process ledger tests and their worker processes share: transfer requests as JSON,
and the ledger's balances recomputed two ways (from acknowledged results, from the stored rows).

Kept free of pytest so a worker process imports only this, the standard library and qianbao.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import AccountSpec, NormalBalance, ResultCode, TransferKind, TransferSpec
from qianbao.store.database import Database

ROOT = Path(__file__).resolve().parents[3]
CURRENCY = "CNY"

# A request as JSON: {"id", "kind", "debit", "credit", "amount", "pending_id", "code", "linked"}.
Req = dict[str, Any]
Totals = dict[
    str, list[int]
]  # account id -> [debits_posted, credits_posted, debits_pending, credits_pending]


def posted(
    tid: str, debit: str, credit: str, amount: int, *, code: str = "transfer", linked: bool = False
) -> Req:
    return {"id": tid, "kind": "posted", "debit": debit, "credit": credit, "amount": amount, "code": code,
            "linked": linked}  # fmt: skip


def pending(tid: str, debit: str, credit: str, amount: int) -> Req:
    return {"id": tid, "kind": "pending", "debit": debit, "credit": credit, "amount": amount, "code": "hold"}


def post(tid: str, pending_id: str, amount: int | None = None) -> Req:
    return {"id": tid, "kind": "post_pending", "pending_id": pending_id, "amount": amount}


def void(tid: str, pending_id: str) -> Req:
    return {"id": tid, "kind": "void_pending", "pending_id": pending_id}


@dataclass
class Ledger:
    """The accounts of a race: overdraft-protected wallets funded from an unbounded source."""

    url: str
    wallets: list[str]
    funded: int
    setup: list[Req] = field(default_factory=list)  # the funding transfers, applied before the race

    funding: str = "funding"  # debit-normal, unbounded: where wallet money comes from
    reserve: str = "reserve"  # a second unbounded source
    fees: str = "fees"
    merchant: str = "merchant"  # overdraft-protected too

    @property
    def sources(self) -> tuple[str, str]:
        return (self.funding, self.reserve)


def open_ledger(url: str, *, wallets: int, funded: int) -> Ledger:
    ledger = Ledger(url, [f"w{i:02d}" for i in range(wallets)], funded)
    db = Database(url)
    try:
        engine = LedgerEngine(db)
        specs = [
            AccountSpec(ledger.funding, CURRENCY, "test.funding", normal_balance=NormalBalance.DEBIT),
            AccountSpec(ledger.reserve, CURRENCY, "test.funding", normal_balance=NormalBalance.DEBIT),
            AccountSpec(ledger.fees, CURRENCY, "test.fees"),
            AccountSpec(ledger.merchant, CURRENCY, "test.merchant", debits_must_not_exceed_credits=True),
        ]
        specs += [
            AccountSpec(w, CURRENCY, "test.wallet", debits_must_not_exceed_credits=True)
            for w in ledger.wallets
        ]
        created = engine.create_accounts(specs)
        assert all(r.code is ResultCode.OK for r in created), created  # noqa: S101 - test support
        ledger.setup = [posted(f"setup-{w}", ledger.funding, w, funded) for w in ledger.wallets]
        results = engine.create_transfers([to_spec(r) for r in ledger.setup], range(len(ledger.setup)))
        assert all(r.code is ResultCode.OK for r in results), results  # noqa: S101 - test support
    finally:
        db.dispose()
    return ledger


def stored_ledger(url: str) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[int, ...]], dict[str, bool]]:
    """(transfers by id -> (kind, debit, credit, amount, pending_id), accounts -> the four totals,
    accounts -> debits_must_not_exceed_credits), read in one transaction."""
    db = Database(url)
    try:
        with db.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, kind, debit_account_id, credit_account_id, amount, pending_id"
                " FROM ledger_transfers"
            ).fetchall()
            accounts = conn.exec_driver_sql(
                "SELECT id, debits_posted, credits_posted, debits_pending, credits_pending,"
                " debits_must_not_exceed_credits FROM ledger_accounts"
            ).fetchall()
            distinct = conn.exec_driver_sql("SELECT COUNT(DISTINCT id) FROM ledger_transfers").scalar_one()
    finally:
        db.dispose()
    assert distinct == len(rows)  # noqa: S101 - the primary key holds
    transfers = {row[0]: tuple(row[1:]) for row in rows}
    balances = {row[0]: tuple(int(v) for v in row[1:5]) for row in accounts}
    protected = {row[0]: bool(row[5]) for row in accounts}
    return transfers, balances, protected


def check_balances(balances: Mapping[str, tuple[int, ...]], protected: Mapping[str, bool]) -> None:
    """Nothing negative; no protected account overdrawn, counting its holds; debits equal credits."""
    for account, (dp, cp, dq, cq) in balances.items():
        assert min(dp, cp, dq, cq) >= 0, (account, balances[account])  # noqa: S101
        if protected[account]:
            assert dp + dq <= cp, (account, balances[account])  # noqa: S101
    assert sum(v[0] for v in balances.values()) == sum(v[1] for v in balances.values())  # noqa: S101
    assert sum(v[2] for v in balances.values()) == sum(v[3] for v in balances.values())  # noqa: S101


def to_spec(req: Req) -> TransferSpec:
    kind = TransferKind(req["kind"])
    if kind in (TransferKind.POSTED, TransferKind.PENDING):
        return TransferSpec(
            id=req["id"],
            kind=kind,
            debit_account_id=req["debit"],
            credit_account_id=req["credit"],
            amount=req["amount"],
            currency=CURRENCY,
            code=req.get("code", ""),
            linked=req.get("linked", False),
        )
    return TransferSpec(id=req["id"], kind=kind, pending_id=req["pending_id"], amount=req.get("amount"),
                        linked=req.get("linked", False))  # fmt: skip


def stored_content(req: Req, requests: Mapping[str, Req]) -> tuple[Any, ...]:
    """(kind, debit, credit, amount, pending_id) that a successful `req` must have stored."""
    if req["kind"] in ("posted", "pending"):
        return (req["kind"], req["debit"], req["credit"], req["amount"], None)
    hold = requests[req["pending_id"]]
    amount = hold["amount"] if req.get("amount") is None else req["amount"]
    return (req["kind"], hold["debit"], hold["credit"], amount, req["pending_id"])


def totals_from_requests(requests: Iterable[Req], holds: Mapping[str, Req]) -> Totals:
    """Balances implied by the requests that were acknowledged `ok` (each applied once)."""
    totals: Totals = defaultdict(lambda: [0, 0, 0, 0])
    for req in requests:
        kind = req["kind"]
        if kind == "posted":
            totals[req["debit"]][0] += req["amount"]
            totals[req["credit"]][1] += req["amount"]
        elif kind == "pending":
            totals[req["debit"]][2] += req["amount"]
            totals[req["credit"]][3] += req["amount"]
        else:
            hold = holds[req["pending_id"]]
            totals[hold["debit"]][2] -= hold["amount"]
            totals[hold["credit"]][3] -= hold["amount"]
            if kind == "post_pending":
                amount = hold["amount"] if req.get("amount") is None else req["amount"]
                totals[hold["debit"]][0] += amount
                totals[hold["credit"]][1] += amount
    return totals


def totals_from_rows(rows: Iterable[tuple[str, str, str, str, int, str | None]]) -> Totals:
    """Balances implied by stored transfer rows (id, kind, debit, credit, amount, pending_id)."""
    rows = list(rows)
    resolved = {row[5] for row in rows if row[5] is not None}
    totals: Totals = defaultdict(lambda: [0, 0, 0, 0])
    for tid, kind, debit, credit, amount, _pending_id in rows:
        if kind in ("posted", "post_pending"):
            totals[debit][0] += amount
            totals[credit][1] += amount
        elif kind == "pending" and tid not in resolved:
            totals[debit][2] += amount
            totals[credit][3] += amount
    return totals


def nonzero(totals: Mapping[str, list[int]]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in totals.items() if any(v)}


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def start_worker(module: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Run `python -m tests.integration.workers.<module> args…` with stdout and stderr going to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"tests.integration.workers.{module}", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def reaped(procs: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Whatever happens in the block, no child outlives it."""
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a zombie-proof last resort
                proc.kill()


def wait_all(procs: list[subprocess.Popen[bytes]], deadline: float) -> list[int]:
    codes = []
    for proc in procs:
        codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
    return codes

"""Crash trials of the payment pipeline: two worker processes (tests/integration/workers/payment_worker.py)
pay through their own pipelines on one PostgreSQL database and are SIGKILLed together while batches are
in flight, twice; each restart submits new payments and resubmits some never acknowledged. A last,
uninterrupted run resubmits every payment that was acknowledged paid, or never acknowledged. Then:

- the ledger verifies, and every paid transfer record has its ledger transfer (same id, same amount) and
  every P2P ledger transfer its record: nothing half-written;
- each payer's count toward today (`limit_usage`) and each wallet's month (`wallet_budget_months`) is
  exactly what its recorded payments add up to, and each paid record has its one outbox event;
- every payment acknowledged paid is stored once and answers again, with the same transfer id.
"""

from __future__ import annotations

import random
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from qianbao.bootstrap import Container
from qianbao.identity.model import Principal, PrincipalKind
from qianbao.identity.tables import limit_usage
from qianbao.ledger.tables import transfers as ledger_transfers
from qianbao.ledger.verify import verify_ledger
from qianbao.payments.funding import sandbox_fund
from qianbao.payments.tables import transfers
from qianbao.store.outbox import outbox
from qianbao.wallets.tables import wallet_budget_months
from tests.integration.workers.common import reaped, wait_all
from tests.integration.workers.payment_worker import launch
from tests.support.population import register

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PROCESSES = 2
CLIENTS = 4
PER_CLIENT = 40  # more than a killed run gets through
KILLED_RUNS = 2


def _people(container: Container, rng: random.Random) -> tuple[list[tuple[str, str]], list[str]]:
    ctx = container.identity
    payers = []
    for i in range(8):
        user, wallet = register(ctx, f"付款人{i}")
        funded = 3_000 if i == 0 else 200_000  # the first runs dry: declines among the payments
        principal = Principal(PrincipalKind.USER, user, user, device_trusted=True)
        sandbox_fund(ctx, principal, wallet_id=wallet, amount=funded, currency_code="CNY")
        payers.append((user, wallet))
    payees = [register(ctx, f"收款人{i}")[1] for i in range(6)]
    rng.shuffle(payees)
    return payers, payees


def _payment(
    rng: random.Random, payers: list[tuple[str, str]], payees: list[str], key: str
) -> dict[str, Any]:
    user, wallet = rng.choice(payers)
    return {
        "payer": user,
        "from": wallet,
        "to": rng.choice(payees),
        "amount": rng.randint(100, 1_500),
        "key": key,
    }


def _run(
    container: Container,
    tmp_path: Path,
    name: str,
    clients: list[list[dict[str, Any]]],
    *,
    kill_after: int | None,
) -> list[list[str]]:
    """One round: the clients dealt to the worker processes; SIGKILLed once `kill_after` acks are in."""
    procs = []
    logs = []
    go = tmp_path / f"{name}-go"
    with reaped(procs):
        for p in range(PROCESSES):
            mine = clients[p * CLIENTS : (p + 1) * CLIENTS]
            proc, acks = launch(container.settings, tmp_path, f"{name}-{p}", mine, go)
            procs.append(proc)
            logs.append(acks)
        go.touch()
        deadline = time.monotonic() + 150
        if kill_after is not None:
            while time.monotonic() < deadline and sum(_count(log) for log in logs) < kill_after:
                if all(proc.poll() is not None for proc in procs):
                    break
                time.sleep(0.005)
            for proc in procs:
                proc.send_signal(signal.SIGKILL)
            for proc in procs:
                proc.wait(timeout=10)
        else:
            assert wait_all(procs, deadline) == [0] * PROCESSES
    return [line.split("\t") for log in logs if log.exists() for line in log.read_text().splitlines()]


def _count(log: Path) -> int:
    return log.read_text().count("\n") if log.exists() else 0


def test_killed_workers_lose_no_acknowledged_payment_and_leave_nothing_half_written(
    container: Container, tmp_path: Path
) -> None:
    rng = random.Random(20261207)
    payers, payees = _people(container, rng)
    paid: dict[str, str] = {}  # key → transfer id, acknowledged paid
    submitted: dict[str, dict[str, Any]] = {}
    unacknowledged: list[dict[str, Any]] = []
    for run in range(KILLED_RUNS):
        fresh = [
            _payment(rng, payers, payees, f"r{run}-{i}") for i in range(PROCESSES * CLIENTS * PER_CLIENT)
        ]
        retried = rng.sample(unacknowledged, k=len(unacknowledged) // 2)
        payments = retried + fresh
        submitted.update({p["key"]: p for p in payments})
        clients = [payments[c :: PROCESSES * CLIENTS] for c in range(PROCESSES * CLIENTS)]
        acks = _run(container, tmp_path, f"run{run}", clients, kill_after=rng.randint(60, 160))
        assert not [a for a in acks if a[1].startswith("error:")], acks
        acked = {key for key, _outcome, _id in acks}
        for key, outcome, transfer_id in acks:
            if outcome == "ok":
                assert paid.setdefault(key, transfer_id) == transfer_id  # a replay answers the same payment
        unacknowledged = [p for k, p in submitted.items() if k not in acked and k not in paid]
    # The last run, not killed: every payment acknowledged paid, and every one never acknowledged.
    again = [submitted[k] for k in paid] + unacknowledged
    clients = [again[c :: PROCESSES * CLIENTS] for c in range(PROCESSES * CLIENTS)]
    final = _run(container, tmp_path, "final", clients, kill_after=None)
    assert len(final) == len(again)
    for key, outcome, transfer_id in final:
        assert not outcome.startswith("error:"), (key, outcome)
        if key in paid:
            assert (outcome, transfer_id) == ("ok", paid[key])  # stored once, answered again

    with container.db.read() as conn:
        records = conn.execute(select(transfers).where(transfers.c.status == "succeeded")).all()
        ledger = {
            r.id: r for r in conn.execute(select(ledger_transfers).where(ledger_transfers.c.code == "p2p"))
        }
        usage = dict(conn.execute(select(limit_usage.c.user_id, limit_usage.c.outflow)).all())
        counted = dict(conn.execute(select(limit_usage.c.user_id, limit_usage.c.payments)).all())
        months = dict(
            conn.execute(select(wallet_budget_months.c.wallet_id, wallet_budget_months.c.spent)).all()
        )
        events = conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.type == "transfer.succeeded")
        ).scalar_one()
    assert verify_ledger(container.db).ok
    assert {r.ledger_transfer_id for r in records} == set(ledger)  # nothing half-written
    for record in records:
        assert ledger[record.ledger_transfer_id].amount == record.amount
    assert {paid_id for paid_id in paid.values()} <= {r.id for r in records}
    by_payer: dict[str, int] = defaultdict(int)
    by_wallet: dict[str, int] = defaultdict(int)
    payments_of: dict[str, int] = defaultdict(int)
    for record in records:
        by_payer[record.from_user_id] += record.amount
        by_wallet[record.from_wallet_id] += record.amount
        payments_of[record.from_user_id] += 1
    assert {u: v for u, v in usage.items() if v} == dict(by_payer)
    assert {u: v for u, v in counted.items() if v} == dict(payments_of)
    assert {w: v for w, v in months.items() if v} == dict(by_wallet)
    assert events == len(records)
    assert len(records) > 100 and len(paid) > 50  # the trial did pay, across the kills

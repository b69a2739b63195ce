"""Crash safety: a ledger client process SIGKILLed while its batches are in flight loses nothing it
acknowledged and applies nothing twice, on SQLite (one file) and on PostgreSQL.

The child (tests/integration/workers/crash_worker.py) runs 8 client threads through one TransferBatcher
and appends every acknowledged (id, code) to a file it fsyncs before going on. The parent kills it at a
random moment after a few hundred acknowledgements, three times; each restart submits new ids and
resubmits some of the ones never acknowledged. Then, in the parent:
- `verify_ledger` passes and the stored balances equal the sums recomputed here from the stored rows;
- every transfer acknowledged `ok` (or `exists`) is stored, once, with the content that was submitted;
- every transfer acknowledged with a refusal is not stored; an unacknowledged one is stored at most once,
  and only with its submitted content; no protected wallet is overdrawn.
A last, uninterrupted run resubmits everything still unacknowledged: what a killed run had committed
without acknowledging must come back `exists`, and afterwards every stored row is accounted for.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from qianbao.ledger.verify import verify_ledger
from qianbao.store.database import Database
from tests.integration.workers.common import (
    Ledger,
    Req,
    check_balances,
    nonzero,
    open_ledger,
    pending,
    post,
    posted,
    reaped,
    start_worker,
    stored_content,
    stored_ledger,
    totals_from_rows,
    void,
    write_json,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(40)]

CLIENTS = 8
WALLETS = 20
PER_CLIENT = 120  # more than a killed run gets through (it is killed after at most 400 acks)
KILLED_RUNS = 3

REFUSALS = {"exceeds_credits", "linked_event_failed", "pending_not_found", "pending_already_posted",
            "pending_already_voided"}  # fmt: skip

Submission = list[Req]  # one client call: one request, or a linked chain


@dataclass
class Journal:
    """Everything submitted (by id) and everything acknowledged, across runs."""

    requests: dict[str, Req] = field(default_factory=dict)
    submissions: list[Submission] = field(default_factory=list)
    acks: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def unacknowledged(self) -> list[Submission]:
        return [sub for sub in self.submissions if any(req["id"] not in self.acks for req in sub)]


def new_submissions(rng: random.Random, ledger: Ledger, run: int, journal: Journal) -> list[list[Submission]]:
    """Per client: transfers between wallets (often more than the payer has), linked payment+fee
    pairs, and holds that the same client later posts (fully or partly) or voids."""
    clients: list[list[Submission]] = []
    n = 0
    for c in range(CLIENTS):
        subs: list[Submission] = []
        later: dict[int, list[Submission]] = defaultdict(list)
        for step in range(PER_CLIENT):
            subs.extend(later.pop(step, []))
            n += 1
            tid = f"r{run}-c{c}-{n}"
            a, b = rng.sample(ledger.wallets, 2)
            roll = rng.random()
            if roll < 0.6:
                subs.append([posted(tid, a, b, rng.randint(1, 400))])
            elif roll < 0.75:
                subs.append([posted(tid, a, b, rng.randint(1, 300), linked=True),
                             posted(tid + ".fee", a, ledger.fees, rng.randint(1, 20))])  # fmt: skip
            else:
                hold = pending(tid, a, b, rng.randint(1, 300))
                subs.append([hold])
                resolution = rng.random()
                if resolution < 0.4:
                    follow = post(tid + ".post", tid)
                elif resolution < 0.7:
                    follow = post(tid + ".post", tid, rng.randint(1, hold["amount"]))
                else:
                    follow = void(tid + ".void", tid)
                later[step + rng.randint(1, 5)].append([follow])
        for step in sorted(later):
            subs.extend(later[step])
        clients.append(subs)
        for sub in subs:
            journal.submissions.append(sub)
            journal.requests.update((req["id"], req) for req in sub)
    return clients


def with_resubmissions(rng: random.Random, clients: list[list[Submission]], journal: Journal,
                       fraction: float) -> list[list[Submission]]:  # fmt: skip
    """Mix `fraction` of the still-unacknowledged submissions into the first steps of the clients."""
    pending_subs = journal.unacknowledged()
    chosen = rng.sample(pending_subs, int(len(pending_subs) * fraction))
    for i, sub in enumerate(chosen):
        target = clients[i % len(clients)]
        target.insert(rng.randint(0, min(len(target), 20)), sub)
    return clients


# -- running and killing the child ----------------------------------------------------------------------


def run_child(tmp_path: Path, url: str, run: int, clients: list[list[Submission]], *, kill_after: int | None,
              rng: random.Random, deadline: float) -> int:  # fmt: skip
    """Run the worker; with `kill_after`, SIGKILL it at a random moment after that many acknowledgements.
    Returns how many acknowledgements it wrote."""
    plan = tmp_path / f"plan{run}.json"
    acks = tmp_path / f"acks{run}.log"
    log = tmp_path / f"worker{run}.log"
    write_json(
        plan, {"url": url, "window_ms": 1.0, "clients": [[{"requests": s} for s in subs] for subs in clients]}
    )
    acks.touch()
    procs: list[Any] = []
    with reaped(procs):
        procs.append(start_worker("crash_worker", str(plan), str(acks), log=log))
        proc = procs[0]
        if kill_after is None:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            assert code == 0, log.read_text()[-4000:]
        else:
            while _count_lines(acks) < kill_after:
                assert proc.poll() is None, (
                    "the worker ended before it was killed\n" + log.read_text()[-4000:]
                )
                assert time.monotonic() < deadline, "the worker was too slow to acknowledge"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.03))  # a random moment, with batches in flight
            proc.kill()
            assert proc.wait(timeout=10) == -9, "the worker was not killed: it had finished"
    return _count_lines(acks)


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def read_acks(path: Path, journal: Journal) -> None:
    data = path.read_text()
    lines = data.split("\n")[:-1]  # a torn last line (no newline) was never acknowledged
    for line in lines:
        tid, code = line.split("\t")
        journal.acks[tid].append(code)


def wait_for_other_sessions(db: Database, deadline: float) -> None:
    """On PostgreSQL, until the killed children's sessions are gone (their transactions ended)."""
    if not db.is_postgresql:
        return
    while time.monotonic() < deadline:
        with db.read() as conn:
            others = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        if not others:
            return
        time.sleep(0.02)
    raise AssertionError("sessions of the killed workers are still open")


# -- the invariants -------------------------------------------------------------------------------------


def check(ledger: Ledger, journal: Journal, *, complete: bool) -> dict[str, int]:
    db = Database(ledger.url)
    try:
        wait_for_other_sessions(db, time.monotonic() + 10)
        report = verify_ledger(db)
    finally:
        db.dispose()
    assert report.ok, report.findings[:10]
    transfers, balances, protected = stored_ledger(ledger.url)

    codes = Counter(code for got in journal.acks.values() for code in got)
    assert set(codes) <= REFUSALS | {"ok", "exists"}, codes  # no errors, no exists_with_different_fields

    setup = {req["id"]: req for req in ledger.setup}
    requests = {**setup, **journal.requests}
    for tid, got in journal.acks.items():
        assert tid in journal.requests
        assert got.count("ok") <= 1, (tid, got)  # applied once, acknowledged once
        if "ok" in got or "exists" in got:
            assert tid in transfers, f"{tid} acknowledged {got} but not stored"
            assert transfers[tid] == stored_content(requests[tid], requests), tid
        else:
            assert tid not in transfers, f"{tid} refused ({got}) but stored"
    committed_unacknowledged = 0
    for tid, row in transfers.items():
        assert tid in requests, f"stored transfer {tid} was never submitted"
        assert row == stored_content(requests[tid], requests), tid
        if tid not in setup and tid not in journal.acks:
            committed_unacknowledged += 1
    if complete:  # every submission was finally acknowledged: every row is an `ok` or an `exists`
        assert committed_unacknowledged == 0
        acknowledged = {tid for tid, got in journal.acks.items() if "ok" in got or "exists" in got}
        assert set(transfers) == acknowledged | set(setup)

    # The balances are the sums of the stored rows; no overdraft; debits equal credits.
    assert {k: v for k, v in balances.items() if any(v)} == nonzero(
        totals_from_rows((tid, *row) for tid, row in transfers.items())
    )
    check_balances(balances, protected)
    return {"rows": len(transfers), "committed_unacknowledged": committed_unacknowledged, **codes}


@contextmanager
def noted(note: str) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        exc.add_note(note)
        raise


def test_sigkill_while_batches_are_in_flight(backend, fresh_database_url, tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    deadline = time.monotonic() + 32
    ledger = open_ledger(fresh_database_url, wallets=WALLETS, funded=1_000)
    journal = Journal()
    with noted(f"{backend}, random seed {seed}"):
        for run in range(KILLED_RUNS):
            clients = new_submissions(rng, ledger, run, journal)
            if run:  # continue with new ids, resubmitting half of what was never acknowledged
                clients = with_resubmissions(rng, clients, journal, 0.5)
            kill_after = rng.randint(200, 400)
            written = run_child(
                tmp_path, ledger.url, run, clients, kill_after=kill_after, rng=rng, deadline=deadline
            )
            assert written >= kill_after
            read_acks(tmp_path / f"acks{run}.log", journal)
        after_kills = check(ledger, journal, complete=False)
        assert after_kills["ok"] >= 300 and after_kills["exceeds_credits"] >= 10, after_kills

        # One more run, not killed: resubmit everything never acknowledged.
        leftovers = journal.unacknowledged()
        before = {tid for sub in leftovers for req in sub if (tid := req["id"]) not in journal.acks}
        clients = [leftovers[i::CLIENTS] for i in range(CLIENTS)]
        run_child(tmp_path, ledger.url, KILLED_RUNS, clients, kill_after=None, rng=rng, deadline=deadline)
        read_acks(tmp_path / f"acks{KILLED_RUNS}.log", journal)
        final = check(ledger, journal, complete=True)
        # What a killed run committed without acknowledging came back as `exists` (idempotent replay).
        replayed = Counter(journal.acks[tid][-1] for tid in before)
        assert replayed["exists"] == after_kills["committed_unacknowledged"], replayed
        assert final["rows"] == after_kills["rows"] + replayed["ok"]

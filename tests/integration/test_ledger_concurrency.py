"""Real races on the ledger: two OS processes, each with its own Database, LedgerEngine and
TransferBatcher, and 8 client threads each, hammer one database at the same time.

What must hold afterwards, whatever the interleaving (GUIDE §3-4):
- `verify_ledger` agrees with the stored balances, and the balances equal exactly what the acknowledged
  `ok` results imply (nothing applied twice, nothing acknowledged but lost, nothing applied unacknowledged);
- no overdraft-protected account ever has debits_posted + debits_pending > credits_posted;
- a transfer id is stored at most once; the same id submitted by both processes at once gives one `ok`
  and `exists` for the same content, `exists_with_different_fields` for different content;
- money is conserved.
The worker process is tests/integration/workers/ledger_race.py; each test runs in its own fresh database.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.ledger.verify import verify_ledger
from qianbao.store.database import Database
from tests.integration.workers.common import (
    CURRENCY,
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
    totals_from_requests,
    totals_from_rows,
    void,
    wait_all,
    write_json,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(40)]

PROCESSES = 2
CLIENTS = 8  # per process: 16 concurrent clients in all
WALLETS = 30
STEPS = 90  # submissions per client, roughly

FAILURES = {"exceeds_credits", "linked_event_failed", "pending_not_found", "pending_already_posted",
            "pending_already_voided"}  # fmt: skip
ALLOWED = FAILURES | {"ok", "exists", "exists_with_different_fields"}


# -- plans: what each client of each process submits --------------------------------------------------


@dataclass
class DupGroup:
    """One transfer id submitted several times at once, from both processes."""

    kind: str  # "same" | "different" | "disjoint" | "wallet_same"
    id: str
    variants: list[Req] = field(default_factory=list)


@dataclass
class Plan:
    clients: list[list[list[dict[str, Any]]]]  # [process][client] -> submissions
    dups: list[DupGroup] = field(default_factory=list)


def _sub(*requests: Req, at: float | None = None) -> dict[str, Any]:
    return {"at": at, "requests": list(requests)}


def race_plan(rng: random.Random, ledger: Ledger, *, disjoint_conflicts: bool) -> Plan:
    """Random transfers among the wallets (many of them too big for the payer), holds later posted or
    voided, linked payment+fee pairs, holds that one process posts while the other voids them, and
    duplicated ids that both processes submit at the same step."""
    plan = Plan([[[] for _ in range(CLIENTS)] for _ in range(PROCESSES)])
    later: dict[tuple[int, int, int], list[dict[str, Any]]] = defaultdict(list)  # (p, c, step) -> subs
    w = ledger.wallets
    n = 0

    def new_id(tag: str) -> str:
        nonlocal n
        n += 1
        return f"{tag}-{n}"

    def two_wallets() -> tuple[str, str]:
        a, b = rng.sample(w, 2)
        return a, b

    def regular(p: int, c: int, step: int) -> dict[str, Any]:
        roll = rng.random()
        a, b = two_wallets()
        if roll < 0.6:
            return _sub(posted(new_id("pay"), a, b, rng.randint(1, 250)))
        if roll < 0.75:
            tid = new_id("pay")
            return _sub(posted(tid, a, b, rng.randint(1, 200), linked=True),
                        posted(tid + ".fee", a, ledger.fees, rng.randint(1, 20)))  # fmt: skip
        hold = pending(new_id("hold"), a, b, rng.randint(1, 200))
        resolution_roll = rng.random()
        if resolution_roll < 0.4:
            resolution = post(hold["id"] + ".post", hold["id"])
        elif resolution_roll < 0.7:
            resolution = post(hold["id"] + ".post", hold["id"], rng.randint(1, hold["amount"]))
        else:
            resolution = void(hold["id"] + ".void", hold["id"])
        later[(p, c, step + rng.randint(1, 4))].append(_sub(resolution))
        return _sub(hold)

    for step in range(STEPS):
        for c in range(CLIENTS):
            subs: list[list[dict[str, Any]]] = [later.pop((p, c, step), []) for p in range(PROCESSES)]
            roll = rng.random()
            if roll < 0.1:  # the same id from both processes (and sometimes a second client) at once
                kinds = ["same", "different", "wallet_same"] + (["disjoint"] if disjoint_conflicts else [])
                group = DupGroup(rng.choice(kinds), new_id("dup"))
                a, b = two_wallets()
                amount = rng.randint(1, 100)
                if group.kind == "same":
                    group.variants = [posted(group.id, ledger.funding, a, amount)] * 2
                elif group.kind == "different":  # same accounts, other amount: the rows lock them in turn
                    group.variants = [posted(group.id, ledger.funding, a, amount),
                                      posted(group.id, ledger.funding, a, amount + 1)]  # fmt: skip
                elif group.kind == "disjoint":  # no account in common: only the id conflicts
                    group.variants = [posted(group.id, ledger.funding, a, amount),
                                      posted(group.id, ledger.reserve, b, amount + 1)]  # fmt: skip
                else:  # wallet to wallet: may be refused for lack of funds, then retried by the other
                    group.variants = [posted(group.id, a, b, rng.randint(1, 250))] * 2
                for p in range(PROCESSES):
                    subs[p].append(_sub(group.variants[p]))
                if rng.random() < 0.5:  # a third copy from another client of process 0
                    third = group.variants[1]
                    later[(0, (c + 1) % CLIENTS, step + 1)].insert(0, _sub(third))
                    group.variants = [*group.variants, third]
                plan.dups.append(group)
            elif roll < 0.18:  # process 0 holds; then process 0 posts it while process 1 voids it
                a, b = two_wallets()
                hold = pending(new_id("contest"), a, b, rng.randint(1, 150))
                subs[0].append(_sub(hold))
                subs[1].append(regular(1, c, step))
                later[(0, c, step + 2)].append(_sub(post(hold["id"] + ".post", hold["id"])))
                later[(1, c, step + 2)].append(_sub(void(hold["id"] + ".void", hold["id"])))
            else:
                for p in range(PROCESSES):
                    subs[p].append(regular(p, c, step))
            for p in range(PROCESSES):
                plan.clients[p][c].extend(subs[p])
    for (p, c, _step), subs in sorted(later.items()):  # resolutions scheduled past the last step
        plan.clients[p][c].extend(subs)
    return plan


def hot_account_plan(rng: random.Random, ledger: Ledger) -> Plan:
    """Every client pays the one merchant from random wallets; a few payments are holds posted later."""
    plan = Plan([[[] for _ in range(CLIENTS)] for _ in range(PROCESSES)])
    n = 0
    for p in range(PROCESSES):
        for c in range(CLIENTS):
            for _ in range(STEPS):
                n += 1
                payer = rng.choice(ledger.wallets)
                amount = rng.randint(1, 60)
                if rng.random() < 0.1:
                    hold = pending(f"hot-hold-{n}", payer, ledger.merchant, amount)
                    plan.clients[p][c].append(_sub(hold))
                    plan.clients[p][c].append(_sub(post(f"hot-post-{n}", hold["id"])))
                else:
                    plan.clients[p][c].append(_sub(posted(f"hot-{n}", payer, ledger.merchant, amount)))
    return plan


# -- running the processes ----------------------------------------------------------------------------


def run_race(tmp_path: Path, url: str, plan: Plan, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Start one worker per process plan, release them together, collect their results."""
    deadline = time.monotonic() + timeout
    procs: list[Any] = []
    logs = [tmp_path / f"worker{p}.log" for p in range(len(plan.clients))]
    with reaped(procs):
        for p, clients in enumerate(plan.clients):
            plan_file = tmp_path / f"plan{p}.json"
            ready, go = str(tmp_path / f"ready{p}"), str(tmp_path / "go")
            write_json(
                plan_file,
                {"url": url, "window_ms": 1.0, "clients": clients, "ready_path": ready, "go_path": go},
            )
            procs.append(
                start_worker("ledger_race", str(plan_file), str(tmp_path / f"result{p}.json"), log=logs[p])
            )
        while not all((tmp_path / f"ready{p}").exists() for p in range(len(procs))):
            assert all(proc.poll() is None for proc in procs), _read(logs)
            assert time.monotonic() < deadline, "workers never got ready\n" + _read(logs)
            time.sleep(0.005)
        write_json(tmp_path / "go", time.time() + 0.05)
        codes = wait_all(procs, deadline)
    assert codes == [0] * len(procs), _read(logs)
    results = [json.loads((tmp_path / f"result{p}.json").read_text()) for p in range(len(procs))]
    for result in results:
        assert result["unfinished_threads"] == 0
        # A batch that failed after its retries would have surfaced to the clients as an error.
        assert result["batch_failures"] == 0, result["messages"]
    # The processes really overlapped: each started before the other finished.
    assert max(r["started"] for r in results) < min(r["finished"] for r in results)
    return results


def _read(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in logs if log.exists())


@dataclass
class Outcome:
    """Every (request, code) every client got, aligned with what it submitted."""

    pairs: list[tuple[Req, str]]
    by_id: dict[str, list[tuple[Req, str]]]
    retries: int


def collect(plan: Plan, results: list[dict[str, Any]]) -> Outcome:
    pairs: list[tuple[Req, str]] = []
    for p, result in enumerate(results):
        for c, got in enumerate(result["clients"]):
            sent = [req for sub in plan.clients[p][c] for req in sub["requests"]]
            assert [tid for tid, _ in got] == [req["id"] for req in sent], f"process {p} client {c}"
            pairs += [(req, code) for req, (_tid, code) in zip(sent, got, strict=True)]
    by_id: dict[str, list[tuple[Req, str]]] = defaultdict(list)
    for req, code in pairs:
        by_id[req["id"]].append((req, code))
    return Outcome(pairs, by_id, sum(r["retries"] for r in results))


# -- the invariants -----------------------------------------------------------------------------------


def check_ledger(ledger: Ledger, plan: Plan, outcome: Outcome) -> None:
    db = Database(ledger.url)
    try:
        report = verify_ledger(db)
    finally:
        db.dispose()
    assert report.ok, report.findings[:10]
    transfers, balances, protected = stored_ledger(ledger.url)

    codes = Counter(code for _req, code in outcome.pairs)
    assert set(codes) <= ALLOWED, codes

    # No overdraft (holds count), nothing negative, debits equal credits.
    check_balances(balances, protected)

    # Every `ok` is one stored row (and vice versa), with the content that was acknowledged.
    oks = [req for req, code in outcome.pairs if code == "ok"]
    assert len({req["id"] for req in oks}) == len(oks), "an id was acknowledged `ok` twice"
    assert len(oks) == len(transfers) - len(ledger.setup)
    requests = {req["id"]: req for req in ledger.setup + oks}
    for req in oks:
        assert req["id"] in transfers, f"{req['id']} acknowledged ok but not stored"
        assert transfers[req["id"]] == stored_content(req, requests), req
    for tid, got in outcome.by_id.items():
        if any(code in ("ok", "exists", "exists_with_different_fields") for _req, code in got):
            assert tid in transfers, f"{tid} acknowledged {got} but not stored"
        else:
            assert tid not in transfers, f"{tid} refused every time ({got}) but stored"

    # The balances are exactly what the acknowledged results say, and what the stored rows say.
    expected = nonzero(totals_from_requests(ledger.setup + oks, requests))
    assert nonzero(totals_from_rows((tid, *row) for tid, row in transfers.items())) == expected
    assert {k: v for k, v in balances.items() if any(v)} == expected

    # Conservation: what the wallets, fees and merchant hold is what the two sources paid out.
    sources = ledger.sources
    paid_out = sum(balances[s][0] - balances[s][1] for s in sources)
    held = sum(cp - dp for account, (dp, cp, _dq, _cq) in balances.items() if account not in sources)
    assert held == paid_out
    assert sum(v[2] for v in balances.values()) == sum(v[3] for v in balances.values())
    from_sources = sum(r["amount"] for r in oks if r["kind"] == "posted" and r["debit"] in sources)
    assert paid_out == ledger.funded * len(ledger.wallets) + from_sources

    # Each hold is resolved at most once.
    resolutions = Counter(req["pending_id"] for req in oks if req.get("pending_id"))
    assert all(count == 1 for count in resolutions.values())

    check_duplicates(plan, outcome, transfers)


def check_duplicates(plan: Plan, outcome: Outcome, transfers: dict[str, tuple[Any, ...]]) -> None:
    for group in plan.dups:
        got = outcome.by_id[group.id]
        assert len(got) == len(group.variants), group
        codes = [code for _req, code in got]
        if group.kind == "wallet_same":  # funds may run short for one copy and suffice for a later one
            assert set(codes) <= {"ok", "exists", "exceeds_credits"}, got
            assert codes.count("ok") <= 1, got
            assert codes.count("ok") == 1 or "exists" not in codes, got
            continue
        assert codes.count("ok") == 1, (group, got)
        [winner] = [req for req, code in got if code == "ok"]
        for req, code in got:
            if code == "ok":
                continue
            same = stored_content(req, {}) == stored_content(winner, {})
            assert code == ("exists" if same else "exists_with_different_fields"), (group, got)
        assert transfers[group.id] == stored_content(winner, {})


def check_exercised(plan: Plan, outcome: Outcome) -> None:
    """The race did what it is for (a test that cannot fail is a defect)."""
    codes = Counter(code for _req, code in outcome.pairs)
    assert codes["exceeds_credits"] >= 0.05 * len(outcome.pairs), codes
    assert codes["ok"] >= 0.3 * len(outcome.pairs), codes
    dup_codes = Counter(code for group in plan.dups for _req, code in outcome.by_id[group.id])
    assert dup_codes["exists"] >= 10 and dup_codes["exists_with_different_fields"] >= 5, dup_codes
    kinds = Counter(req["kind"] for req, code in outcome.pairs if code == "ok")
    assert kinds["post_pending"] and kinds["void_pending"] and kinds["pending"], kinds
    # A contested hold's loser sees it already resolved, or (when its process ran ahead) not created yet.
    contest_losses = (
        codes["pending_already_posted"] + codes["pending_already_voided"] + codes["pending_not_found"]
    )
    assert codes["linked_event_failed"] and contest_losses, codes


@contextmanager
def noted(note: str) -> Iterator[None]:
    """Attach `note` (the random seed) to any failure inside the block."""
    try:
        yield
    except AssertionError as exc:
        exc.add_note(note)
        raise


# -- the tests ----------------------------------------------------------------------------------------


def _pg_url(postgres_server: Any) -> str:
    return str(postgres_server.create(template=postgres_server.migrated_template()))


def test_two_processes_racing_on_postgresql(postgres_server, tmp_path):
    seed = random.randrange(2**32)
    ledger = open_ledger(_pg_url(postgres_server), wallets=WALLETS, funded=300)
    plan = race_plan(random.Random(seed), ledger, disjoint_conflicts=False)
    with noted(f"random seed {seed}"):
        outcome = collect(plan, run_race(tmp_path, ledger.url, plan))
        check_ledger(ledger, plan, outcome)
        check_exercised(plan, outcome)


def test_hot_merchant_account_on_postgresql(postgres_server, tmp_path):
    seed = random.randrange(2**32)
    ledger = open_ledger(_pg_url(postgres_server), wallets=WALLETS, funded=400)
    plan = hot_account_plan(random.Random(seed), ledger)
    with noted(f"random seed {seed}"):
        outcome = collect(plan, run_race(tmp_path, ledger.url, plan))
        check_ledger(ledger, plan, outcome)

    requests = {req["id"]: req for req, _code in outcome.pairs}
    received = sum(
        stored_content(req, requests)[3]
        for req, code in outcome.pairs
        if code == "ok" and req["kind"] != "pending"
    )
    db = Database(ledger.url)
    try:
        with db.read() as conn:
            balance, on_hold = conn.exec_driver_sql(
                "SELECT credits_posted - debits_posted, credits_pending FROM ledger_accounts"
                " WHERE id = 'merchant'"
            ).one()
    finally:
        db.dispose()
    assert balance == received
    assert on_hold == 0  # every hold that was placed was then posted
    codes = Counter(code for _req, code in outcome.pairs)
    assert codes["ok"] >= 100 and codes["exceeds_credits"] >= 100, codes  # the wallets ran dry
    assert balance <= ledger.funded * len(ledger.wallets)


def test_two_processes_racing_on_one_sqlite_file(sqlite_files, tmp_path):
    """BEGIN IMMEDIATE serialises the two processes' batches; waiting for the lock is not an error.
    Here even conflicting ids on disjoint accounts must come out right."""
    seed = random.randrange(2**32)
    ledger = open_ledger(sqlite_files.fresh(), wallets=WALLETS, funded=300)
    plan = race_plan(random.Random(seed), ledger, disjoint_conflicts=True)
    with noted(f"random seed {seed}"):
        outcome = collect(plan, run_race(tmp_path, ledger.url, plan))
        check_ledger(ledger, plan, outcome)
        check_exercised(plan, outcome)
    assert any(group.kind == "disjoint" for group in plan.dups)


# -- a racing insert of the same id on PostgreSQL -------------------------------------------------------
# Account locks do not serialise two batches that share only a transfer id: the loser's INSERT hits the
# primary key. That must end in a retry which answers `exists_with_different_fields`. (Two bugs were seen
# here while these tests were written: INSERT … ON CONFLICT (id) DO NOTHING answered `ok` and moved money
# with no row; then the driver's raw UniqueViolation escaped the retry and failed the whole batch.)


def test_racing_writer_of_same_id_on_other_accounts_postgresql(postgres_server):
    """Deterministic: a second transaction inserts id X (on other accounts) and commits only after our
    batch has read that X does not exist yet and is waiting on X's index entry."""
    ledger = open_ledger(_pg_url(postgres_server), wallets=WALLETS, funded=100)
    db = Database(ledger.url)
    try:
        engine = LedgerEngine(db)
        racer = LedgerEngine(db)
        w = ledger.wallets
        got: dict[str, Any] = {}

        def submit() -> None:
            try:
                got["results"] = engine.create_transfers([TransferSpec.posted("X", w[0], w[1], 20, CURRENCY)])
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                got["error"] = repr(exc)

        with db.write() as conn:
            [first] = racer.apply_in(conn, [TransferSpec.posted("X", w[2], w[3], 10, CURRENCY)])
            assert first.code is ResultCode.OK
            thread = threading.Thread(target=submit)
            thread.start()
            try:
                _wait_until_blocked(db, deadline=time.monotonic() + 10)
            finally:
                conn.commit()  # the racing transaction commits X while our batch waits on it
        thread.join(10)
        assert not thread.is_alive()
        report = verify_ledger(db)
        with db.read() as conn:
            w0 = conn.exec_driver_sql(
                "SELECT debits_posted FROM ledger_accounts WHERE id = 'w00'"
            ).scalar_one()
    finally:
        db.dispose()
    codes = [r.code for r in got.get("results", [])]
    assert (got.get("error"), codes, w0, report.findings) == (
        None,
        [ResultCode.EXISTS_WITH_DIFFERENT_FIELDS],
        0,
        [],
    )


def _wait_until_blocked(db: Database, deadline: float) -> None:
    """Until some other session of this database waits on a lock (our batch, on X's index entry)."""
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            waiting = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            ).scalar_one()
            conn.rollback()
        if waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the batch never blocked on the racing insert")


def test_two_processes_same_ids_on_disjoint_accounts_postgresql(postgres_server, tmp_path):
    """The same race between two real processes: in rounds timed to start together, process 0 pays
    funding -> wallet A and process 1 pays reserve -> wallet B under the same id."""
    ledger = open_ledger(_pg_url(postgres_server), wallets=WALLETS, funded=100)
    rounds = 300
    plan = Plan([[[] for _ in range(1)] for _ in range(PROCESSES)])
    for k in range(rounds):
        group = DupGroup("disjoint", f"clash-{k}")
        a, b = ledger.wallets[(2 * k) % WALLETS], ledger.wallets[(2 * k + 1) % WALLETS]
        group.variants = [posted(group.id, ledger.funding, a, 5), posted(group.id, ledger.reserve, b, 7)]
        for p in range(PROCESSES):
            plan.clients[p][0].append(_sub(group.variants[p], at=0.1 + 0.01 * k))
        plan.dups.append(group)
    outcome = collect(plan, run_race(tmp_path, ledger.url, plan))
    check_ledger(ledger, plan, outcome)

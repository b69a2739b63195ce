"""Property tests of `qianbao.ledger.rules.apply_batch`, the ledger's in-memory decision procedure.

No database: each example opens a handful of in-memory accounts at zero, applies a random batch, writes
the outcome back the way the engine does (only `touched` accounts and `created` transfers), then applies
a second random batch against that state (stored transfers, holds and their resolutions, a later clock).
After each batch the written-back balances must equal what the transfer history says they are.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qianbao.ledger.model import (
    SUCCESS_CODES,
    Account,
    AccountStatus,
    NormalBalance,
    ResultCode,
    Transfer,
    TransferKind,
    TransferResult,
    TransferSpec,
)
from qianbao.ledger.rules import BatchOutcome, BatchState, apply_batch, expiry_id

R = ResultCode
K = TransferKind
NOW = 1_767_225_600_000_000
SECOND = 1_000_000
ACCOUNT_NAMES = ["A", "B", "C", "D", "E"]
MOVES = (K.POSTED, K.PENDING)


# -- building state ---------------------------------------------------------------------------------


def make_account(
    id: str,
    *,
    currency: str = "CNY",
    normal: NormalBalance = NormalBalance.CREDIT,
    dmnec: bool = False,
    cmned: bool = False,
    ceiling: int | None = None,
    status: AccountStatus = AccountStatus.OPEN,
) -> Account:
    return Account(id, currency, "test", None, normal, dmnec, cmned, ceiling, status, 0, 0, 0, 0, None, 0)


def totals(account: Account) -> tuple[int, int, int, int]:
    return (account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending)


@dataclass
class Ledger:
    """What a database would hold: account rows and the transfer history."""

    accounts: dict[str, Account]
    history: list[Transfer] = field(default_factory=list)

    def state_for(self, specs: Sequence[TransferSpec], now: int) -> BatchState:
        """Load what the engine loads for `specs`: copies of the accounts, stored transfers with the
        requested ids, the transfers the requests refer to as holds, and how those were resolved."""
        by_id = {t.id: t for t in self.history}
        pending_ids = {s.pending_id for s in specs if s.pending_id}
        resolutions = {t.pending_id: t.kind for t in self.history if t.pending_id in pending_ids}
        return BatchState(
            accounts={k: a.copy() for k, a in self.accounts.items()},
            existing={s.id: by_id[s.id] for s in specs if s.id in by_id},
            pendings={p: by_id[p] for p in pending_ids if p in by_id},
            resolutions=resolutions,  # type: ignore[arg-type]
            now=now,
        )

    def write_back(self, outcome: BatchOutcome) -> None:
        for account_id, account in outcome.touched.items():
            self.accounts[account_id] = account.copy()
        self.history.extend(outcome.created)


def recompute(accounts: Iterable[str], history: Sequence[Transfer]) -> dict[str, tuple[int, int, int, int]]:
    """Balances as the history says they are (the same sums `qianbao ledger verify` takes)."""
    resolved = {t.pending_id for t in history if t.pending_id is not None}
    sums = {a: [0, 0, 0, 0] for a in accounts}
    for t in history:
        if t.kind in (K.POSTED, K.POST_PENDING):
            sums[t.debit_account_id][0] += t.amount
            sums[t.credit_account_id][1] += t.amount
        elif t.kind is K.PENDING and t.id not in resolved:
            sums[t.debit_account_id][2] += t.amount
            sums[t.credit_account_id][3] += t.amount
    return {a: (s[0], s[1], s[2], s[3]) for a, s in sums.items()}


def chains(specs: Sequence[TransferSpec], ends: frozenset[int]) -> list[range]:
    """Split a batch into its chains: a chain ends at an unlinked request, a group end or the batch end."""
    out: list[range] = []
    start = 0
    for i, spec in enumerate(specs):
        if not spec.linked or i in ends or i == len(specs) - 1:
            out.append(range(start, i + 1))
            start = i + 1
    return out


# -- strategies -------------------------------------------------------------------------------------


@st.composite
def account_sets(draw: st.DrawFn) -> dict[str, Account]:
    """The first account is unbounded and open, so money can enter the others."""
    count = draw(st.integers(3, len(ACCOUNT_NAMES)))
    accounts = {"A": make_account("A", normal=draw(st.sampled_from(NormalBalance)))}
    for name in ACCOUNT_NAMES[1:count]:
        flag = draw(st.sampled_from(["none"] * 5 + ["dmnec"] * 4 + ["cmned"]))
        accounts[name] = make_account(
            name,
            currency=draw(often("CNY", "USD", 25)),  # type: ignore[arg-type]
            normal=draw(st.sampled_from(NormalBalance)),
            dmnec=flag == "dmnec",
            cmned=flag == "cmned",
            ceiling=draw(st.sampled_from([None] * 6 + [0, 40, 120])),
            status=draw(
                st.sampled_from(
                    [AccountStatus.OPEN] * 25 + [AccountStatus.DEBIT_FROZEN, AccountStatus.FROZEN]
                )
            ),
        )
    return accounts


def often(common: object, rare: object, odds: int = 6) -> st.SearchStrategy[object]:
    """`common` about `odds` times in `odds + 1` (a plain `a | b` would pick each half the time)."""
    return st.sampled_from([common] * odds + [rare])


@st.composite
def transfer_specs(
    draw: st.DrawFn, account_ids: Sequence[str], earlier: Sequence[TransferSpec], sloppy: bool
) -> TransferSpec:
    """A fresh well-formed request, an exact replay of an earlier one, or an earlier id with other fields.
    `sloppy` requests carry every kind of mistake now and then."""

    def maybe(good: object, bad: object, odds: int = 12) -> object:
        return draw(often(good, bad, odds)) if sloppy else good

    linked = draw(st.sampled_from([False, False, False, True]))
    how = draw(st.sampled_from(["fresh"] * 8 + ["replay", "reuse"])) if earlier else "fresh"
    if how == "replay":
        return replace(draw(st.sampled_from(earlier)), linked=linked)
    spec_id = draw(st.sampled_from(earlier)).id if how == "reuse" else f"t{len(earlier)}"
    holds = [s.id for s in earlier if s.kind is K.PENDING]
    kinds = [K.POSTED] * 3 + [K.PENDING] * 3
    if holds or sloppy:
        kinds += [K.POST_PENDING] * 2 + [K.VOID_PENDING, K.EXPIRE_PENDING]
    kind = draw(st.sampled_from(kinds))
    metadata = draw(st.sampled_from([None] * 6 + [{"n": 1}, {"n": 2}]))
    if kind in MOVES:
        debit = draw(st.sampled_from([*account_ids, account_ids[0], account_ids[0]]))  # A can always pay
        others = [a for a in account_ids if a != debit]
        timeout = draw(st.sampled_from([None, 10, 100])) if kind is K.PENDING else None
        return TransferSpec(
            id=maybe(spec_id, draw(st.sampled_from(["", "ledger:x", expiry_id("t0")]))),  # type: ignore[arg-type]
            kind=kind,
            debit_account_id=maybe(debit, "missing"),  # type: ignore[arg-type]
            credit_account_id=maybe(draw(st.sampled_from(others)), debit),  # type: ignore[arg-type]
            amount=maybe(draw(st.integers(1, 60)), draw(st.sampled_from([0, -1]))),  # type: ignore[arg-type]
            currency=maybe("CNY", "USD"),  # type: ignore[arg-type]
            code=draw(st.sampled_from(["transfer"] * 4 + ["", "fee"])),
            timeout_seconds=maybe(timeout, 0 if kind is K.PENDING else 10),  # type: ignore[arg-type]
            pending_id=maybe(None, "t0"),  # type: ignore[arg-type]
            metadata=metadata,
            linked=linked,
        )
    pending_id = maybe(
        draw(st.sampled_from(holds)) if holds else "t0", draw(st.sampled_from([None, "nowhere", "t0"]))
    )
    if kind is K.EXPIRE_PENDING and pending_id is not None and how == "fresh":
        spec_id = expiry_id(pending_id)  # type: ignore[arg-type]  # the only id an expiry may have
    return TransferSpec(
        id=maybe(spec_id, draw(st.sampled_from(["", "ledger:x"]))),  # type: ignore[arg-type]
        kind=kind,
        pending_id=pending_id,  # type: ignore[arg-type]
        amount=draw(st.sampled_from([None] * 4 + [0, 5, 20, 40, 70])),
        metadata=metadata,
        linked=linked,
    )


@st.composite
def batches(
    draw: st.DrawFn, account_ids: Sequence[str], earlier: Sequence[TransferSpec] = (), sloppy: bool = False
) -> tuple[list[TransferSpec], frozenset[int]]:
    size = draw(st.integers(1, 14))
    specs: list[TransferSpec] = []
    for _ in range(size):
        specs.append(draw(transfer_specs(account_ids, [*earlier, *specs], sloppy)))
    ends = {i for i in range(size) if draw(often(False, True, 3))}  # a group end after ~1 in 4
    return specs, frozenset(ends)


Scenario = tuple[dict[str, Account], list[tuple[list[TransferSpec], frozenset[int], int]]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Three batches: money in from A (so bounded accounts have something to spend), then two random ones,
    the second possibly after some holds timed out."""
    accounts = draw(account_sets())
    ids = list(accounts)
    funding = [
        TransferSpec.posted(f"f{i}", "A", account_id, draw(st.integers(1, 100)), "CNY")
        for i, account_id in enumerate(ids[1:])
    ]
    sloppy = draw(st.booleans())
    first = draw(batches(ids, sloppy=sloppy))
    second = draw(batches(ids, first[0], sloppy))
    later = draw(st.sampled_from([0, 5, 10, 50, 100, 500]))
    return accounts, [
        (funding, frozenset(range(len(funding))), NOW),
        (*first, NOW),
        (*second, NOW + later * SECOND),
    ]


# -- the properties ---------------------------------------------------------------------------------


def check_outcome(
    specs: Sequence[TransferSpec],
    ends: frozenset[int],
    before: Ledger,
    state: BatchState,
    outcome: BatchOutcome,
) -> None:
    results = outcome.results
    # One result per request, in order.
    assert [r.id for r in results] == [s.id for s in specs]

    # `created` is exactly the ok requests' transfers, in request order, with fresh increasing seqs.
    assert outcome.created == [r.transfer for r in results if r.code is R.OK]
    seqs = [t.seq for t in outcome.created]
    assert seqs == sorted(set(seqs))
    if before.history and seqs:
        assert seqs[0] > max(t.seq for t in before.history)
    for spec, result in zip(specs, results, strict=True):
        if result.code is R.OK:
            t = result.transfer
            assert t is not None and t.id == spec.id and t.kind is spec.kind
            assert t.amount > 0 and t.debit_account_id != t.credit_account_id
            assert (t.pending_id is None) == (t.kind in MOVES)
            # Only an expiry lives in the reserved namespace, and only under its one deterministic id.
            assert t.id.startswith("ledger:") == (t.kind is K.EXPIRE_PENDING)
            if t.kind is K.EXPIRE_PENDING:
                assert t.id == expiry_id(t.pending_id or "")
            if spec.amount is not None:
                assert t.amount == spec.amount
        elif result.code in (R.EXISTS, R.EXISTS_WITH_DIFFERENT_FIELDS):
            assert result.transfer is not None and result.transfer.id == spec.id
        else:
            assert result.transfer is None

    # A chain is all-or-none: all succeed, or exactly one says why and the others say linked_event_failed.
    for chain in chains(specs, ends):
        codes = [results[i].code for i in chain]
        if len(chain) > 1 or specs[chain[-1]].linked:
            if specs[chain[-1]].linked:
                assert codes == [R.LINKED_EVENT_CHAIN_OPEN] * len(chain)
                continue
            failures = [c for c in codes if c not in SUCCESS_CODES]
            if failures:
                reasons = [c for c in codes if c is not R.LINKED_EVENT_FAILED]
                # ...so nothing in the chain is ok: `created` holds none of it (checked above).
                assert len(reasons) == 1 and reasons[0] not in SUCCESS_CODES, codes
        assert R.LINKED_EVENT_CHAIN_OPEN not in codes

    # Write the outcome back as the engine would and compare with the history, account by account.
    after = Ledger({k: a.copy() for k, a in before.accounts.items()}, list(before.history))
    after.write_back(outcome)
    expected = recompute(after.accounts, after.history)
    assert {k: totals(a) for k, a in after.accounts.items()} == expected
    # What `touched` leaves out must be unchanged in the batch's working state as well.
    for account_id, account in state.accounts.items():
        assert totals(account) == expected[account_id], account_id

    # Money is conserved: every account started at zero and only transfers moved it.
    assert sum(a.credits_posted - a.debits_posted for a in after.accounts.values()) == 0
    assert sum(a.debits_pending for a in after.accounts.values()) == sum(
        a.credits_pending for a in after.accounts.values()
    )

    # The account flags and ceilings hold, and no total is negative.
    for a in after.accounts.values():
        assert min(totals(a)) >= 0
        if a.debits_must_not_exceed_credits:
            assert a.debits_posted + a.debits_pending <= a.credits_posted, a
        if a.credits_must_not_exceed_debits:
            assert a.credits_posted + a.credits_pending <= a.debits_posted, a
        if a.balance_ceiling is not None:
            if a.normal_balance is NormalBalance.CREDIT:
                assert a.credits_posted + a.credits_pending - a.debits_posted <= a.balance_ceiling, a
            else:
                assert a.debits_posted + a.debits_pending - a.credits_posted <= a.balance_ceiling, a

    # `touched` is exactly the accounts the created transfers moved, as the batch left them.
    moved = {x for t in outcome.created for x in (t.debit_account_id, t.credit_account_id)}
    assert set(outcome.touched) == moved
    changed = {k for k, a in after.accounts.items() if totals(a) != totals(before.accounts[k])}
    assert changed <= moved
    for account_id, account in outcome.touched.items():
        assert account is state.accounts[account_id]

    # A hold is resolved at most once, and only a hold is resolved.
    by_id = {t.id: t for t in after.history}
    assert len(by_id) == len(after.history)
    resolved = Counter(t.pending_id for t in after.history if t.pending_id is not None)
    assert all(n == 1 for n in resolved.values())
    for pending_id in resolved:
        assert by_id[pending_id].kind is K.PENDING

    # The "net after" stamped on each transfer is the account's running posted net.
    running = dict.fromkeys(after.accounts, 0)
    for t in sorted(after.history, key=lambda t: t.seq):
        if t.kind in (K.POSTED, K.POST_PENDING):
            running[t.debit_account_id] -= t.amount
            running[t.credit_account_id] += t.amount
        assert t.debit_net_after == running[t.debit_account_id]
        assert t.credit_net_after == running[t.credit_account_id]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_batches_keep_the_ledger_consistent(
    scenario: Scenario,
) -> None:
    accounts, steps = scenario
    ledger = Ledger({k: a.copy() for k, a in accounts.items()})
    seqs = itertools.count(1)
    for specs, ends, now in steps:
        state = ledger.state_for(specs, now)
        outcome = apply_batch(specs, ends, state, seqs)
        check_outcome(specs, ends, ledger, state, outcome)
        ledger.write_back(outcome)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_apply_batch_is_deterministic(
    scenario: Scenario,
) -> None:
    """The engine retries a whole batch after a race, so deciding twice must give the same answer."""
    accounts, steps = scenario
    ledger = Ledger({k: a.copy() for k, a in accounts.items()})
    for specs, ends, now in steps:
        first = apply_batch(specs, ends, ledger.state_for(specs, now), itertools.count(100))
        again = apply_batch(specs, ends, ledger.state_for(specs, now), itertools.count(100))
        assert first.results == again.results
        assert {k: totals(a) for k, a in first.touched.items()} == {
            k: totals(a) for k, a in again.touched.items()
        }
        ledger.write_back(first)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_chain_decides_like_its_requests_alone_when_it_succeeds(
    scenario: Scenario,
) -> None:
    """Linking changes nothing for a chain that succeeds, and a failed chain is as if it never ran."""
    accounts, steps = scenario
    specs, ends, now = steps[0]
    linked = apply_batch(specs, ends, Ledger(accounts).state_for(specs, now), itertools.count(1))
    unlinked_specs = [replace(s, linked=False) for s in specs]
    # Drop the requests of failed and open chains: the rest must decide exactly as before.
    kept = [
        i
        for chain in chains(specs, ends)
        if all(linked.results[i].code in SUCCESS_CODES for i in chain)
        for i in chain
    ]
    alone = apply_batch(
        [unlinked_specs[i] for i in kept],
        frozenset(range(len(kept))),
        Ledger(accounts).state_for(specs, now),
        itertools.count(1),
    )
    assert [r.code for r in alone.results] == [linked.results[i].code for i in kept]
    assert {k: totals(a) for k, a in alone.touched.items()} == {
        k: totals(a) for k, a in linked.touched.items()
    }


# -- examples ---------------------------------------------------------------------------------------


def fresh(**overrides: Account) -> BatchState:
    accounts = {
        "bank": make_account("bank", normal=NormalBalance.DEBIT),
        "alice": make_account("alice", dmnec=True),
        "bob": make_account("bob", dmnec=True, ceiling=100),
    }
    accounts.update(overrides)
    return BatchState(accounts=accounts, existing={}, pendings={}, resolutions={}, now=NOW)


def run(specs: Sequence[TransferSpec], state: BatchState, ends: Iterable[int] | None = None) -> BatchOutcome:
    group_ends = frozenset(ends) if ends is not None else frozenset({len(specs) - 1})
    return apply_batch(specs, group_ends, state, itertools.count(1))


def codes(results: Sequence[TransferResult]) -> list[ResultCode]:
    return [r.code for r in results]


def test_a_later_request_sees_the_balance_left_by_an_earlier_one() -> None:
    state = fresh()
    outcome = run(
        [
            TransferSpec.posted("f", "bank", "alice", 50, "CNY"),
            TransferSpec.posted("p1", "alice", "bob", 30, "CNY"),
            TransferSpec.posted("p2", "alice", "bob", 30, "CNY"),
            TransferSpec.posted("p3", "alice", "bob", 20, "CNY"),
        ],
        state,
        ends=range(4),
    )
    assert codes(outcome.results) == [R.OK, R.OK, R.EXCEEDS_CREDITS, R.OK]
    assert totals(state.accounts["alice"]) == (50, 50, 0, 0)
    assert [t.seq for t in outcome.created] == [1, 2, 3]


def test_failed_chain_restores_accounts_touched_before_it() -> None:
    state = fresh()
    outcome = run(
        [
            TransferSpec.posted("f", "bank", "alice", 80, "CNY"),
            TransferSpec.pending("h", "alice", "bob", 30, "CNY", linked=True),
            TransferSpec.post("ph", "h", 10, linked=True),
            TransferSpec.posted("x", "alice", "bob", 100, "CNY"),  # fails: the chain unwinds
            TransferSpec.posted("g", "alice", "bob", 5, "CNY"),
        ],
        state,
        ends=[0, 3, 4],
    )
    assert codes(outcome.results) == [
        R.OK,
        R.LINKED_EVENT_FAILED,
        R.LINKED_EVENT_FAILED,
        R.EXCEEDS_CREDITS,
        R.OK,
    ]
    assert [t.id for t in outcome.created] == ["f", "g"]
    assert totals(outcome.touched["alice"]) == (5, 80, 0, 0)
    assert totals(outcome.touched["bob"]) == (0, 5, 0, 0)
    assert outcome.touched["alice"] is state.accounts["alice"]


def test_chain_open_at_a_group_end_does_not_swallow_the_next_group() -> None:
    state = fresh()
    specs = [
        TransferSpec.posted("a", "bank", "alice", 10, "CNY", linked=True),
        TransferSpec.posted("b", "bank", "alice", 10, "CNY", linked=True),
        TransferSpec.posted("c", "bank", "bob", 10, "CNY"),
    ]
    outcome = run(specs, state, ends=[1, 2])
    assert codes(outcome.results) == [R.LINKED_EVENT_CHAIN_OPEN, R.LINKED_EVENT_CHAIN_OPEN, R.OK]
    assert set(outcome.touched) == {"bank", "bob"}


def test_a_hold_created_in_the_batch_can_be_posted_partially_in_it() -> None:
    state = fresh()
    outcome = run(
        [
            TransferSpec.posted("f", "bank", "alice", 100, "CNY"),
            TransferSpec.pending("h", "alice", "bob", 60, "CNY", timeout_seconds=10),
            TransferSpec.post("p", "h", 25),
            TransferSpec.void("v", "h"),
        ],
        state,
        ends=range(4),
    )
    assert codes(outcome.results) == [R.OK, R.OK, R.OK, R.PENDING_ALREADY_POSTED]
    assert totals(state.accounts["alice"]) == (25, 100, 0, 0)
    assert totals(state.accounts["bob"]) == (0, 25, 0, 0)


def test_incoming_holds_count_against_the_ceiling_and_outgoing_ones_do_not() -> None:
    state = fresh()  # bob may hold at most 100
    outcome = run(
        [
            TransferSpec.pending("in", "bank", "bob", 70, "CNY"),
            TransferSpec.posted("p1", "bank", "bob", 31, "CNY"),
            TransferSpec.posted("p2", "bank", "bob", 30, "CNY"),
            TransferSpec.pending("out", "bob", "alice", 30, "CNY"),
            TransferSpec.posted("p3", "bank", "bob", 1, "CNY"),
            TransferSpec.void("v", "in"),
            TransferSpec.posted("p4", "bank", "bob", 70, "CNY"),
        ],
        state,
        ends=range(7),
    )
    assert codes(outcome.results) == [R.OK, R.EXCEEDS_CEILING, R.OK, R.OK, R.EXCEEDS_CEILING, R.OK, R.OK]
    assert totals(state.accounts["bob"]) == (0, 100, 30, 0)


def test_a_failed_chain_gives_back_the_hold_it_resolved() -> None:
    ledger = Ledger(dict(fresh().accounts))
    setup = [
        TransferSpec.posted("f", "bank", "alice", 100, "CNY"),
        TransferSpec.pending("h", "alice", "bob", 60, "CNY"),
    ]
    ledger.write_back(run(setup, ledger.state_for(setup, NOW), ends=range(2)))
    specs = [
        TransferSpec.post("p1", "h", linked=True),
        TransferSpec.posted("x", "alice", "bob", 41, "CNY"),  # only 40 left: the chain fails
        TransferSpec.void("v", "h"),
    ]
    state = ledger.state_for(specs, NOW)
    outcome = run(specs, state, ends=[1, 2])
    assert codes(outcome.results) == [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS, R.OK]
    assert totals(state.accounts["alice"]) == (0, 100, 0, 0)


def test_an_expired_hold_cannot_be_posted_or_voided_but_can_be_expired() -> None:
    ledger = Ledger(dict(fresh().accounts))
    setup = [
        TransferSpec.posted("f", "bank", "alice", 100, "CNY"),
        TransferSpec.pending("h", "alice", "bob", 60, "CNY", timeout_seconds=10),
    ]
    ledger.write_back(run(setup, ledger.state_for(setup, NOW), ends=range(2)))
    early = [TransferSpec(id=expiry_id("h"), kind=K.EXPIRE_PENDING, pending_id="h")]
    assert codes(run(early, ledger.state_for(early, NOW + 9 * SECOND)).results) == [R.PENDING_NOT_EXPIRED]
    late = [
        TransferSpec.post("p", "h"),
        TransferSpec.void("v", "h"),
        TransferSpec(id="e", kind=K.EXPIRE_PENDING, pending_id="h"),  # only the reserved id will do
        TransferSpec(id=expiry_id("h"), kind=K.EXPIRE_PENDING, pending_id="h"),
        TransferSpec.void("v2", "h"),
    ]
    state = ledger.state_for(late, NOW + 10 * SECOND)
    outcome = run(late, state, ends=range(len(late)))
    assert codes(outcome.results) == [
        R.PENDING_EXPIRED,
        R.PENDING_EXPIRED,
        R.INVALID_ID,
        R.OK,
        R.PENDING_EXPIRED,
    ]
    assert totals(state.accounts["alice"]) == (0, 100, 0, 0)


def test_replays_return_the_stored_transfer() -> None:
    ledger = Ledger(dict(fresh().accounts))
    first = [
        TransferSpec.posted("f", "bank", "alice", 100, "CNY", metadata={"k": 1}),
        TransferSpec.pending("h", "alice", "bob", 60, "CNY", timeout_seconds=30),
        TransferSpec.post("p", "h"),
    ]
    ledger.write_back(run(first, ledger.state_for(first, NOW), ends=range(3)))
    replays = [
        TransferSpec.posted("f", "bank", "alice", 100, "CNY", metadata={"k": 1}),
        TransferSpec.posted("f", "bank", "alice", 100, "CNY", metadata={"k": 2}),
        TransferSpec.posted("f", "bank", "alice", 101, "CNY", metadata={"k": 1}),
        TransferSpec.pending("h", "alice", "bob", 60, "CNY", timeout_seconds=30),
        TransferSpec.pending("h", "alice", "bob", 60, "CNY", timeout_seconds=31),
        TransferSpec.post("p", "h", 60),
        TransferSpec.post("p", "h", 59),
        TransferSpec.void("p", "h"),
    ]
    state = ledger.state_for(replays, NOW + 5 * SECOND)
    outcome = run(replays, state, ends=range(len(replays)))
    assert codes(outcome.results) == [
        R.EXISTS,
        R.EXISTS_WITH_DIFFERENT_FIELDS,
        R.EXISTS_WITH_DIFFERENT_FIELDS,
        R.EXISTS,
        R.EXISTS_WITH_DIFFERENT_FIELDS,
        R.EXISTS,
        R.EXISTS_WITH_DIFFERENT_FIELDS,
        R.EXISTS_WITH_DIFFERENT_FIELDS,
    ]
    assert outcome.created == [] and outcome.touched == {}


@pytest.mark.parametrize(
    "replay",
    [
        TransferSpec.posted("f", "bank", "alice", 100, "CNY", pending_id="h"),
        TransferSpec.post("p", "h", timeout_seconds=30),
    ],
    ids=["posted-with-pending-id", "post-with-timeout"],
)
def test_a_replay_adding_a_field_is_not_the_same_request(replay: TransferSpec) -> None:
    ledger = Ledger(dict(fresh().accounts))
    first = [
        TransferSpec.posted("f", "bank", "alice", 100, "CNY"),
        TransferSpec.pending("h", "alice", "bob", 60, "CNY"),
        TransferSpec.post("p", "h"),
    ]
    ledger.write_back(run(first, ledger.state_for(first, NOW), ends=range(3)))
    # Sent fresh, this request is refused; sent as a replay it must not be reported as already done.
    assert (
        run([replace(replay, id="new")], ledger.state_for([replay], NOW)).results[0].code not in SUCCESS_CODES
    )
    [result] = run([replay], ledger.state_for([replay], NOW)).results
    assert result.code is R.EXISTS_WITH_DIFFERENT_FIELDS

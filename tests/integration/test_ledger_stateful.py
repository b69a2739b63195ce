"""A Hypothesis state machine drives the real `LedgerEngine` against a deliberately naive model.

The model is a dict of accounts with four totals and a dict of stored transfers; it decides each request
with a few plain `if`s in the order docs/ledger.md gives them. After every step every result code and every
account's totals must match the model, and `verify_ledger` must find nothing. Runs on SQLite and
PostgreSQL; each example uses its own id prefix because examples share the test's database.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from qianbao.clock import FixedClock
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import (
    AccountSpec,
    NormalBalance,
    PendingStatus,
    ResultCode,
    TransferKind,
    TransferResult,
    TransferSpec,
)
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.verify import verify_ledger
from qianbao.store.database import Database

R = ResultCode
K = TransferKind
SECOND = 1_000_000
DAY = 86_400
MAX_TIMEOUT = 600  # seconds; a machine's whole run advances the clock far less than a day


# -- the model --------------------------------------------------------------------------------------


@dataclass
class ModelAccount:
    no_overdraft: bool  # debits_must_not_exceed_credits
    ceiling: int | None  # only credit-normal accounts get one here
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def available(self) -> int:
        return self.credits_posted - self.debits_posted - self.debits_pending

    def totals(self) -> tuple[int, int, int, int]:
        return (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)


@dataclass
class ModelTransfer:
    request: TransferSpec  # the request that created it, for replays
    kind: TransferKind
    debit: str
    credit: str
    amount: int
    timeout_at: int | None = None
    resolved_as: TransferKind | None = None  # for holds


ALREADY = {
    K.POST_PENDING: R.PENDING_ALREADY_POSTED,
    K.VOID_PENDING: R.PENDING_ALREADY_VOIDED,
    K.EXPIRE_PENDING: R.PENDING_EXPIRED,
}
Outcome = tuple[ResultCode, ModelTransfer | None]


class Model:
    def __init__(self) -> None:
        self.accounts: dict[str, ModelAccount] = {}
        self.transfers: dict[str, ModelTransfer] = {}

    def submit(self, groups: Sequence[Sequence[TransferSpec]], now: int) -> list[Outcome]:
        """Each group is one client's request: a run of linked transfers is a chain, and a chain still
        open at the end of its group fails as a whole."""
        out: list[Outcome] = []
        for group in groups:
            chain: list[TransferSpec] = []
            for spec in group:
                chain.append(spec)
                if not spec.linked:
                    out += self.chain(chain, now)
                    chain = []
            out += [(R.LINKED_EVENT_CHAIN_OPEN, None)] * len(chain)
        return out

    def chain(self, specs: Sequence[TransferSpec], now: int) -> list[Outcome]:
        saved = copy.deepcopy((self.accounts, self.transfers))
        out: list[Outcome] = []
        for spec in specs:
            code, transfer = self.one(spec, now)
            if code not in (R.OK, R.EXISTS):
                self.accounts, self.transfers = saved
                failed: Outcome = (R.LINKED_EVENT_FAILED, None)
                return [failed] * len(out) + [(code, None)] + [failed] * (len(specs) - len(out) - 1)
            out.append((code, transfer))
        return out

    def one(self, spec: TransferSpec, now: int) -> Outcome:
        stored = self.transfers.get(spec.id)
        if stored is not None:
            same = replace(spec, linked=False) == replace(stored.request, linked=False)
            return (R.EXISTS if same else R.EXISTS_WITH_DIFFERENT_FIELDS), stored
        if spec.kind in (K.POSTED, K.PENDING):
            code = self.move(spec, now)
        else:
            code = self.resolve(spec, now)
        return code, self.transfers.get(spec.id) if code is R.OK else None

    def move(self, spec: TransferSpec, now: int) -> ResultCode:
        amount = spec.amount or 0
        if spec.debit_account_id == spec.credit_account_id:
            return R.ACCOUNTS_MUST_DIFFER
        if amount <= 0:
            return R.AMOUNT_MUST_BE_POSITIVE
        debit = self.accounts.get(spec.debit_account_id)
        credit = self.accounts.get(spec.credit_account_id)
        if debit is None or credit is None:
            return R.ACCOUNT_NOT_FOUND
        if debit.no_overdraft and amount > debit.available:
            return R.EXCEEDS_CREDITS
        incoming = credit.credits_posted - credit.debits_posted + credit.credits_pending
        if credit.ceiling is not None and incoming + amount > credit.ceiling:
            return R.EXCEEDS_CEILING
        transfer = ModelTransfer(spec, spec.kind, spec.debit_account_id, spec.credit_account_id, amount)
        if spec.kind is K.PENDING:
            debit.debits_pending += amount
            credit.credits_pending += amount
            if spec.timeout_seconds is not None:
                transfer.timeout_at = now + spec.timeout_seconds * SECOND
        else:
            debit.debits_posted += amount
            credit.credits_posted += amount
        self.transfers[spec.id] = transfer
        return R.OK

    def resolve(self, spec: TransferSpec, now: int) -> ResultCode:
        hold = self.transfers.get(spec.pending_id or "")
        if hold is None:
            return R.PENDING_NOT_FOUND
        if hold.kind is not K.PENDING:
            return R.PENDING_TRANSFER_NOT_PENDING
        if hold.resolved_as is not None:
            return ALREADY[hold.resolved_as]
        if hold.timeout_at is not None and now >= hold.timeout_at:
            return R.PENDING_EXPIRED
        amount = hold.amount if spec.amount is None else spec.amount
        if amount <= 0:
            return R.AMOUNT_MUST_BE_POSITIVE
        if amount > hold.amount:
            return R.AMOUNT_EXCEEDS_PENDING
        self.release(hold, spec.kind)
        if spec.kind is K.POST_PENDING:
            self.accounts[hold.debit].debits_posted += amount
            self.accounts[hold.credit].credits_posted += amount
        self.transfers[spec.id] = ModelTransfer(spec, spec.kind, hold.debit, hold.credit, amount)
        return R.OK

    def release(self, hold: ModelTransfer, how: TransferKind) -> None:
        self.accounts[hold.debit].debits_pending -= hold.amount
        self.accounts[hold.credit].credits_pending -= hold.amount
        hold.resolved_as = how

    def expire(self, now: int) -> int:
        due = [
            t
            for t in self.transfers.values()
            if t.kind is K.PENDING
            and t.resolved_as is None
            and t.timeout_at is not None
            and t.timeout_at <= now
        ]
        for hold in due:
            self.release(hold, K.EXPIRE_PENDING)
        return len(due)


# -- the machine ------------------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, db: Database, clock: FixedClock) -> None:
        super().__init__()
        self.db = db
        self.clock = clock
        self.engine = LedgerEngine(db, clock)
        self.reader = LedgerReader(db)
        self.prefix = uuid.uuid4().hex[:10]
        self.model = Model()
        self.requests: list[TransferSpec] = []  # everything sent, for replays
        self.drafts: list[TransferSpec] = []  # drawn for the request being built, not sent yet
        self.count = 0
        # Earlier examples left holds in the shared database: jump past all their timeouts and sweep them,
        # so this example's sweeps count only its own holds.
        clock.advance(DAY)
        while self.engine.expire_pending():
            pass

    def new_id(self, kind: str) -> str:
        self.count += 1
        return f"{self.prefix}-{kind}{self.count}"

    # -- accounts ---------------------------------------------------------------------------------------

    def open_account(self, kind: str, ceiling: int | None = None) -> str:
        account_id = self.new_id("a")
        spec = AccountSpec(
            account_id,
            "CNY",
            f"test.{kind}",
            normal_balance=NormalBalance.DEBIT if kind == "bank" else NormalBalance.CREDIT,
            debits_must_not_exceed_credits=kind in ("wallet", "capped"),
            balance_ceiling=ceiling if kind == "capped" else None,
        )
        [result] = self.engine.create_accounts([spec])
        assert result.code is R.OK, result
        self.model.accounts[account_id] = ModelAccount(
            spec.debits_must_not_exceed_credits, spec.balance_ceiling
        )
        return account_id

    @initialize()
    def open_first_accounts(self) -> None:
        self.bank = self.open_account("bank")
        wallets = [self.open_account("wallet"), self.open_account("wallet"), self.open_account("capped", 800)]
        self.submit([[TransferSpec.posted(self.new_id("t"), self.bank, w, 500, "CNY")] for w in wallets])

    @rule(
        kind=st.sampled_from(["wallet", "wallet", "overdraft", "capped", "bank"]), ceiling=st.integers(0, 500)
    )
    def create_account(self, kind: str, ceiling: int) -> None:
        self.open_account(kind, ceiling)

    # -- drawing requests -------------------------------------------------------------------------------
    # Later requests of one submission may refer to earlier ones (post a hold made in the same batch).

    def known(self) -> list[TransferSpec]:
        return self.requests + self.drafts

    def draft(self, spec: TransferSpec) -> TransferSpec:
        self.drafts.append(spec)
        return spec

    def draw_move(self, data: st.DataObject, kind: TransferKind) -> TransferSpec:
        accounts = list(self.model.accounts)
        debit = data.draw(st.sampled_from([self.bank] * len(accounts) + accounts), label="debit")
        credit = data.draw(st.sampled_from([a for a in accounts if a != debit]), label="credit")
        amount = data.draw(st.sampled_from([1, 50, 150, 250, 400]) | st.integers(1, 600), label="amount")
        mistake = data.draw(st.sampled_from(["none"] * 20 + ["same account", "no account", "zero"]))
        if mistake == "same account":
            credit = debit
        elif mistake == "no account":
            credit = f"{self.prefix}-missing"
        elif mistake == "zero":
            amount = 0
        if kind is K.POSTED:
            return self.draft(TransferSpec.posted(self.new_id("t"), debit, credit, amount, "CNY"))
        timeout = data.draw(
            st.sampled_from([None, None, 5, 10, 30]) | st.integers(1, MAX_TIMEOUT), label="timeout"
        )
        spec = TransferSpec.pending(self.new_id("t"), debit, credit, amount, "CNY", timeout_seconds=timeout)
        return self.draft(spec)

    def draw_resolution(self, data: st.DataObject, kind: TransferKind) -> TransferSpec:
        # Mostly a hold that is still open (per the model: this only steers the choice of inputs), else
        # any hold asked for, else anything at all.
        open_holds = [k for k, t in self.model.transfers.items() if t.kind is K.PENDING and not t.resolved_as]
        asked = [s.id for s in self.known() if s.kind is K.PENDING]
        anything = [s.id for s in self.known()] + [f"{self.prefix}-nothing"]
        which = data.draw(st.sampled_from(["open"] * 5 + ["asked"] * 2 + ["anything"]), label="which")
        choices = {"open": open_holds, "asked": asked}.get(which) or anything
        pending_id = data.draw(st.sampled_from(choices), label="pending_id")
        if kind is K.VOID_PENDING:
            return self.draft(TransferSpec.void(self.new_id("t"), pending_id))
        amount = data.draw(
            st.sampled_from([None, None, None, 0, 1, 100]) | st.integers(1, 450), label="amount"
        )
        return self.draft(TransferSpec.post(self.new_id("t"), pending_id, amount))

    def draw_request(self, data: st.DataObject) -> TransferSpec:
        kinds = [K.POSTED, K.PENDING] + ([K.POST_PENDING, K.VOID_PENDING] if self.known() else [])
        kind = data.draw(st.sampled_from(kinds), label="kind")
        if kind in (K.POSTED, K.PENDING):
            return self.draw_move(data, kind)
        return self.draw_resolution(data, kind)

    def draw_replay(self, data: st.DataObject) -> TransferSpec:
        earlier = data.draw(st.sampled_from(self.known()), label="replayed")
        if data.draw(st.booleans(), label="same"):
            return self.draft(replace(earlier, linked=False))
        if earlier.kind in (K.POSTED, K.PENDING):
            return self.draft(replace(earlier, amount=(earlier.amount or 0) + 1, linked=False))
        other = K.VOID_PENDING if earlier.kind is K.POST_PENDING else K.POST_PENDING
        return self.draft(replace(earlier, kind=other, amount=None, linked=False))

    def draw_chain(self, data: st.DataObject, size: int) -> list[TransferSpec]:
        specs = [replace(self.draw_request(data), linked=True) for _ in range(size)]
        left_open = data.draw(st.integers(0, 9), label="left open") == 0
        specs[-1] = replace(specs[-1], linked=left_open)
        return specs

    # -- submitting -------------------------------------------------------------------------------------

    def submit(self, groups: list[list[TransferSpec]]) -> list[TransferResult]:
        specs = [s for g in groups for s in g]
        ends, end = [], -1
        for group in groups:
            end += len(group)
            ends.append(end)
        results = self.engine.create_transfers(specs, group_ends=ends)
        expected = self.model.submit(groups, self.clock.now_us())
        assert [r.id for r in results] == [s.id for s in specs]
        assert [r.code for r in results] == [code for code, _ in expected]
        for result, (_, transfer) in zip(results, expected, strict=True):
            if transfer is None:
                continue
            assert result.transfer is not None
            got = result.transfer
            assert (got.kind, got.debit_account_id, got.credit_account_id, got.amount) == (
                transfer.kind,
                transfer.debit,
                transfer.credit,
                transfer.amount,
            )
        self.requests += specs
        self.drafts = []
        return results

    @rule(data=st.data())
    def posted(self, data: st.DataObject) -> None:
        self.submit([[self.draw_move(data, K.POSTED)]])

    @rule(data=st.data())
    def pending(self, data: st.DataObject) -> None:
        self.submit([[self.draw_move(data, K.PENDING)]])

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def post(self, data: st.DataObject) -> None:
        self.submit([[self.draw_resolution(data, K.POST_PENDING)]])

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        self.submit([[self.draw_resolution(data, K.VOID_PENDING)]])

    @rule(seconds=st.sampled_from([0, 1, 5, 9, 10, 11, 30, 60]) | st.integers(0, MAX_TIMEOUT + 100))
    def advance_and_expire(self, seconds: int) -> None:
        self.clock.advance(seconds)
        expired = self.engine.expire_pending()
        assert expired == self.model.expire(self.clock.now_us())

    def holds_running(self) -> list[tuple[str, int]]:
        now = self.clock.now_us()
        return [
            (k, t.timeout_at)
            for k, t in self.model.transfers.items()
            if t.kind is K.PENDING and not t.resolved_as and t.timeout_at is not None and t.timeout_at > now
        ]

    @precondition(lambda self: self.holds_running())
    @rule(data=st.data(), offset=st.sampled_from([-1, 0]))
    def to_the_edge_of_a_timeout(self, data: st.DataObject, offset: int) -> None:
        """Move the clock to one microsecond before a hold's timeout, or exactly onto it, then touch it."""
        hold_id, timeout_at = data.draw(st.sampled_from(self.holds_running()), label="hold")
        self.clock.advance(microseconds=timeout_at + offset - self.clock.now_us())
        action = data.draw(st.sampled_from(["post", "void", "sweep"]), label="action")
        if action == "sweep":
            assert self.engine.expire_pending() == self.model.expire(self.clock.now_us())
        elif action == "post":
            self.submit([[self.draft(TransferSpec.post(self.new_id("t"), hold_id))]])
        else:
            self.submit([[self.draft(TransferSpec.void(self.new_id("t"), hold_id))]])

    @rule(data=st.data(), size=st.integers(2, 4))
    def linked_chain(self, data: st.DataObject, size: int) -> None:
        self.submit([self.draw_chain(data, size)])

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        self.submit([[self.draw_replay(data)]])

    @rule(data=st.data(), count=st.integers(2, 6))
    def batch(self, data: st.DataObject, count: int) -> None:
        """Several clients' requests in one transaction, as the batcher sends them."""
        groups: list[list[TransferSpec]] = []
        for _ in range(count):
            shape = data.draw(st.sampled_from(["single", "single", "chain", "replay"]), label="shape")
            if shape == "chain":
                groups.append(self.draw_chain(data, data.draw(st.integers(2, 3), label="size")))
            elif shape == "replay" and self.known():
                groups.append([self.draw_replay(data)])
            else:
                groups.append([self.draw_request(data)])
        self.submit(groups)

    # -- checks -----------------------------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        stored = self.reader.lookup_accounts(self.model.accounts)
        assert {
            k: (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
            for k, a in stored.items()
        } == {k: a.totals() for k, a in self.model.accounts.items()}

    @invariant()
    def ledger_verifies(self) -> None:
        report = verify_ledger(self.db)
        assert report.ok, report.findings

    def teardown(self) -> None:
        # Holds report how they ended; requests that failed left no transfer behind.
        for spec in self.requests:
            view = self.reader.get_transfer(spec.id)
            transfer = self.model.transfers.get(spec.id)
            if transfer is None:
                assert view is None, spec
                continue
            assert view is not None and view.transfer.amount == transfer.amount
            if transfer.kind is K.PENDING:
                status = {
                    None: PendingStatus.PENDING,
                    K.POST_PENDING: PendingStatus.POSTED,
                    K.VOID_PENDING: PendingStatus.VOIDED,
                    K.EXPIRE_PENDING: PendingStatus.EXPIRED,
                }
                assert view.pending_status is status[transfer.resolved_as], spec


SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_engine_matches_the_model(fresh_db: Database) -> None:
    clock = FixedClock()
    run_state_machine_as_test(lambda: LedgerMachine(fresh_db, clock), settings=SETTINGS)

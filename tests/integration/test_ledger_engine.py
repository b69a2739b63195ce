"""The ledger engine's semantics end to end, on SQLite and PostgreSQL.

Result codes, two-phase holds, linked chains, idempotency, ordering inside a batch, account management,
reads and verification. Tests on the shared database use `unique()` ids and look only at their own
accounts; whole-ledger checks (verify, the expiry sweeper) get a database of their own.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from qianbao.clock import FixedClock
from qianbao.errors import Conflict, InvalidInput, NotFound
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import (
    MAX_AMOUNT,
    MAX_METADATA_BYTES,
    AccountSpec,
    AccountStatus,
    NormalBalance,
    PendingStatus,
    ResultCode,
    TransferKind,
    TransferResult,
    TransferSpec,
    canonical_metadata,
)
from qianbao.ledger.queries import HistoryFilter, LedgerReader
from qianbao.ledger.rules import expiry_id
from qianbao.ledger.verify import verify_ledger
from tests.conftest import unique
from tests.support.ledger import open_accounts

R = ResultCode
CNY = "CNY"
TEN_YEARS = 10 * 365 * 86_400


# -- helpers ----------------------------------------------------------------------------------------------


def submit(engine: LedgerEngine, spec: TransferSpec) -> TransferResult:
    [result] = engine.create_transfers([spec])
    return result


def codes(results: list[TransferResult]) -> list[ResultCode]:
    return [r.code for r in results]


def totals(reader: LedgerReader, account_id: str) -> tuple[int, int, int, int]:
    """(debits_posted, credits_posted, debits_pending, credits_pending)."""
    account = reader.get_account(account_id)
    assert account is not None, account_id
    return (account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending)


def balance(reader: LedgerReader, account_id: str) -> tuple[int, int]:
    """(posted balance, available) on the account's normal side."""
    account = reader.get_account(account_id)
    assert account is not None, account_id
    return account.balance, account.available


@dataclass
class Ledger:
    """Accounts of one test on the shared database: funding (debit-normal) paid 1000 into wallets a and
    b; wallet c is empty. Wallets cannot go negative. Helpers assert that their setup succeeded."""

    engine: LedgerEngine
    reader: LedgerReader
    clock: FixedClock
    funding: str
    a: str
    b: str
    c: str
    extra: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [self.funding, self.a, self.b, self.c, *self.extra]

    def snapshot(self) -> dict[str, tuple[int, int, int, int]]:
        accounts = self.reader.lookup_accounts(self.ids)
        return {
            i: (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
            for i, a in accounts.items()
        }

    def account(
        self, *, currency: str = CNY, normal: NormalBalance = NormalBalance.CREDIT, **flags: Any
    ) -> str:
        account_id = unique("acct")
        spec = AccountSpec(account_id, currency, "test.extra", normal_balance=normal, **flags)
        [result] = self.engine.create_accounts([spec])
        assert result.code is R.OK, result
        self.extra.append(account_id)
        return account_id

    def move(self, debit: str, credit: str, amount: int, **kw: Any) -> TransferResult:
        result = submit(self.engine, TransferSpec.posted(unique("trf"), debit, credit, amount, CNY, **kw))
        assert result.code is R.OK, result
        return result

    def hold(
        self, amount: int = 300, *, debit: str | None = None, credit: str | None = None, **kw: Any
    ) -> str:
        pending_id = unique("hold")
        spec = TransferSpec.pending(pending_id, debit or self.a, credit or self.b, amount, CNY, **kw)
        result = submit(self.engine, spec)
        assert result.code is R.OK, result
        return pending_id

    def resolve(self, spec: TransferSpec) -> TransferResult:
        result = submit(self.engine, spec)
        assert result.code is R.OK, result
        return result

    def status(self, account_id: str, status: AccountStatus) -> None:
        self.engine.set_account_status(account_id, status)


def _new_ledger(engine: LedgerEngine, clock: FixedClock) -> Ledger:
    funding, (a, b) = open_accounts(engine, 2, funded=1_000)
    _, (c,) = open_accounts(engine, 1)
    return Ledger(engine, LedgerReader(engine.db), clock, funding, a, b, c)


@pytest.fixture
def ledger(engine: LedgerEngine, clock: FixedClock) -> Ledger:
    return _new_ledger(engine, clock)


@pytest.fixture
def own_ledger(fresh_engine: LedgerEngine, clock: FixedClock) -> Ledger:
    """On a database of its own: for balances near 2**63 that would overflow whole-ledger sums."""
    return _new_ledger(fresh_engine, clock)


# -- every rejection: exact code, nothing stored, no balance moved ----------------------------------------

Case = Callable[[Ledger], TransferSpec]
REJECTIONS: dict[str, tuple[ResultCode, Case]] = {}


def rejection(name: str, code: ResultCode) -> Callable[[Case], Case]:
    def register(case: Case) -> Case:
        assert name not in REJECTIONS
        REJECTIONS[name] = (code, case)
        return case

    return register


def posted(
    lg: Ledger, debit: str | None = None, credit: str | None = None, amount: int = 1, **kw: Any
) -> TransferSpec:
    kw.setdefault("currency", CNY)
    return TransferSpec(
        id=kw.pop("id", None) or unique("trf"),
        debit_account_id=debit or lg.a,
        credit_account_id=credit or lg.b,
        amount=amount,
        **kw,
    )


@rejection("id_empty", R.INVALID_ID)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted("", lg.a, lg.b, 1, CNY)


@rejection("id_129_chars", R.INVALID_ID)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique("long").ljust(129, "x"), lg.a, lg.b, 1, CNY)


@rejection("code_65_chars", R.INVALID_CODE)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, code="c" * 65)


@rejection("resolution_code_65_chars", R.INVALID_CODE)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), lg.hold(), code="c" * 65)


@rejection("metadata_too_large", R.METADATA_TOO_LARGE)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, metadata={"note": "x" * MAX_METADATA_BYTES})


@rejection("same_account_both_sides", R.ACCOUNTS_MUST_DIFFER)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, lg.a, lg.a)


@rejection("credit_account_in_usd", R.CURRENCY_MISMATCH)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, credit=lg.account(currency="USD"))


@rejection("debit_account_in_usd", R.CURRENCY_MISMATCH)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, debit=lg.account(currency="USD", normal=NormalBalance.DEBIT), credit=lg.c)


@rejection("transfer_in_usd_between_cny_accounts", R.CURRENCY_MISMATCH)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, currency="USD")


@rejection("post_in_other_currency", R.CURRENCY_MISMATCH)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), lg.hold(), currency="USD")


@rejection("amount_zero", R.AMOUNT_MUST_BE_POSITIVE)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, amount=0)


@rejection("amount_negative", R.AMOUNT_MUST_BE_POSITIVE)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, amount=-5)


@rejection("hold_amount_negative", R.AMOUNT_MUST_BE_POSITIVE)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.pending(unique("hold"), lg.a, lg.b, -1, CNY)


@rejection("post_amount_zero", R.AMOUNT_MUST_BE_POSITIVE)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), lg.hold(), amount=0)


@rejection("debit_account_missing", R.ACCOUNT_NOT_FOUND)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, debit=unique("missing"))


@rejection("credit_account_missing", R.ACCOUNT_NOT_FOUND)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, credit=unique("missing"))


@rejection("overdraw_wallet", R.EXCEEDS_CREDITS)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, amount=1_001)


@rejection("overdraw_counting_outgoing_hold", R.EXCEEDS_CREDITS)
def _(lg: Ledger) -> TransferSpec:
    lg.hold(600, credit=lg.c)
    return posted(lg, amount=401)


@rejection("hold_beyond_balance", R.EXCEEDS_CREDITS)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.pending(unique("hold"), lg.a, lg.b, 1_001, CNY)


@rejection("credit_beyond_debits", R.EXCEEDS_DEBITS)
def _(lg: Ledger) -> TransferSpec:
    asset = lg.account(normal=NormalBalance.DEBIT, credits_must_not_exceed_debits=True)
    lg.move(asset, lg.c, 500)
    return posted(lg, lg.b, asset, 501)


@rejection("ceiling_counting_incoming_hold", R.EXCEEDS_CEILING)
def _(lg: Ledger) -> TransferSpec:
    capped = lg.account(debits_must_not_exceed_credits=True, balance_ceiling=1_000)
    lg.hold(600, credit=capped)
    return posted(lg, lg.b, capped, 401)


@rejection("ceiling_of_debit_normal_account", R.EXCEEDS_CEILING)
def _(lg: Ledger) -> TransferSpec:
    capped = lg.account(normal=NormalBalance.DEBIT, balance_ceiling=500)
    return posted(lg, capped, lg.c, 501)


@rejection("amount_beyond_64_bits", R.OVERFLOW)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, lg.funding, lg.c, MAX_AMOUNT + 1)


@rejection("credits_posted_beyond_64_bits", R.OVERFLOW)
def _(lg: Ledger) -> TransferSpec:
    big = lg.account()
    lg.move(lg.account(normal=NormalBalance.DEBIT), big, MAX_AMOUNT)
    return posted(lg, lg.funding, big, 1)


@rejection("frozen_account_pays", R.ACCOUNT_FROZEN)
def _(lg: Ledger) -> TransferSpec:
    lg.status(lg.a, AccountStatus.FROZEN)
    return posted(lg)


@rejection("frozen_account_receives", R.ACCOUNT_FROZEN)
def _(lg: Ledger) -> TransferSpec:
    lg.status(lg.b, AccountStatus.FROZEN)
    return posted(lg)


@rejection("debit_frozen_account_pays", R.ACCOUNT_FROZEN)
def _(lg: Ledger) -> TransferSpec:
    lg.status(lg.a, AccountStatus.DEBIT_FROZEN)
    return posted(lg)


@rejection("frozen_account_places_hold", R.ACCOUNT_FROZEN)
def _(lg: Ledger) -> TransferSpec:
    lg.status(lg.a, AccountStatus.FROZEN)
    return TransferSpec.pending(unique("hold"), lg.a, lg.b, 1, CNY)


@rejection("closed_account_pays", R.ACCOUNT_CLOSED)
def _(lg: Ledger) -> TransferSpec:
    lg.status(lg.c, AccountStatus.CLOSED)
    return posted(lg, lg.c, lg.b)


@rejection("closed_account_receives", R.ACCOUNT_CLOSED)
def _(lg: Ledger) -> TransferSpec:
    lg.status(lg.c, AccountStatus.CLOSED)
    return posted(lg, lg.a, lg.c)


@rejection("timeout_on_posted_transfer", R.TIMEOUT_RESERVED_FOR_PENDING)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, timeout_seconds=60)


@rejection("timeout_on_post", R.TIMEOUT_RESERVED_FOR_PENDING)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), lg.hold(), timeout_seconds=60)


@rejection("timeout_zero", R.INVALID_TIMEOUT)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.pending(unique("hold"), lg.a, lg.b, 1, CNY, timeout_seconds=0)


@rejection("timeout_negative", R.INVALID_TIMEOUT)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.pending(unique("hold"), lg.a, lg.b, 1, CNY, timeout_seconds=-1)


@rejection("timeout_beyond_ten_years", R.INVALID_TIMEOUT)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.pending(unique("hold"), lg.a, lg.b, 1, CNY, timeout_seconds=TEN_YEARS + 1)


@rejection("post_without_pending_id", R.PENDING_ID_REQUIRED)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec(id=unique("post"), kind=TransferKind.POST_PENDING)


@rejection("void_without_pending_id", R.PENDING_ID_REQUIRED)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec(id=unique("void"), kind=TransferKind.VOID_PENDING, pending_id="")


@rejection("posted_transfer_with_pending_id", R.PENDING_ID_NOT_ALLOWED)
def _(lg: Ledger) -> TransferSpec:
    return posted(lg, pending_id=lg.hold())


@rejection("hold_with_pending_id", R.PENDING_ID_NOT_ALLOWED)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.pending(unique("hold"), lg.a, lg.b, 1, CNY, pending_id=lg.hold())


@rejection("post_of_unknown_hold", R.PENDING_NOT_FOUND)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), unique("nohold"))


@rejection("post_of_a_posted_transfer", R.PENDING_TRANSFER_NOT_PENDING)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), lg.move(lg.a, lg.b, 1).id)


@rejection("void_of_a_post", R.PENDING_TRANSFER_NOT_PENDING)
def _(lg: Ledger) -> TransferSpec:
    post = lg.resolve(TransferSpec.post(unique("post"), lg.hold()))
    return TransferSpec.void(unique("void"), post.id)


@rejection("post_naming_other_debit_account", R.PENDING_ACCOUNTS_MISMATCH)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), lg.hold(), debit_account_id=lg.c)


@rejection("void_naming_other_credit_account", R.PENDING_ACCOUNTS_MISMATCH)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.void(unique("void"), lg.hold(), credit_account_id=lg.c)


@rejection("post_twice", R.PENDING_ALREADY_POSTED)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold()
    lg.resolve(TransferSpec.post(unique("post"), pending_id, 100))
    return TransferSpec.post(unique("post"), pending_id)


@rejection("void_after_post", R.PENDING_ALREADY_POSTED)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold()
    lg.resolve(TransferSpec.post(unique("post"), pending_id))
    return TransferSpec.void(unique("void"), pending_id)


@rejection("post_after_void", R.PENDING_ALREADY_VOIDED)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold()
    lg.resolve(TransferSpec.void(unique("void"), pending_id))
    return TransferSpec.post(unique("post"), pending_id)


@rejection("void_twice", R.PENDING_ALREADY_VOIDED)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold()
    lg.resolve(TransferSpec.void(unique("void"), pending_id))
    return TransferSpec.void(unique("void"), pending_id)


@rejection("post_after_timeout", R.PENDING_EXPIRED)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold(timeout_seconds=60)
    lg.clock.advance(60)
    return TransferSpec.post(unique("post"), pending_id)


@rejection("void_after_timeout", R.PENDING_EXPIRED)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold(timeout_seconds=60)
    lg.clock.advance(61)
    return TransferSpec.void(unique("void"), pending_id)


@rejection("expire_before_timeout", R.PENDING_NOT_EXPIRED)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold(timeout_seconds=60)
    lg.clock.advance(59)
    return TransferSpec(id=expiry_id(pending_id), kind=TransferKind.EXPIRE_PENDING, pending_id=pending_id)


@rejection("expire_hold_without_timeout", R.PENDING_NOT_EXPIRED)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold()
    lg.clock.advance(TEN_YEARS)
    return TransferSpec(id=expiry_id(pending_id), kind=TransferKind.EXPIRE_PENDING, pending_id=pending_id)


@rejection("expire_under_a_chosen_id", R.INVALID_ID)
def _(lg: Ledger) -> TransferSpec:
    pending_id = lg.hold(timeout_seconds=60)
    lg.clock.advance(61)
    return TransferSpec(id=unique("expire"), kind=TransferKind.EXPIRE_PENDING, pending_id=pending_id)


@rejection("client_id_in_the_ledger_namespace", R.INVALID_ID)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted("ledger:expire:" + unique(), lg.a, lg.b, 1, "CNY")


# Input that once crashed a whole batch (or was stored on SQLite but refused by PostgreSQL).
@rejection("metadata_not_encodable", R.INVALID_METADATA)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique(), lg.a, lg.b, 1, "CNY", metadata={"when": datetime.date(2026, 1, 1)})


@rejection("metadata_mixed_key_types", R.INVALID_METADATA)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique(), lg.a, lg.b, 1, "CNY", metadata={1: "a", "b": 2})


@rejection("metadata_nan", R.INVALID_METADATA)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique(), lg.a, lg.b, 1, "CNY", metadata={"fx": float("nan")})


@rejection("metadata_nul", R.INVALID_METADATA)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique(), lg.a, lg.b, 1, "CNY", metadata={"note": "a\x00b"})


@rejection("fractional_amount", R.INVALID_AMOUNT)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique(), lg.a, lg.b, 1.5, "CNY")  # type: ignore[arg-type]


@rejection("boolean_amount", R.INVALID_AMOUNT)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique(), lg.a, lg.b, True, "CNY")


@rejection("fractional_partial_post", R.INVALID_AMOUNT)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), lg.hold(300), 100.5)  # type: ignore[arg-type]


@rejection("id_with_nul", R.INVALID_ID)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique() + "\x00", lg.a, lg.b, 1, "CNY")


@rejection("code_with_nul", R.INVALID_CODE)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique(), lg.a, lg.b, 1, "CNY", code="pay\x00ment")


@rejection("pending_id_with_nul", R.PENDING_NOT_FOUND)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), "hold\x00x")


@rejection("account_with_nul", R.ACCOUNT_NOT_FOUND)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.posted(unique(), lg.a + "\x00", lg.b, 1, "CNY")


@rejection("post_more_than_held", R.AMOUNT_EXCEEDS_PENDING)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.post(unique("post"), lg.hold(300), 301)


@rejection("partial_void", R.AMOUNT_EXCEEDS_PENDING)
def _(lg: Ledger) -> TransferSpec:
    return TransferSpec.void(unique("void"), lg.hold(300), amount=100)


NEEDS_OWN_DATABASE = {"credits_posted_beyond_64_bits"}


@pytest.mark.parametrize("name", sorted(REJECTIONS))
def test_rejected_request_has_its_code_and_changes_nothing(
    name: str, backend: str, request: pytest.FixtureRequest
) -> None:
    ledger: Ledger = request.getfixturevalue("own_ledger" if name in NEEDS_OWN_DATABASE else "ledger")
    expected, case = REJECTIONS[name]
    spec = case(ledger)
    before = ledger.snapshot()
    history_before = {i: ledger.reader.account_history(i, limit=100).entries for i in ledger.ids}

    result = submit(ledger.engine, spec)

    assert result.code is expected, result
    assert result.id == spec.id
    assert result.transfer is None
    assert not result.succeeded
    assert ledger.snapshot() == before
    assert {i: ledger.reader.account_history(i, limit=100).entries for i in ledger.ids} == history_before
    if spec.id:
        assert ledger.reader.get_transfer(spec.id) is None


# Codes produced in the tests further down (chains, replays) and codes only account creation produces.
_COVERED_ELSEWHERE = {
    R.OK,
    R.EXISTS,
    R.EXISTS_WITH_DIFFERENT_FIELDS,
    R.LINKED_EVENT_FAILED,
    R.LINKED_EVENT_CHAIN_OPEN,
}
_ACCOUNT_ONLY = {R.UNKNOWN_CURRENCY, R.FLAGS_ARE_MUTUALLY_EXCLUSIVE, R.INVALID_CEILING, R.INVALID_OWNER_REF}


def test_every_transfer_result_code_has_a_rejection_case() -> None:
    covered = {code for code, _ in REJECTIONS.values()} | _COVERED_ELSEWHERE
    assert covered == set(ResultCode) - _ACCOUNT_ONLY


# -- boundaries that are still accepted -------------------------------------------------------------------


def test_limits_are_inclusive(ledger: Ledger) -> None:
    capped = ledger.account(debits_must_not_exceed_credits=True, balance_ceiling=1_000)
    asset = ledger.account(normal=NormalBalance.DEBIT, credits_must_not_exceed_debits=True)
    ledger.move(asset, ledger.c, 500)
    specs = [
        TransferSpec.posted(unique("x").ljust(128, "x"), ledger.a, capped, 1_000, CNY, code="c" * 64),
        TransferSpec.pending(unique("hold"), ledger.b, ledger.c, 1, CNY, timeout_seconds=TEN_YEARS),
        TransferSpec.posted(unique("trf"), ledger.b, asset, 500, CNY),
    ]
    assert codes(ledger.engine.create_transfers(specs, group_ends=[0, 1, 2])) == [R.OK, R.OK, R.OK]
    assert balance(ledger.reader, ledger.a) == (0, 0)  # the whole balance may be spent
    assert balance(ledger.reader, capped) == (1_000, 1_000)  # exactly at the ceiling
    assert totals(ledger.reader, asset) == (500, 500, 0, 0)  # credits exactly equal to debits
    assert balance(ledger.reader, ledger.b) == (500, 499)


# -- a posted transfer ------------------------------------------------------------------------------------


def test_posted_transfer_moves_money_and_records_balances_after(ledger: Ledger) -> None:
    result = submit(ledger.engine, TransferSpec.posted(unique("trf"), ledger.a, ledger.b, 400, CNY))

    assert result.code is R.OK and result.succeeded
    transfer = result.transfer
    assert transfer is not None
    assert (transfer.kind, transfer.amount, transfer.code) == (TransferKind.POSTED, 400, "transfer")
    assert (transfer.debit_net_after, transfer.credit_net_after) == (600, 1_400)
    assert transfer.created_at == ledger.clock.now_us()
    assert balance(ledger.reader, ledger.a) == (600, 600)
    assert balance(ledger.reader, ledger.b) == (1_400, 1_400)
    assert balance(ledger.reader, ledger.funding) == (2_000, 2_000)  # debit-normal: its balance is positive
    view = ledger.reader.get_transfer(result.id)
    assert view is not None
    assert view.transfer == transfer
    assert (view.pending_status, view.resolved_by) == (None, None)


def test_get_transfer_of_unknown_id_is_none(reader: LedgerReader) -> None:
    assert reader.get_transfer(unique("nothing")) is None


def test_metadata_round_trips(ledger: Ledger) -> None:
    metadata = {
        "order": "ord_1",
        "items": [1, 2.5, None, True, {"sku": "钱包"}],
        "quote": 'say "hi" \\ done',
        "nested": {"b": 2, "a": 1},
    }
    result = submit(
        ledger.engine, TransferSpec.posted(unique("trf"), ledger.a, ledger.b, 5, CNY, metadata=metadata)
    )
    assert result.code is R.OK
    view = ledger.reader.get_transfer(result.id)
    assert view is not None
    assert view.transfer.metadata == canonical_metadata(metadata) == metadata
    assert view.transfer == result.transfer
    # Replaying with the same metadata (in another key order) is the same request.
    replay = TransferSpec.posted(
        result.id, ledger.a, ledger.b, 5, CNY, metadata=dict(reversed(metadata.items()))
    )
    assert submit(ledger.engine, replay).code is R.EXISTS


# -- idempotency ------------------------------------------------------------------------------------------


def test_replay_in_a_later_call_returns_exists_without_a_second_effect(ledger: Ledger) -> None:
    spec = TransferSpec.posted(unique("trf"), ledger.a, ledger.b, 250, CNY, metadata={"k": 1})
    first = submit(ledger.engine, spec)
    ledger.clock.advance(30)

    again = submit(ledger.engine, spec)

    assert (first.code, again.code) == (R.OK, R.EXISTS)
    assert again.succeeded
    assert again.transfer == first.transfer  # the original, with its seq and time
    assert balance(ledger.reader, ledger.a) == (750, 750)
    assert balance(ledger.reader, ledger.b) == (1_250, 1_250)


def test_duplicates_inside_one_batch(ledger: Ledger) -> None:
    spec = TransferSpec.posted(unique("trf"), ledger.a, ledger.b, 100, CNY)
    other = TransferSpec.posted(unique("trf"), ledger.a, ledger.b, 10, CNY)
    results = ledger.engine.create_transfers(
        [spec, spec, other, dataclasses.replace(other, amount=11)], group_ends=[0, 1, 2, 3]
    )

    assert codes(results) == [R.OK, R.EXISTS, R.OK, R.EXISTS_WITH_DIFFERENT_FIELDS]
    assert results[1].transfer == results[0].transfer
    assert results[3].transfer == results[2].transfer
    assert balance(ledger.reader, ledger.a) == (890, 890)


def _original_hold(lg: Ledger) -> TransferSpec:
    return TransferSpec.pending(
        unique("hold"), lg.a, lg.b, 100, CNY, code="hold", timeout_seconds=60, metadata={"k": 1}
    )


REPLAY_CHANGES: dict[str, dict[str, Any]] = {
    "amount": {"amount": 101},
    "metadata": {"metadata": {"k": 2}},
    "metadata_dropped": {"metadata": None},
    "code": {"code": "other"},
    "code_defaulted": {"code": ""},
    "timeout": {"timeout_seconds": 61},
    "timeout_dropped": {"timeout_seconds": None},
    "debit_account": {"debit_account_id": "c"},
    "credit_account": {"credit_account_id": "c"},
    "currency": {"currency": "USD"},
    "kind": {"kind": TransferKind.POSTED, "timeout_seconds": None},
}


@pytest.mark.parametrize("change", sorted(REPLAY_CHANGES))
def test_replay_with_different_fields(change: str, ledger: Ledger) -> None:
    original = _original_hold(ledger)
    first = submit(ledger.engine, original)
    assert first.code is R.OK
    before = ledger.snapshot()
    fields = {k: (ledger.c if v == "c" else v) for k, v in REPLAY_CHANGES[change].items()}

    result = submit(ledger.engine, dataclasses.replace(original, **fields))

    assert result.code is R.EXISTS_WITH_DIFFERENT_FIELDS
    assert not result.succeeded
    assert result.transfer == first.transfer  # tells the caller what the id holds
    assert ledger.snapshot() == before


def test_replayed_hold_is_the_same_request_after_time_passed(ledger: Ledger) -> None:
    original = _original_hold(ledger)
    first = submit(ledger.engine, original)
    ledger.clock.advance(45)  # the timeout is compared as given, not as time left

    assert submit(ledger.engine, original).code is R.EXISTS
    assert first.transfer is not None
    assert first.transfer.timeout_at == first.transfer.created_at + 60_000_000
    assert balance(ledger.reader, ledger.a) == (1_000, 900)


def test_replayed_resolution(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    post = TransferSpec.post(unique("post"), pending_id, 120, code="capture")
    first = ledger.resolve(post)

    assert submit(ledger.engine, post).code is R.EXISTS
    assert submit(ledger.engine, dataclasses.replace(post, debit_account_id=ledger.a)).code is R.EXISTS
    assert submit(ledger.engine, dataclasses.replace(post, amount=121)).code is R.EXISTS_WITH_DIFFERENT_FIELDS
    assert (
        submit(ledger.engine, dataclasses.replace(post, code="other")).code is R.EXISTS_WITH_DIFFERENT_FIELDS
    )
    as_void = TransferSpec.void(post.id, pending_id)
    assert submit(ledger.engine, as_void).code is R.EXISTS_WITH_DIFFERENT_FIELDS
    assert submit(ledger.engine, post).transfer == first.transfer
    assert balance(ledger.reader, ledger.a) == (880, 880)


def test_replayed_post_asking_for_the_whole_hold_differs_from_a_stored_partial_post(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    post = ledger.resolve(TransferSpec.post(unique("post"), pending_id, 120))

    replay = submit(ledger.engine, TransferSpec.post(post.id, pending_id))  # amount None: the whole 300

    assert balance(ledger.reader, ledger.a) == (880, 880)
    assert replay.code is R.EXISTS_WITH_DIFFERENT_FIELDS


# -- ordering inside a batch ------------------------------------------------------------------------------


def test_a_later_transfer_sees_the_balance_left_by_an_earlier_one(ledger: Ledger) -> None:
    fund = TransferSpec.posted(unique("fund"), ledger.funding, ledger.c, 500, CNY)
    spend = TransferSpec.posted(unique("spend"), ledger.c, ledger.b, 500, CNY)

    assert codes(ledger.engine.create_transfers([fund, spend], group_ends=[0, 1])) == [R.OK, R.OK]
    assert balance(ledger.reader, ledger.c) == (0, 0)
    assert balance(ledger.reader, ledger.b) == (1_500, 1_500)


def test_a_spend_before_the_funding_in_the_same_batch_fails(ledger: Ledger) -> None:
    spend = TransferSpec.posted(unique("spend"), ledger.c, ledger.b, 500, CNY)
    fund = TransferSpec.posted(unique("fund"), ledger.funding, ledger.c, 500, CNY)

    assert codes(ledger.engine.create_transfers([spend, fund], group_ends=[0, 1])) == [
        R.EXCEEDS_CREDITS,
        R.OK,
    ]
    assert balance(ledger.reader, ledger.c) == (500, 500)
    assert balance(ledger.reader, ledger.b) == (1_000, 1_000)
    assert ledger.reader.get_transfer(spend.id) is None


def test_hold_and_its_resolution_in_the_same_batch(ledger: Ledger) -> None:
    hold = TransferSpec.pending(unique("hold"), ledger.a, ledger.b, 300, CNY)
    hold2 = TransferSpec.pending(unique("hold"), ledger.a, ledger.c, 200, CNY)
    specs = [
        hold,
        TransferSpec.post(unique("post"), hold.id, 100),
        hold2,
        TransferSpec.void(unique("void"), hold2.id),
    ]

    assert codes(ledger.engine.create_transfers(specs, group_ends=range(4))) == [R.OK] * 4
    assert balance(ledger.reader, ledger.a) == (900, 900)
    assert balance(ledger.reader, ledger.b) == (1_100, 1_100)
    assert totals(ledger.reader, ledger.c) == (0, 0, 0, 0)


# -- two-phase transfers ----------------------------------------------------------------------------------


def test_pending_reduces_available_not_balance(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)

    assert balance(ledger.reader, ledger.a) == (1_000, 700)
    assert balance(ledger.reader, ledger.b) == (1_000, 1_000)  # incoming holds don't count yet
    assert totals(ledger.reader, ledger.a) == (0, 1_000, 300, 0)
    assert totals(ledger.reader, ledger.b) == (0, 1_000, 0, 300)
    view = ledger.reader.get_transfer(pending_id)
    assert view is not None
    assert (view.pending_status, view.resolved_by) == (PendingStatus.PENDING, None)
    assert view.transfer.timeout_at is None
    spend = TransferSpec.posted(unique("trf"), ledger.a, ledger.c, 701, CNY)
    assert submit(ledger.engine, spend).code is R.EXCEEDS_CREDITS
    assert submit(ledger.engine, dataclasses.replace(spend, amount=700)).code is R.OK
    assert balance(ledger.reader, ledger.a) == (300, 0)


def test_full_post(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)

    post = ledger.resolve(TransferSpec.post(unique("post"), pending_id))

    assert post.transfer is not None
    assert (post.transfer.kind, post.transfer.amount, post.transfer.pending_id) == (
        TransferKind.POST_PENDING, 300, pending_id,
    )  # fmt: skip
    assert (post.transfer.debit_account_id, post.transfer.credit_account_id) == (ledger.a, ledger.b)
    assert (post.transfer.code, post.transfer.currency) == ("hold", CNY)  # taken from the hold
    assert (post.transfer.debit_net_after, post.transfer.credit_net_after) == (700, 1_300)
    assert totals(ledger.reader, ledger.a) == (300, 1_000, 0, 0)
    assert totals(ledger.reader, ledger.b) == (0, 1_300, 0, 0)
    view = ledger.reader.get_transfer(pending_id)
    assert view is not None
    assert (view.pending_status, view.resolved_by) == (PendingStatus.POSTED, post.id)


def test_partial_post_releases_the_remainder(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)

    post = ledger.resolve(TransferSpec.post(unique("post"), pending_id, 120))

    assert post.transfer is not None and post.transfer.amount == 120
    assert balance(ledger.reader, ledger.a) == (880, 880)
    assert balance(ledger.reader, ledger.b) == (1_120, 1_120)
    assert totals(ledger.reader, ledger.a) == (120, 1_000, 0, 0)
    assert totals(ledger.reader, ledger.b) == (0, 1_120, 0, 0)
    # The remainder is gone, not still postable.
    assert (
        submit(ledger.engine, TransferSpec.post(unique("post"), pending_id, 100)).code
        is R.PENDING_ALREADY_POSTED
    )


def test_void_releases_the_hold(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)

    void = ledger.resolve(TransferSpec.void(unique("void"), pending_id, code="cancel"))

    assert void.transfer is not None
    assert (void.transfer.kind, void.transfer.amount, void.transfer.code) == (
        TransferKind.VOID_PENDING,
        300,
        "cancel",
    )
    assert totals(ledger.reader, ledger.a) == (0, 1_000, 0, 0)
    assert totals(ledger.reader, ledger.b) == (0, 1_000, 0, 0)
    view = ledger.reader.get_transfer(pending_id)
    assert view is not None
    assert (view.pending_status, view.resolved_by) == (PendingStatus.VOIDED, void.id)


@pytest.mark.parametrize("status", [AccountStatus.FROZEN, AccountStatus.DEBIT_FROZEN])
def test_post_refused_while_the_payer_is_frozen_but_void_allowed(
    status: AccountStatus, ledger: Ledger
) -> None:
    pending_id = ledger.hold(300)
    ledger.status(ledger.a, status)

    post = submit(ledger.engine, TransferSpec.post(unique("post"), pending_id))
    assert post.code is R.ACCOUNT_FROZEN
    assert balance(ledger.reader, ledger.a) == (1_000, 700)

    ledger.resolve(TransferSpec.void(unique("void"), pending_id))
    assert balance(ledger.reader, ledger.a) == (1_000, 1_000)
    assert balance(ledger.reader, ledger.b) == (1_000, 1_000)


def test_post_refused_while_the_payee_is_frozen(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    ledger.status(ledger.b, AccountStatus.FROZEN)
    assert submit(ledger.engine, TransferSpec.post(unique("post"), pending_id)).code is R.ACCOUNT_FROZEN
    ledger.status(ledger.b, AccountStatus.DEBIT_FROZEN)  # may receive again
    ledger.resolve(TransferSpec.post(unique("post"), pending_id))
    assert balance(ledger.reader, ledger.b) == (1_300, 1_300)


def test_expiry(fresh_engine: LedgerEngine, clock: FixedClock) -> None:
    engine = fresh_engine
    reader = LedgerReader(engine.db)
    _, (a, b) = open_accounts(engine, 2, funded=1_000)
    first, second, forever = unique("hold"), unique("hold"), unique("hold")
    specs = [
        TransferSpec.pending(first, a, b, 300, CNY, timeout_seconds=60),
        TransferSpec.pending(second, a, b, 200, CNY, timeout_seconds=120),
        TransferSpec.pending(forever, a, b, 100, CNY),
    ]
    assert codes(engine.create_transfers(specs, group_ends=range(3))) == [R.OK] * 3
    assert balance(reader, a) == (1_000, 400)

    clock.advance(60, microseconds=-1)
    assert engine.expire_pending() == 0
    assert balance(reader, a) == (1_000, 400)

    clock.advance(microseconds=1)  # exactly at the timeout
    assert engine.expire_pending() == 1
    assert balance(reader, a) == (1_000, 700)
    assert totals(reader, b) == (0, 1_000, 0, 300)
    view = reader.get_transfer(first)
    assert view is not None and view.pending_status is PendingStatus.EXPIRED
    assert view.resolved_by is not None
    expiry = reader.get_transfer(view.resolved_by)
    assert expiry is not None
    assert (expiry.transfer.kind, expiry.transfer.amount, expiry.transfer.pending_id) == (
        TransferKind.EXPIRE_PENDING, 300, first,
    )  # fmt: skip
    assert submit(engine, TransferSpec.post(unique("post"), first)).code is R.PENDING_EXPIRED
    assert submit(engine, TransferSpec.void(unique("void"), first)).code is R.PENDING_EXPIRED

    assert engine.expire_pending() == 0  # twice is harmless
    assert balance(reader, a) == (1_000, 700)

    clock.advance(3_600)
    assert engine.expire_pending() == 1
    assert engine.expire_pending() == 0
    assert balance(reader, a) == (1_000, 900)
    assert [reader.get_transfer(i).pending_status for i in (first, second, forever)] == [  # type: ignore[union-attr]
        PendingStatus.EXPIRED, PendingStatus.EXPIRED, PendingStatus.PENDING,
    ]  # fmt: skip
    assert verify_ledger(engine.db).ok


def test_expiry_sweeps_in_bounded_batches(fresh_engine: LedgerEngine, clock: FixedClock) -> None:
    engine = fresh_engine
    reader = LedgerReader(engine.db)
    _, (a, b) = open_accounts(engine, 2, funded=1_000)
    holds = [TransferSpec.pending(unique("hold"), a, b, 10, CNY, timeout_seconds=1) for _ in range(5)]
    assert codes(engine.create_transfers(holds, group_ends=range(5))) == [R.OK] * 5
    clock.advance(1)

    assert [engine.expire_pending(limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert balance(reader, a) == (1_000, 1_000)
    assert totals(reader, b) == (0, 1_000, 0, 0)


def test_expiry_of_holds_with_long_ids_sharing_a_prefix(
    fresh_engine: LedgerEngine, clock: FixedClock
) -> None:
    engine = fresh_engine
    reader = LedgerReader(engine.db)
    _, (a, b) = open_accounts(engine, 2, funded=1_000)
    prefix = unique("hold").ljust(121, "x")
    holds = [prefix + "-first", prefix + "-second"]
    specs = [TransferSpec.pending(h, a, b, 100, CNY, timeout_seconds=1) for h in holds]
    assert codes(engine.create_transfers(specs, group_ends=[0, 1])) == [R.OK, R.OK]
    clock.advance(2)

    expired = engine.expire_pending() + engine.expire_pending()

    assert [reader.get_transfer(h).pending_status for h in holds] == [PendingStatus.EXPIRED] * 2  # type: ignore[union-attr]
    assert expired == 2
    assert balance(reader, a) == (1_000, 1_000)


def test_a_client_transfer_id_cannot_block_expiry(fresh_engine: LedgerEngine, clock: FixedClock) -> None:
    engine = fresh_engine
    reader = LedgerReader(engine.db)
    funding, (a, b) = open_accounts(engine, 2, funded=1_000)
    hold = unique("hold")
    specs = [
        TransferSpec.pending(hold, a, b, 100, CNY, timeout_seconds=1),
        TransferSpec.posted("expire:" + hold, funding, b, 1, CNY),
    ]
    assert codes(engine.create_transfers(specs, group_ends=[0, 1])) == [R.OK, R.OK]
    clock.advance(2)

    engine.expire_pending()

    assert reader.get_transfer(hold).pending_status is PendingStatus.EXPIRED  # type: ignore[union-attr]
    assert balance(reader, a) == (1_000, 1_000)


def test_a_hold_that_would_overflow_the_posted_total_is_refused(own_ledger: Ledger) -> None:
    ledger = own_ledger
    big = ledger.account()
    ledger.move(ledger.account(normal=NormalBalance.DEBIT), big, MAX_AMOUNT - 5)

    hold = submit(ledger.engine, TransferSpec.pending(unique("hold"), ledger.funding, big, 100, CNY))
    if hold.code is R.OK:  # accepting the hold is only acceptable if posting it is then refused
        post = submit(ledger.engine, TransferSpec.post(unique("post"), hold.id))
        assert post.code is R.OVERFLOW
    else:
        assert hold.code is R.OVERFLOW
    account = ledger.reader.get_account(big)
    assert account is not None
    assert type(account.credits_posted) is int
    assert account.credits_posted == MAX_AMOUNT - 5


# -- linked chains ----------------------------------------------------------------------------------------


def test_linked_chain_commits_all(ledger: Ledger) -> None:
    specs = [
        TransferSpec.posted(unique("l"), ledger.a, ledger.c, 600, CNY, linked=True),
        TransferSpec.posted(unique("l"), ledger.c, ledger.b, 500, CNY, linked=True),  # needs the first
        TransferSpec.pending(unique("l"), ledger.c, ledger.b, 100, CNY),
    ]
    assert codes(ledger.engine.create_transfers(specs)) == [R.OK, R.OK, R.OK]
    assert balance(ledger.reader, ledger.c) == (100, 0)
    assert balance(ledger.reader, ledger.a) == (400, 400)


def test_linked_chain_is_all_or_none(ledger: Ledger) -> None:
    hold = TransferSpec.pending(unique("l"), ledger.a, ledger.b, 100, CNY, linked=True)
    specs = [
        TransferSpec.posted(unique("l"), ledger.a, ledger.b, 100, CNY, linked=True),
        hold,
        TransferSpec.post(unique("l"), hold.id, linked=True),
        TransferSpec.posted(unique("l"), ledger.b, ledger.c, 5_000, CNY, linked=True),  # fails
        TransferSpec.posted(unique("l"), ledger.c, ledger.a, 10, CNY),
    ]
    before = ledger.snapshot()

    results = ledger.engine.create_transfers(specs)

    assert codes(results) == [R.LINKED_EVENT_FAILED] * 3 + [R.EXCEEDS_CREDITS, R.LINKED_EVENT_FAILED]
    assert all(r.transfer is None for r in results)
    assert ledger.snapshot() == before
    assert all(ledger.reader.get_transfer(s.id) is None for s in specs)


def test_a_failed_chain_leaves_the_batch_as_if_it_never_ran(ledger: Ledger) -> None:
    hold = TransferSpec.pending(unique("hold"), ledger.a, ledger.c, 900, CNY, linked=True)
    failing_chain = [
        hold,
        TransferSpec.posted(unique("l"), ledger.c, ledger.b, 1, CNY),
    ]  # c has nothing posted
    after = [
        TransferSpec.posted(unique("trf"), ledger.a, ledger.b, 1_000, CNY),  # the hold was rolled back
        TransferSpec.post(unique("post"), hold.id),  # and so it does not exist
    ]

    results = ledger.engine.create_transfers(failing_chain + after, group_ends=[1, 2, 3])

    assert codes(results) == [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS, R.OK, R.PENDING_NOT_FOUND]
    assert totals(ledger.reader, ledger.a) == (1_000, 1_000, 0, 0)
    assert totals(ledger.reader, ledger.c) == (0, 0, 0, 0)
    assert balance(ledger.reader, ledger.b) == (2_000, 2_000)


def test_a_chain_never_extends_past_a_group_end(ledger: Ledger) -> None:
    specs = [
        TransferSpec.posted(unique("g0"), ledger.a, ledger.b, 1, CNY, linked=True),
        TransferSpec.posted(unique("g0"), ledger.a, ledger.b, 2, CNY),  # group 0 ends here, chain closed
        TransferSpec.posted(unique("g1"), ledger.a, ledger.b, 4, CNY, linked=True),
        TransferSpec.posted(unique("g1"), ledger.a, ledger.b, 8, CNY, linked=True),  # group 1 ends open
        TransferSpec.posted(unique("g2"), ledger.a, ledger.b, 16, CNY),  # group 2 must not join it
    ]

    results = ledger.engine.create_transfers(specs, group_ends=[1, 3, 4])

    assert codes(results) == [R.OK, R.OK, R.LINKED_EVENT_CHAIN_OPEN, R.LINKED_EVENT_CHAIN_OPEN, R.OK]
    assert balance(ledger.reader, ledger.a) == (1_000 - 1 - 2 - 16, 1_000 - 1 - 2 - 16)
    assert ledger.reader.get_transfer(specs[2].id) is None
    assert ledger.reader.get_transfer(specs[3].id) is None


def test_a_request_ending_on_a_linked_transfer_is_an_open_chain(ledger: Ledger) -> None:
    specs = [
        TransferSpec.posted(unique("s"), ledger.a, ledger.b, 1, CNY),
        TransferSpec.posted(unique("l"), ledger.a, ledger.b, 2, CNY, linked=True),
        TransferSpec.posted(unique("l"), ledger.a, ledger.b, 4, CNY, linked=True),
    ]
    assert codes(ledger.engine.create_transfers(specs)) == [
        R.OK,
        R.LINKED_EVENT_CHAIN_OPEN,
        R.LINKED_EVENT_CHAIN_OPEN,
    ]
    assert balance(ledger.reader, ledger.a) == (999, 999)


def test_a_replayed_chain_returns_exists_for_every_member(ledger: Ledger) -> None:
    chain = [
        TransferSpec.posted(unique("l"), ledger.a, ledger.c, 300, CNY, linked=True),
        TransferSpec.pending(unique("l"), ledger.c, ledger.b, 200, CNY, linked=True),
        TransferSpec.posted(unique("l"), ledger.b, ledger.a, 50, CNY),
    ]
    first = ledger.engine.create_transfers(chain)
    assert codes(first) == [R.OK] * 3
    before = ledger.snapshot()

    again = ledger.engine.create_transfers(chain)

    assert codes(again) == [R.EXISTS] * 3
    assert [r.transfer for r in again] == [r.transfer for r in first]
    assert ledger.snapshot() == before


# -- accounts ---------------------------------------------------------------------------------------------


def test_create_accounts_result_codes(engine: LedgerEngine, reader: LedgerReader) -> None:
    base = AccountSpec(
        unique("acct"), CNY, "test.wallet", owner_ref="usr_1", debits_must_not_exceed_credits=True,
        balance_ceiling=5_000, metadata={"tier": 2, "tags": ["a"]},
    )  # fmt: skip
    rejected = {
        "lowercase_currency": (
            dataclasses.replace(base, id=unique("acct"), currency="cny"),
            R.UNKNOWN_CURRENCY,
        ),
        "no_minor_unit": (dataclasses.replace(base, id=unique("acct"), currency="XAU"), R.UNKNOWN_CURRENCY),
        "both_flags": (
            dataclasses.replace(base, id=unique("acct"), credits_must_not_exceed_debits=True),
            R.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        ),
        "negative_ceiling": (
            dataclasses.replace(base, id=unique("acct"), balance_ceiling=-1),
            R.INVALID_CEILING,
        ),
        "empty_id": (dataclasses.replace(base, id=""), R.INVALID_ID),
        "id_65_chars": (dataclasses.replace(base, id=unique("acct").ljust(65, "x")), R.INVALID_ID),
        "empty_code": (dataclasses.replace(base, id=unique("acct"), code=""), R.INVALID_CODE),
        "code_65_chars": (dataclasses.replace(base, id=unique("acct"), code="c" * 65), R.INVALID_CODE),
        "ceiling_past_64_bits": (
            dataclasses.replace(base, id=unique("acct"), balance_ceiling=2**63),
            R.INVALID_CEILING,
        ),
        "metadata_not_encodable": (
            dataclasses.replace(base, id=unique("acct"), metadata={"x": float("inf")}),
            R.INVALID_METADATA,
        ),
        "id_with_nul": (dataclasses.replace(base, id=unique("acct") + "\x00"), R.INVALID_ID),
        "empty_owner": (dataclasses.replace(base, id=unique("acct"), owner_ref=""), R.INVALID_OWNER_REF),
        "owner_129_chars": (
            dataclasses.replace(base, id=unique("acct"), owner_ref="o" * 129),
            R.INVALID_OWNER_REF,
        ),
        "metadata_9_kib": (
            dataclasses.replace(base, id=unique("acct"), metadata={"x": "y" * 9000}),
            R.METADATA_TOO_LARGE,
        ),
    }
    longest = dataclasses.replace(base, id=unique("acct").ljust(64, "x"), code="c" * 64, balance_ceiling=0)
    specs = [base, *(spec for spec, _ in rejected.values()), base, longest]

    results = engine.create_accounts(specs)

    assert [r.code for r in results] == [R.OK, *(code for _, code in rejected.values()), R.EXISTS, R.OK]
    for spec, _ in rejected.values():
        assert reader.get_account(spec.id) is None if spec.id else True
    stored = reader.get_account(base.id)
    assert stored is not None
    assert stored == results[0].account
    assert (stored.currency, stored.code, stored.owner_ref, stored.normal_balance) == (
        CNY, "test.wallet", "usr_1", NormalBalance.CREDIT,
    )  # fmt: skip
    assert (stored.debits_must_not_exceed_credits, stored.credits_must_not_exceed_debits) == (True, False)
    assert (stored.balance_ceiling, stored.status, stored.metadata) == (
        5_000,
        AccountStatus.OPEN,
        base.metadata,
    )
    assert (stored.balance, stored.available) == (0, 0)

    again = engine.create_accounts(
        [
            base,
            dataclasses.replace(base, code="test.other"),
            dataclasses.replace(base, balance_ceiling=None),
            dataclasses.replace(base, metadata=None),
            dataclasses.replace(base, normal_balance=NormalBalance.DEBIT),
            dataclasses.replace(base, currency="USD"),
        ]
    )
    assert [r.code for r in again] == [R.EXISTS] + [R.EXISTS_WITH_DIFFERENT_FIELDS] * 5
    assert all(r.account == stored for r in again)
    assert reader.get_account(base.id) == stored


def test_get_account_of_unknown_id_is_none(reader: LedgerReader) -> None:
    assert reader.get_account(unique("nobody")) is None
    assert reader.balance_at(unique("nobody"), 0) is None


def test_closing_an_account(ledger: Ledger) -> None:
    with pytest.raises(Conflict):
        ledger.engine.set_account_status(ledger.a, AccountStatus.CLOSED)  # it holds 1000
    assert ledger.reader.get_account(ledger.a).status is AccountStatus.OPEN  # type: ignore[union-attr]

    pending_id = ledger.hold(100, credit=ledger.c)
    with pytest.raises(Conflict):
        ledger.engine.set_account_status(ledger.c, AccountStatus.CLOSED)  # an incoming hold
    ledger.resolve(TransferSpec.void(unique("void"), pending_id))

    closed = ledger.engine.set_account_status(ledger.c, AccountStatus.CLOSED)
    assert closed.status is AccountStatus.CLOSED
    assert ledger.reader.get_account(ledger.c).status is AccountStatus.CLOSED  # type: ignore[union-attr]
    for status in (AccountStatus.OPEN, AccountStatus.FROZEN, AccountStatus.DEBIT_FROZEN):
        with pytest.raises(Conflict):
            ledger.engine.set_account_status(ledger.c, status)
    assert ledger.reader.get_account(ledger.c).status is AccountStatus.CLOSED  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        ledger.engine.set_account_status(unique("nobody"), AccountStatus.FROZEN)


def test_freezing_is_reversible(ledger: Ledger) -> None:
    ledger.status(ledger.a, AccountStatus.FROZEN)
    assert submit(ledger.engine, posted(ledger)).code is R.ACCOUNT_FROZEN
    ledger.status(ledger.a, AccountStatus.DEBIT_FROZEN)
    assert submit(ledger.engine, posted(ledger, ledger.b, ledger.a)).code is R.OK  # may receive
    assert submit(ledger.engine, posted(ledger)).code is R.ACCOUNT_FROZEN
    ledger.status(ledger.a, AccountStatus.OPEN)
    assert submit(ledger.engine, posted(ledger, amount=1_001)).code is R.OK
    assert balance(ledger.reader, ledger.a) == (0, 0)


def test_balance_ceiling(ledger: Ledger) -> None:
    with pytest.raises(Conflict):
        ledger.engine.set_balance_ceiling(ledger.a, 999)
    assert ledger.reader.get_account(ledger.a).balance_ceiling is None  # type: ignore[union-attr]

    assert ledger.engine.set_balance_ceiling(ledger.a, 1_000).balance_ceiling == 1_000
    assert submit(ledger.engine, posted(ledger, ledger.b, ledger.a)).code is R.EXCEEDS_CEILING
    ledger.engine.set_balance_ceiling(ledger.a, None)
    assert submit(ledger.engine, posted(ledger, ledger.b, ledger.a)).code is R.OK
    assert balance(ledger.reader, ledger.a) == (1_001, 1_001)

    ledger.hold(300, credit=ledger.c)  # incoming holds count against a ceiling
    with pytest.raises(Conflict):
        ledger.engine.set_balance_ceiling(ledger.c, 299)
    ledger.engine.set_balance_ceiling(ledger.c, 300)
    assert ledger.reader.get_account(ledger.c).balance_ceiling == 300  # type: ignore[union-attr]

    with pytest.raises(InvalidInput):
        ledger.engine.set_balance_ceiling(ledger.c, -1)
    with pytest.raises(NotFound):
        ledger.engine.set_balance_ceiling(unique("nobody"), 10)


# -- reads ------------------------------------------------------------------------------------------------


def test_account_history_newest_first_with_direction_and_balance_after(ledger: Ledger) -> None:
    lg = ledger
    t1 = lg.move(lg.a, lg.c, 500).id
    t2 = lg.move(lg.c, lg.b, 120).id
    t3 = lg.hold(50, debit=lg.c, credit=lg.b)
    t4 = lg.move(lg.b, lg.c, 20).id

    def entries(account_id: str) -> list[tuple[str, str, int]]:
        page = lg.reader.account_history(account_id, limit=100)
        assert page.next_cursor is None
        return [(e.transfer.id, e.direction, e.balance_after) for e in page.entries]

    assert entries(lg.c) == [(t4, "credit", 400), (t3, "debit", 380), (t2, "debit", 380), (t1, "credit", 500)]
    assert entries(lg.b)[:3] == [(t4, "debit", 1_100), (t3, "credit", 1_120), (t2, "credit", 1_120)]
    # The debit-normal funding account: paying out 2000 raised its balance to 2000.
    funding = entries(lg.funding)
    assert [(d, bal) for _, d, bal in funding] == [("debit", 2_000), ("debit", 1_000)]
    assert lg.reader.account_history(unique("nobody")).entries == []


def test_history_with_holds_once_lists_a_resolved_hold_at_its_resolution(ledger: Ledger) -> None:
    """A wallet's history (payments/history.py) shows each hold once: the resolution carries it, where
    the posted balance changed; a code filter matches a resolution by its hold's code."""
    lg = ledger
    t1 = lg.move(lg.a, lg.c, 500).id
    h1 = lg.hold(100, debit=lg.c, credit=lg.b, code="shop.hold")
    t2 = lg.move(lg.a, lg.c, 50).id
    p1 = submit(lg.engine, TransferSpec.post(unique("post"), h1, 80)).id  # partly: 20 released
    h2 = lg.hold(30, debit=lg.c, credit=lg.b, code="shop.hold")
    v2 = submit(lg.engine, TransferSpec.void(unique("void"), h2, code="hold.released")).id
    h3 = lg.hold(20, debit=lg.c, credit=lg.b, code="shop.hold")

    def listed(**filters: Any) -> list[tuple[str, str | None, int, int]]:
        found, cursor = [], None
        while True:  # two by two: the pages join up
            page = lg.reader.account_history_filtered(lg.c, 2, cursor, HistoryFilter(**filters))
            found += [
                (e.transfer.id, e.hold and e.hold.id, e.transfer.amount, e.balance_after)
                for e in page.entries
            ]
            if (cursor := page.next_cursor) is None:
                return found

    assert listed(holds_once=True) == [
        (h3, None, 20, 470),
        (v2, h2, 30, 470),
        (p1, h1, 80, 470),
        (t2, None, 50, 550),
        (t1, None, 500, 500),
    ]
    assert [e[0] for e in listed()] == [h3, v2, h2, p1, t2, h1, t1]  # the ledger's own view: every row
    assert [e[0] for e in listed(holds_once=True, codes=frozenset({"shop.hold"}))] == [h3, v2, p1]


def test_account_history_pagination(ledger: Ledger) -> None:
    lg = ledger
    ids = [lg.move(lg.a, lg.c, 10 + i).id for i in range(7)]
    newest_first = list(reversed(ids))

    seen: list[str] = []
    sizes = []
    cursor = None
    while True:
        page = lg.reader.account_history(lg.c, limit=3, cursor=cursor)
        seen += [e.transfer.id for e in page.entries]
        sizes.append(len(page.entries))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == newest_first
    assert [e.balance_after for e in lg.reader.account_history(lg.c, limit=7).entries] == [
        sum(10 + i for i in range(k)) for k in range(7, 0, -1)
    ]
    assert lg.reader.account_history(lg.c, limit=7).next_cursor is None
    assert lg.reader.account_history(lg.c, limit=6).next_cursor is not None
    last = lg.reader.account_history(
        lg.c, limit=1, cursor=str(lg.reader.account_history(lg.c, limit=7).entries[-1].transfer.seq)
    )
    assert (last.entries, last.next_cursor) == ([], None)


@pytest.mark.parametrize(
    ("limit", "cursor"),
    [(0, None), (101, None), (-1, None), (10, "abc"), (10, "-1"), (10, "1.5"), (10, "1" * 20)],
)
def test_account_history_rejects_bad_paging(limit: int, cursor: str | None, ledger: Ledger) -> None:
    with pytest.raises(InvalidInput):
        ledger.reader.account_history(ledger.a, limit=limit, cursor=cursor)


def test_account_history_rejects_a_superscript_cursor(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput):
        ledger.reader.account_history(ledger.a, cursor="²")


@pytest.mark.parametrize(
    "backend",
    [
        "postgresql",
        "sqlite",
    ],
)
def test_account_history_cursor_beyond_64_bits(ledger: Ledger) -> None:
    try:
        page = ledger.reader.account_history(ledger.a, cursor="9" * 19)
    except InvalidInput:
        return
    # Accepting it is fine too, as long as it means "from the newest".
    assert page.entries == ledger.reader.account_history(ledger.a).entries


def test_balance_at(ledger: Ledger) -> None:
    lg = ledger
    t0 = lg.clock.now_us()
    lg.clock.advance(10)
    t1 = lg.move(lg.funding, lg.c, 100).transfer.created_at  # type: ignore[union-attr]
    lg.clock.advance(10)
    t2 = lg.move(lg.c, lg.b, 30).transfer.created_at  # type: ignore[union-attr]
    lg.hold(20, debit=lg.c)
    lg.clock.advance(10)

    assert lg.reader.balance_at(lg.c, t0) == 0
    assert lg.reader.balance_at(lg.c, t1 - 1) == 0
    assert lg.reader.balance_at(lg.c, t1) == 100
    assert lg.reader.balance_at(lg.c, t1 + 5_000_000) == 100
    assert lg.reader.balance_at(lg.c, t2) == 70  # holds do not change the posted balance
    assert lg.reader.balance_at(lg.c, lg.clock.now_us()) == 70
    assert lg.reader.balance_at(lg.funding, t1 - 1) == 2_000  # debit-normal: positive
    assert lg.reader.balance_at(lg.funding, t1) == 2_100
    assert lg.reader.balance_at(lg.b, t2) == 1_030


# -- verify -----------------------------------------------------------------------------------------------


def _busy_ledger(engine: LedgerEngine, clock: FixedClock) -> tuple[str, list[str]]:
    funding, wallets = open_accounts(engine, 3, funded=1_000)
    a, b, c = wallets
    holds = [unique("hold") for _ in range(4)]
    specs = [
        TransferSpec.posted(unique("trf"), a, b, 100, CNY),
        TransferSpec.pending(holds[0], a, c, 200, CNY),
        TransferSpec.pending(holds[1], b, c, 150, CNY),
        TransferSpec.pending(holds[2], c, a, 50, CNY, timeout_seconds=5),
        TransferSpec.pending(holds[3], c, b, 25, CNY),
        TransferSpec.post(unique("post"), holds[0], 120),
        TransferSpec.void(unique("void"), holds[1]),
    ]
    assert codes(engine.create_transfers(specs, group_ends=range(len(specs)))) == [R.OK] * len(specs)
    clock.advance(6)
    assert engine.expire_pending() == 1
    return funding, wallets


def test_verify_passes_on_a_clean_ledger_and_reports_tampering(
    fresh_engine: LedgerEngine, clock: FixedClock
) -> None:
    _, (a, _b, _c) = _busy_ledger(fresh_engine, clock)
    db = fresh_engine.db
    progress: list[tuple[int, int]] = []

    clean = verify_ledger(db, progress=lambda done, total: progress.append((done, total)))

    assert clean.findings == []
    assert clean.ok
    assert (clean.accounts, clean.transfers, clean.currencies) == (4, 3 + 7 + 1, 1)
    assert progress == [(4, 4)]

    p = "%s" if db.is_postgresql else "?"
    with db.write() as conn:
        conn.exec_driver_sql(
            f"UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE id = {p}", (a,)
        )

    report = verify_ledger(db)

    assert not report.ok
    assert sorted((f.kind, f.subject) for f in report.findings) == [
        ("balance_mismatch", a),
        ("currency_unbalanced", CNY),
    ]
    [mismatch] = [f for f in report.findings if f.kind == "balance_mismatch"]
    assert "(220, 1001, 0, 0)" in mismatch.detail  # the stored totals...
    assert "(220, 1000, 0, 0)" in mismatch.detail  # ...and the recomputed ones


# -- PostgreSQL-specific bugs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        "postgresql",
    ],
)
def test_ids_and_codes_with_a_double_quote(ledger: Ledger) -> None:
    quoted = unique('say"hi')
    specs = [
        TransferSpec.posted(quoted, ledger.a, ledger.b, 1, CNY),
        TransferSpec.posted(unique("trf"), ledger.a, ledger.b, 2, CNY),
    ]

    assert codes(ledger.engine.create_transfers(specs, group_ends=[0, 1])) == [R.OK, R.OK]
    assert ledger.reader.get_transfer(quoted) is not None
    assert balance(ledger.reader, ledger.b) == (1_003, 1_003)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_racing_batches_with_the_same_id_apply_it_once(fresh_engine: LedgerEngine) -> None:
    engine = fresh_engine
    db = engine.db
    reader = LedgerReader(db)
    _, (a, b, c, d) = open_accounts(engine, 4, funded=1_000)
    transfer_id = unique("race")
    outcome: dict[str, Any] = {}

    def second_batch() -> None:
        try:
            outcome["results"] = engine.create_transfers([TransferSpec.posted(transfer_id, c, d, 100, CNY)])
        except Exception as exc:  # reported below; an exception escaping a thread would only warn
            outcome["error"] = exc

    with db.engine.connect() as conn:
        tx = conn.begin()
        assert codes(engine.apply_in(conn, [TransferSpec.posted(transfer_id, a, b, 100, CNY)])) == [R.OK]
        racer = threading.Thread(target=second_batch)
        racer.start()
        deadline = time.monotonic() + 20
        while not _someone_waits_on_a_lock(db):  # the racer's INSERT waits for our uncommitted row
            if time.monotonic() > deadline or not racer.is_alive():
                raise RuntimeError(f"the racing batch never blocked: {outcome}")
            time.sleep(0.01)
        tx.commit()
    racer.join(20)
    assert "error" not in outcome, f"the racing batch failed: {outcome['error']!r}"
    if "results" not in outcome:
        raise RuntimeError("the racing batch did not finish")

    stored = reader.get_transfer(transfer_id)
    assert stored is not None and stored.transfer.debit_account_id == a
    assert codes(outcome["results"]) == [R.EXISTS_WITH_DIFFERENT_FIELDS]
    assert balance(reader, c) == (1_000, 1_000)
    assert verify_ledger(db).ok


def _someone_waits_on_a_lock(db: Any) -> bool:
    with db.read() as conn:
        waiting = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).scalar_one()
    return bool(waiting)


def test_bad_input_fails_only_its_own_request(ledger: Ledger) -> None:
    """One caller's unencodable metadata or fractional amount must not take the batch down with it."""
    good = TransferSpec.posted(unique(), ledger.a, ledger.b, 7, "CNY")
    results = ledger.engine.create_transfers(
        [
            TransferSpec.posted(
                unique(), ledger.a, ledger.b, 1, "CNY", metadata={"d": datetime.date(2026, 1, 1)}
            ),
            TransferSpec.posted(unique(), ledger.a, ledger.b, 1.5, "CNY"),  # type: ignore[arg-type]
            TransferSpec.posted(unique() + "\x00", ledger.a, ledger.b, 1, "CNY"),
            good,
        ],
        group_ends=range(4),
    )
    assert [r.code for r in results] == [R.INVALID_METADATA, R.INVALID_AMOUNT, R.INVALID_ID, R.OK]
    assert ledger.reader.get_transfer(good.id) is not None


def test_a_ceiling_past_64_bits_is_invalid_input(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput):
        ledger.engine.set_balance_ceiling(ledger.a, 2**63)
    with pytest.raises(InvalidInput):
        ledger.engine.set_balance_ceiling(ledger.a, 10.5)  # type: ignore[arg-type]


def test_verify_reads_one_snapshot_while_transfers_commit(fresh_engine: LedgerEngine) -> None:
    """Verify during live traffic must not report differences that only mixing two moments creates."""
    funding, wallets = open_accounts(fresh_engine, 4, funded=10_000)
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            fresh_engine.create_transfers(
                [TransferSpec.posted(unique(), wallets[n % 4], wallets[(n + 1) % 4], 1, "CNY")]
            )

    writer = threading.Thread(target=traffic)
    writer.start()
    try:
        reports = [verify_ledger(fresh_engine.db) for _ in range(25)]
    finally:
        stop.set()
        writer.join(30)
    assert [r.findings for r in reports if not r.ok] == []


def test_sweeps_skip_holds_already_known_resolved(fresh_engine: LedgerEngine, clock: FixedClock) -> None:
    """After a sweep drains everything due, the next ones start an hour before now instead of at the
    beginning of history; a new process starts from the beginning once."""
    engine = fresh_engine
    _, (a, b) = open_accounts(engine, 2, funded=1_000)
    first = unique("hold")
    engine.create_transfers([TransferSpec.pending(first, a, b, 10, "CNY", timeout_seconds=10)])
    clock.advance(11)
    assert engine.expire_pending() == 1
    assert engine.expire_pending() == 0

    # A hold stamped by a server whose clock is two hours behind: due long before this engine's floor.
    behind = FixedClock(clock.now_us() - 2 * 3_600 * 1_000_000)
    laggard = unique("hold")
    LedgerEngine(engine.db, behind).create_transfers(
        [TransferSpec.pending(laggard, a, b, 10, "CNY", timeout_seconds=1)]
    )
    # Within the overlap: a hold due half an hour ago (committed late) is still found.
    recent = unique("hold")
    half_hour_ago = FixedClock(clock.now_us() - 1_800 * 1_000_000)
    LedgerEngine(engine.db, half_hour_ago).create_transfers(
        [TransferSpec.pending(recent, a, b, 10, "CNY", timeout_seconds=1)]
    )
    assert engine.expire_pending() == 1
    reader = LedgerReader(engine.db)
    assert reader.get_transfer(recent).pending_status is PendingStatus.EXPIRED
    assert reader.get_transfer(laggard).pending_status is PendingStatus.PENDING
    # A new process (or `qianbao ledger sweep`) starts from the beginning and releases it.
    assert LedgerEngine(engine.db, clock).expire_pending() == 1
    assert reader.get_transfer(laggard).pending_status is PendingStatus.EXPIRED

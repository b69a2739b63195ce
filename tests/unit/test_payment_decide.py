"""The payment engine's decision core, `qianbao.payments.engine.decide`, over plain data.

Every rule is checked on its own (the finding's code and data, and that the boundary passes), what each
kind of payment counts, the step-up reasons, and the documented order: a request failing several rules
is answered with the first. No database and no app: the books are built here.

The payer is alice, paying from `w-alice`; she has a second wallet `w-alice-2` (an own move); bob has
`w-bob` (CNY) and `w-bob-usd`; the merchant `shop` has `w-shop`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from qianbao.errors import LimitExceeded, Locked
from qianbao.findings import Finding
from qianbao.identity.limit_rules import HolderCap, PayerLimits
from qianbao.identity.model import StepUpPolicy, TierLimits
from qianbao.ledger.model import Account, AccountStatus, NormalBalance
from qianbao.payments.engine.decide import Approve, Decision, Decline, decide
from qianbao.payments.engine.declines import error_for
from qianbao.payments.engine.facts import Books, Kind, Payer, PaymentRequest, SourceWallet, TargetWallet
from qianbao.payments.errors import CurrencyMismatch, PaymentDeclined, RecipientNotFound, SameWallet
from qianbao.wallets.settings import Budget, WalletSettings

NOW = 1_767_225_600_000_000
CNY = "CNY"
S = AccountStatus

SOURCE = "w-alice"
OWN = "w-alice-2"
BOB = "w-bob"
BOB_USD = "w-bob-usd"
SHOP = "w-shop"
WALLETS = {SOURCE: ("alice", CNY), OWN: ("alice", CNY), BOB: ("bob", CNY), BOB_USD: ("bob", "USD")}
WALLETS[SHOP] = ("shop", CNY)

BALANCE = 1_000_000
SINGLE = 500_000
DAILY = 1_000_000
AMOUNT = 50_000

# Asks for nothing (only a code confirmation asks, always); `POLICY` asks for what a test sets up.
QUIET = StepUpPolicy(amount_threshold=10**15, new_payee_threshold=10**15, small_payment_threshold=10**15)
POLICY = StepUpPolicy(amount_threshold=100_000, new_payee_threshold=10_000, small_payment_threshold=1_000)
LOUD = StepUpPolicy(amount_threshold=1, new_payee_threshold=0, small_payment_threshold=0)  # asks it all


def make_account(
    id: str,
    *,
    currency: str = CNY,
    credits: int = 0,
    debits: int = 0,
    debits_pending: int = 0,
    credits_pending: int = 0,
    status: AccountStatus = S.OPEN,
    ceiling: int | None = None,
) -> Account:
    """A wallet's ledger account: credit-normal, it may not go below zero."""
    return Account(
        id, currency, "wallet", None, NormalBalance.CREDIT, True, False, ceiling, status,
        debits, credits, debits_pending, credits_pending, None, 0,
    )  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """Every knob a test turns; `build` makes the request and the books from it."""

    kind: Kind = Kind.P2P
    amount: int = AMOUNT
    currency: str = CNY
    target: str | None = BOB
    named: str | None = None
    recipient_by: str = "wallet_id"
    merchant_status: str | None = None
    device_trusted: bool = True
    no_pin: bool = False
    stepped_up: bool = False
    # the payer
    credential: str = "active"
    tier: int = 3
    single: int | None = SINGLE
    daily: int | None = DAILY
    used_today: int = 0
    # the paying wallet
    locked_until: int | None = None
    budget: Budget | None = None
    month_spent: int = 0
    balance: int = BALANCE
    debits_pending: int = 0
    source_status: AccountStatus = S.OPEN
    # the receiving wallet (whichever `target` is)
    target_status: AccountStatus = S.OPEN
    target_ceiling: int | None = None
    target_credits: int = 0
    target_credits_pending: int = 0
    holders: dict[str, HolderCap] = field(default_factory=dict)
    known: frozenset[tuple[str, str]] = frozenset()

    def request(self) -> PaymentRequest:
        return PaymentRequest(
            self.kind, "alice", SOURCE, self.target, self.amount, self.currency,
            named_wallet_id=self.named, recipient_by=self.recipient_by,
            merchant_status=self.merchant_status, device_trusted=self.device_trusted,
            no_pin=self.no_pin, stepped_up=self.stepped_up,
        )  # fmt: skip

    def books(self) -> Books:
        limits = TierLimits(balance_cap=None, single_payment=self.single, daily_outflow=self.daily)
        payer = Payer("alice", self.credential, PayerLimits(self.tier, limits, self.used_today))
        settings = None
        if self.locked_until is not None or self.budget is not None:
            settings = WalletSettings(SOURCE, budget=self.budget, locked_until=self.locked_until)
        sources = {SOURCE: SourceWallet(SOURCE, "alice", CNY, settings, self.month_spent)}
        targets = {w: TargetWallet(w, user, currency) for w, (user, currency) in WALLETS.items()}
        accounts = {w: make_account(w, currency=currency) for w, (_user, currency) in WALLETS.items()}
        accounts[SOURCE] = make_account(
            SOURCE, credits=self.balance, debits_pending=self.debits_pending, status=self.source_status
        )
        if self.target is not None and self.target != SOURCE:
            accounts[self.target] = make_account(
                self.target,
                currency=WALLETS[self.target][1],
                credits=self.target_credits,
                credits_pending=self.target_credits_pending,
                status=self.target_status,
                ceiling=self.target_ceiling,
            )
        return Books({"alice": payer}, sources, targets, accounts, dict(self.holders), self.known)

    def decide(self, policy: StepUpPolicy = QUIET, now: int = NOW) -> Decision:
        return decide(self.request(), self.books(), policy, now)


def run(policy: StepUpPolicy = QUIET, **knobs: Any) -> Decision:
    return Scenario(**knobs).decide(policy)


def approved(decision: Decision) -> Approve:
    assert isinstance(decision, Approve), decision
    return decision


def declined(decision: Decision, code: str, data: dict[str, Any] | None = None) -> Finding:
    assert isinstance(decision, Decline), decision
    assert decision.finding.code == code, decision.finding
    if data is not None:
        assert dict(decision.finding.data) == data
    return decision.finding


# -- the payer's limits ---------------------------------------------------------------------------


def test_exactly_the_single_limit_passes_one_fen_more_is_refused() -> None:
    approved(run(amount=SINGLE, daily=None))
    declined(run(amount=SINGLE + 1, daily=None), "limit_exceeded_single", {"tier": 3, "limit": SINGLE})


def test_no_single_limit_lets_any_amount_through() -> None:
    approved(run(amount=BALANCE, single=None, daily=None))


def test_exactly_the_remaining_daily_allowance_passes_one_fen_more_is_refused() -> None:
    used = DAILY - 300_000
    approved(run(amount=300_000, used_today=used))
    finding = declined(run(amount=300_001, used_today=used), "limit_exceeded_daily")
    assert dict(finding.data) == {"tier": 3, "limit": DAILY, "remaining": 300_000}


def test_daily_remaining_is_never_negative() -> None:
    declined(
        run(amount=1, used_today=DAILY + 5),
        "limit_exceeded_daily",
        {"tier": 3, "limit": DAILY, "remaining": 0},
    )
    approved(run(amount=AMOUNT, used_today=DAILY * 10, daily=None))


def test_single_limit_is_asked_before_the_daily_one() -> None:
    declined(run(amount=SINGLE + 1, used_today=DAILY), "limit_exceeded_single")


# -- the paying wallet's balance ------------------------------------------------------------------


def test_exactly_the_whole_available_balance_may_be_paid() -> None:
    approved(run(amount=BALANCE, single=None, daily=None))
    declined(run(amount=BALANCE + 1, single=None, daily=None), "insufficient_funds", {})


def test_holds_reduce_what_may_be_paid() -> None:
    held = 700_000
    available = BALANCE - held
    approved(run(amount=available, debits_pending=held))
    declined(run(amount=available + 1, debits_pending=held), "insufficient_funds")
    approved(run(amount=BALANCE, debits_pending=0, single=None, daily=None))
    declined(run(amount=1, balance=held, debits_pending=held), "insufficient_funds")


# -- the recipient's cap ----------------------------------------------------------------------------


def test_recipient_cap_over_all_their_wallets() -> None:
    holders = {"bob": HolderCap(tier=2, balance_cap=1_000_000, held=900_000)}
    approved(run(amount=100_000, holders=holders))
    finding = declined(run(amount=100_001, holders=holders), "balance_cap_exceeded")
    assert dict(finding.data) == {"tier": 2, "limit": 1_000_000, "room": 100_000}


def test_recipient_over_its_cap_already_has_no_room() -> None:
    holders = {"bob": HolderCap(tier=4, balance_cap=1_000, held=5_000)}
    declined(run(amount=1, holders=holders), "balance_cap_exceeded", {"tier": 4, "limit": 1_000, "room": 0})


def test_recipient_without_a_cap_takes_anything() -> None:
    approved(run(amount=BALANCE, single=None, daily=None, holders={"bob": HolderCap(1, None, 10**12)}))


def test_receiving_wallet_ceiling_counts_incoming_holds() -> None:
    knobs: dict[str, Any] = {
        "target_ceiling": 500_000,
        "target_credits": 300_000,
        "target_credits_pending": 50_000,
    }
    approved(run(amount=150_000, **knobs))
    declined(run(amount=150_001, **knobs), "balance_cap_exceeded", {"room": 150_000})


def test_the_cap_over_all_wallets_is_asked_before_the_wallet_ceiling() -> None:
    holders = {"bob": HolderCap(tier=3, balance_cap=100, held=100)}
    finding = declined(run(amount=AMOUNT, holders=holders, target_ceiling=0), "balance_cap_exceeded")
    assert finding.data["tier"] == 3


def test_own_move_ignores_the_users_cap_but_not_the_wallets_ceiling() -> None:
    holders = {"alice": HolderCap(tier=3, balance_cap=BALANCE, held=BALANCE)}
    approved(run(target=OWN, holders=holders))
    declined(run(target=OWN, target_ceiling=AMOUNT - 1), "balance_cap_exceeded", {"room": AMOUNT - 1})


# -- the paying wallet's own rules ------------------------------------------------------------------


def test_a_locked_wallet_pays_nothing_until_the_lock_ends() -> None:
    declined(run(locked_until=NOW + 1), "wallet_locked", {"locked_until": NOW + 1})
    approved(run(locked_until=NOW))  # locked_until <= now: no longer locked
    approved(run(locked_until=NOW - 1))


def test_a_locked_wallet_pays_not_even_its_owner() -> None:
    declined(run(target=OWN, locked_until=NOW + 1), "wallet_locked")


def test_blocking_budget() -> None:
    budget = Budget(50_000, "block")
    approved(run(amount=20_000, budget=budget, month_spent=30_000))
    declined(
        run(amount=20_001, budget=budget, month_spent=30_000),
        "budget_exceeded",
        {"budget": 50_000, "spent": 30_000},
    )


def test_warning_budget_only_warns() -> None:
    approved(run(amount=20_001, budget=Budget(50_000, "warn"), month_spent=30_000))
    approved(run(amount=AMOUNT, budget=Budget(1, "warn"), month_spent=10**9))


# -- who may pay and receive ------------------------------------------------------------------------


@pytest.mark.parametrize("credential", ["frozen", "closed"])
def test_a_frozen_or_closed_payer_pays_nothing(credential: str) -> None:
    declined(run(credential=credential), "account_frozen", {})
    declined(run(credential=credential, target=OWN), "account_frozen")


@pytest.mark.parametrize("status", [S.DEBIT_FROZEN, S.FROZEN, S.CLOSED])
def test_paying_account_must_be_open(status: AccountStatus) -> None:
    declined(run(source_status=status), "wallet_frozen", {})
    declined(run(source_status=status, target=OWN), "wallet_frozen")
    declined(run(source_status=status, kind=Kind.CODE_CONFIRM), "wallet_frozen")


@pytest.mark.parametrize("status", [S.FROZEN, S.CLOSED])
def test_receiving_account_frozen_or_closed(status: AccountStatus) -> None:
    declined(run(target_status=status), "wallet_frozen", {})
    declined(run(target_status=status, target=OWN), "wallet_frozen")
    for kind in (Kind.MERCHANT, Kind.CODE_HOLD, Kind.CODE_CONFIRM):
        declined(run(kind=kind, target=SHOP, target_status=status), "merchant_inactive", {})


def test_a_debit_frozen_account_still_receives() -> None:
    approved(run(target_status=S.DEBIT_FROZEN))
    approved(run(kind=Kind.MERCHANT, target=SHOP, target_status=S.DEBIT_FROZEN))


@pytest.mark.parametrize("status", ["suspended", "closed"])
def test_an_inactive_merchant_takes_no_payment(status: str) -> None:
    declined(
        run(kind=Kind.MERCHANT, target=SHOP, merchant_status=status),
        "merchant_inactive",
        {"merchant_status": status},
    )


def test_an_active_merchant_takes_payments() -> None:
    approved(run(kind=Kind.MERCHANT, target=SHOP, merchant_status="active"))
    approved(run(kind=Kind.MERCHANT, target=SHOP, merchant_status=None))


# -- the recipient named ----------------------------------------------------------------------------


def test_paying_into_the_paying_wallet() -> None:
    declined(run(named=SOURCE), "same_wallet", {})
    declined(run(target=SOURCE), "same_wallet", {})
    approved(run(named=BOB))


def test_the_amount_is_in_the_paying_wallets_currency() -> None:
    declined(run(currency="USD"), "currency_mismatch", {"held": CNY, "asked": "USD"})


def test_the_receiving_wallet_is_in_the_same_currency() -> None:
    declined(run(target=BOB_USD), "currency_mismatch", {"held": CNY, "target": "USD"})


@pytest.mark.parametrize("by", ["phone", "wallet_id", "receive_code", "payer_wallet_id"])
def test_recipient_not_found_keeps_how_it_was_named(by: str) -> None:
    decision = run(target=None, recipient_by=by)
    declined(decision, "recipient_not_found", {"by": by})
    assert isinstance(decision, Decline) and decision.own is False


# -- what each kind counts ----------------------------------------------------------------------------


def test_p2p_to_someone_else_counts_toward_limits_and_budget() -> None:
    decision = approved(run(amount=12_345))
    assert (decision.own, decision.spent) == (False, 12_345)


def test_own_move_counts_nothing_and_ignores_limits_and_budget() -> None:
    decision = approved(
        run(
            target=OWN,
            amount=SINGLE + 1,
            used_today=DAILY,
            budget=Budget(1, "block"),
            month_spent=1,
        )
    )
    assert (decision.own, decision.spent) == (True, 0)
    # ... but not the balance
    declined(run(target=OWN, amount=BALANCE + 1), "insufficient_funds")


def test_merchant_payment_counts_both() -> None:
    decision = approved(run(kind=Kind.MERCHANT, target=SHOP, amount=777))
    assert (decision.own, decision.spent) == (False, 777)


def test_a_merchant_payment_into_ones_own_wallet_is_not_an_own_move() -> None:
    decision = approved(run(kind=Kind.MERCHANT, target=OWN, amount=777))
    assert (decision.own, decision.spent) == (False, 777)
    declined(run(kind=Kind.MERCHANT, target=OWN, used_today=DAILY), "limit_exceeded_daily")


def test_code_hold_is_checked_against_limits_but_counts_nothing() -> None:
    declined(run(kind=Kind.CODE_HOLD, target=SHOP, amount=SINGLE + 1), "limit_exceeded_single")
    declined(run(kind=Kind.CODE_HOLD, target=SHOP, used_today=DAILY), "limit_exceeded_daily")
    declined(run(kind=Kind.CODE_HOLD, target=SHOP, budget=Budget(AMOUNT - 1, "block")), "budget_exceeded")
    declined(
        run(kind=Kind.CODE_HOLD, target=SHOP, amount=BALANCE + 1, single=None, daily=None),
        "insufficient_funds",
    )
    decision = approved(run(LOUD, kind=Kind.CODE_HOLD, target=SHOP, device_trusted=False))
    assert (decision.spent, decision.step_up) == (0, ())


def test_code_confirm_counts_both_and_posts_funds_already_held() -> None:
    # Everything is held: nothing is available, the confirmation still goes through.
    knobs: dict[str, Any] = {"kind": Kind.CODE_CONFIRM, "target": SHOP, "stepped_up": True}
    decision = approved(run(amount=AMOUNT, balance=AMOUNT, debits_pending=AMOUNT, **knobs))
    assert (decision.spent, decision.step_up) == (AMOUNT, ())
    # The held credit already counts toward the receiving wallet's ceiling.
    approved(run(target_ceiling=AMOUNT, target_credits_pending=AMOUNT, **knobs))
    # Limits and budget are asked again when the hold is counted.
    declined(run(used_today=DAILY, **knobs), "limit_exceeded_daily")
    declined(run(budget=Budget(AMOUNT - 1, "block"), **knobs), "budget_exceeded")


def test_code_confirm_always_asks_for_step_up_unless_stepped_up() -> None:
    decision = approved(run(kind=Kind.CODE_CONFIRM, target=SHOP, amount=1))
    assert decision.step_up == ("payment_code_confirmation",)
    assert approved(run(LOUD, kind=Kind.CODE_CONFIRM, target=SHOP, device_trusted=False)).step_up == (
        "payment_code_confirmation",
    )
    assert approved(run(LOUD, kind=Kind.CODE_CONFIRM, target=SHOP, stepped_up=True)).step_up == ()


# -- step-up ------------------------------------------------------------------------------------------


def test_step_up_amount_threshold() -> None:
    known = frozenset({("alice", "bob")})
    assert approved(run(POLICY, amount=100_000, known=known)).step_up == ("amount_threshold",)
    assert approved(run(POLICY, amount=99_999, known=known)).step_up == ()


def test_step_up_new_payee_only_for_p2p_to_someone_not_paid_before() -> None:
    assert approved(run(POLICY, amount=10_001)).step_up == ("new_payee",)
    assert approved(run(POLICY, amount=10_000)).step_up == ()  # at the threshold: not above it
    assert approved(run(POLICY, amount=10_001, known=frozenset({("alice", "bob")}))).step_up == ()
    # Another payer's history with bob does not count.
    assert approved(run(POLICY, amount=10_001, known=frozenset({("carol", "bob")}))).step_up == ("new_payee",)
    assert approved(run(POLICY, kind=Kind.MERCHANT, target=SHOP, amount=10_001)).step_up == ()


def test_step_up_untrusted_device() -> None:
    known = frozenset({("alice", "bob")})
    assert approved(run(POLICY, amount=1_001, device_trusted=False, known=known)).step_up == ("new_device",)
    assert approved(run(POLICY, amount=1_000, device_trusted=False, known=known)).step_up == ()
    merchant = run(POLICY, kind=Kind.MERCHANT, target=SHOP, amount=1_001, device_trusted=False)
    assert approved(merchant).step_up == ("new_device",)


def test_step_up_reasons_together() -> None:
    decision = approved(run(POLICY, amount=100_000, device_trusted=False))
    assert decision.step_up == ("amount_threshold", "new_payee", "new_device")


@pytest.mark.parametrize(
    "knobs",
    [
        {"stepped_up": True},
        {"no_pin": True},
        {"target": OWN},
        {"kind": Kind.MERCHANT, "target": SHOP, "stepped_up": True},
        {"kind": Kind.MERCHANT, "target": SHOP, "no_pin": True},
    ],
)
def test_no_step_up(knobs: dict[str, Any]) -> None:
    assert approved(run(LOUD, device_trusted=False, **knobs)).step_up == ()


def test_no_step_up_is_asked_for_a_payment_that_cannot_happen() -> None:
    declined(
        run(LOUD, amount=BALANCE + 1, single=None, daily=None, device_trusted=False), "insufficient_funds"
    )
    declined(run(LOUD, kind=Kind.CODE_CONFIRM, target=SHOP, used_today=DAILY), "limit_exceeded_daily")


# -- the order --------------------------------------------------------------------------------------

# One fault per rule, in the documented order; each is a set of knobs on the default scenario.
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("1 payer frozen", {"credential": "frozen"}),
    ("2 named the paying wallet", {"named": SOURCE}),
    ("3 amount in another currency", {"currency": "USD"}),
    ("4 recipient not found", {"target": None}),
    ("5 paying into the paying wallet", {"target": SOURCE}),
    ("5 wallets in different currencies", {"target": BOB_USD}),
    ("6 merchant suspended", {"merchant_status": "suspended"}),
    ("7 wallet locked", {"locked_until": NOW + 1}),
    ("8 budget exhausted", {"budget": Budget(AMOUNT, "block"), "month_spent": 1}),
    ("9 over the single limit", {"single": AMOUNT - 1}),
    ("9 over today's outflow", {"used_today": DAILY - AMOUNT + 1}),
    ("10 paying account frozen", {"source_status": S.FROZEN}),
    ("10 insufficient funds", {"balance": AMOUNT - 1}),
    ("11 receiving account frozen", {"target_status": S.FROZEN}),
    ("12 recipient over the cap", {"holders": {"bob": HolderCap(3, AMOUNT, 1)}}),
    ("12 receiving wallet over its ceiling", {"target_ceiling": AMOUNT - 1}),
]
ALONE = {name: Scenario(**knobs).decide() for name, knobs in FAULTS}


@pytest.mark.parametrize(("name", "knobs"), FAULTS, ids=[name for name, _ in FAULTS])
def test_each_fault_alone_declines(name: str, knobs: dict[str, Any]) -> None:
    assert isinstance(ALONE[name], Decline)
    assert isinstance(Scenario().decide(), Approve)  # the default scenario is a fine payment


PAIRS = [
    (first, second)
    for (first, second) in itertools.combinations(FAULTS, 2)
    if not set(first[1]) & set(second[1])  # both can be set at once
]


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a[0]} + {b[0]}" for a, b in PAIRS])
def test_the_first_rule_in_the_documented_order_wins(
    first: tuple[str, dict[str, Any]], second: tuple[str, dict[str, Any]]
) -> None:
    decision = Scenario(**first[1], **second[1]).decide()
    assert isinstance(decision, Decline)
    assert decision.finding == ALONE[first[0]].finding, f"{second[0]} answered before {first[0]}"


def test_the_order_tells_the_pairs_apart() -> None:
    """Pairs answer differently alone, so the test above sees which rule won; only these two pairs of
    rules share a finding (code and data), and the order between them is not observable."""
    alike = {(a[0], b[0]) for a, b in PAIRS if ALONE[a[0]].finding == ALONE[b[0]].finding}
    assert alike == {
        ("2 named the paying wallet", "5 paying into the paying wallet"),
        ("10 paying account frozen", "11 receiving account frozen"),
    }
    assert len(PAIRS) > 100


def test_locked_wallet_over_the_daily_limit_is_locked() -> None:
    declined(run(locked_until=NOW + 1, used_today=DAILY), "wallet_locked")


def test_over_the_daily_limit_without_the_money_is_over_the_daily_limit() -> None:
    declined(run(used_today=DAILY - 10, amount=11, balance=10), "limit_exceeded_daily")


def test_a_payer_without_the_money_learns_nothing_about_the_recipient() -> None:
    holders = {"bob": HolderCap(3, 100, 100)}
    decision = run(balance=AMOUNT - 1, holders=holders, target_ceiling=0, target_status=S.FROZEN)
    declined(decision, "insufficient_funds", {})


# -- declines.error_for ---------------------------------------------------------------------------------


def test_a_cap_refusal_of_someone_elses_wallet_reveals_nothing() -> None:
    finding = Finding("balance_cap_exceeded", {"tier": 2, "limit": 1_000_000, "room": 100_000})
    error = error_for(finding, CNY, reveal=False)
    assert isinstance(error, PaymentDeclined)
    assert error.code == "balance_cap_exceeded"
    assert error.extra == {"next_step": "lower_amount"}
    ceiling = error_for(Finding("balance_cap_exceeded", {"room": 5}), CNY, reveal=False)
    assert ceiling.extra == {"next_step": "lower_amount"}


def test_a_cap_refusal_of_ones_own_wallets_tells_the_limit_and_room() -> None:
    finding = Finding("balance_cap_exceeded", {"tier": 2, "limit": 1_000_000, "room": 100_000})
    error = error_for(finding, CNY, reveal=True)
    assert isinstance(error, LimitExceeded)
    assert error.code == "balance_cap_exceeded"
    assert error.extra["limit"] == {"amount": 1_000_000, "currency": CNY}
    assert error.extra["remaining"] == {"amount": 100_000, "currency": CNY}
    assert error.extra["kyc_tier"] == 2


def test_a_wallet_ceiling_refusal_of_ones_own_wallet_tells_the_room() -> None:
    error = error_for(Finding("balance_cap_exceeded", {"room": 5}), CNY, reveal=True)
    assert error.code == "balance_cap_exceeded"
    assert error.extra["remaining"] == {"amount": 5, "currency": CNY}
    assert "kyc_tier" not in error.extra and "limit" not in error.extra


def test_the_engines_cap_declines_map_to_the_errors_by_whose_wallet_refused() -> None:
    holders = {"bob": HolderCap(2, 1_000, 1_000), "alice": HolderCap(2, 1_000, 1_000)}
    other = run(holders=holders)
    assert isinstance(other, Decline) and other.own is False
    assert error_for(other.finding, CNY, reveal=other.own).extra == {"next_step": "lower_amount"}
    own = run(target=OWN, target_ceiling=10)
    assert isinstance(own, Decline) and own.own is True
    assert error_for(own.finding, CNY, reveal=own.own).extra["remaining"] == {"amount": 10, "currency": CNY}


@pytest.mark.parametrize(
    ("tier", "next_step"), [(1, "try_tomorrow"), (2, "verify_identity"), (4, "verify_identity")]
)
def test_daily_limit_error(tier: int, next_step: str) -> None:
    finding = declined(run(tier=tier, used_today=DAILY - 10, amount=11), "limit_exceeded_daily")
    error = error_for(finding, CNY)
    assert isinstance(error, LimitExceeded)
    assert error.code == "limit_exceeded_daily"
    assert error.extra == {
        "limit": {"amount": DAILY, "currency": CNY},
        "remaining": {"amount": 10, "currency": CNY},
        "kyc_tier": tier,
        "next_step": next_step,
    }


@pytest.mark.parametrize(("tier", "next_step"), [(1, "contact_support"), (3, "verify_identity")])
def test_single_limit_error(tier: int, next_step: str) -> None:
    finding = declined(run(tier=tier, amount=SINGLE + 1), "limit_exceeded_single")
    error = error_for(finding, CNY)
    assert error.code == "limit_exceeded_single"
    assert error.extra["limit"] == {"amount": SINGLE, "currency": CNY}
    assert error.extra["kyc_tier"] == tier
    assert error.extra["next_step"] == next_step


def test_other_findings_become_their_errors() -> None:
    assert isinstance(error_for(Finding("same_wallet"), CNY), SameWallet)
    assert isinstance(
        error_for(Finding("currency_mismatch", {"held": CNY, "asked": "USD"}), CNY), CurrencyMismatch
    )
    not_found = error_for(Finding("recipient_not_found", {"by": "phone"}), CNY)
    assert isinstance(not_found, RecipientNotFound)
    frozen = error_for(Finding("account_frozen"), CNY)
    assert isinstance(frozen, Locked) and frozen.code == "account_frozen"
    merchant = error_for(Finding("merchant_inactive", {"merchant_status": "suspended"}), CNY)
    assert merchant.code == "merchant_inactive" and merchant.extra == {"merchant_status": "suspended"}
    assert error_for(Finding("insufficient_funds"), CNY).code == "insufficient_funds"
    assert error_for(Finding("wallet_frozen"), CNY).code == "wallet_frozen"
    locked = error_for(Finding("wallet_locked", {"locked_until": NOW + 1}), CNY)
    assert locked.code == "wallet_locked"
    budget = error_for(Finding("budget_exceeded", {"budget": 50_000, "spent": 30_000}), CNY)
    assert budget.code == "budget_exceeded"


def test_the_request_is_kept_on_the_decision() -> None:
    scenario = Scenario(amount=3)
    assert approved(scenario.decide()).request == scenario.request()
    assert (
        replace(scenario, amount=BALANCE + 1, single=None, daily=None).decide().request.amount == BALANCE + 1
    )

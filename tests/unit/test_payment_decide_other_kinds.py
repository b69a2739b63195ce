"""`decide` for the money movements that are not payments: refunds, sandbox funding and a sub-wallet's
closing, over plain data (no database). Each rule on its own with its boundary, what each kind counts
(nothing toward limits or budgets, never a step-up), and batches in which requests see each other.

The merchant `shop` refunds from `w-shop` to alice's `w-alice`; alice funds and closes her sub-wallet
`w-alice-2` (its balance goes to her main wallet `w-alice`).
"""

from __future__ import annotations

import pytest

from qianbao.identity.limit_rules import HolderCap, PayerLimits
from qianbao.identity.model import TierLimits
from qianbao.ledger.model import Account, AccountStatus
from qianbao.payments.engine.decide import Approve, Decision, Decline, decide, decide_batch
from qianbao.payments.engine.facts import (
    Books,
    Kind,
    PaidPayment,
    Payer,
    PaymentRequest,
    SourceWallet,
    TargetWallet,
    books_after,
)
from qianbao.payments.fees import fee_refund
from qianbao.wallets.model import WalletSettings
from tests.unit.test_payment_decide import LOUD, NOW, make_account

CNY = "CNY"
S = AccountStatus
SHOP, MAIN, SUB, FUNDING = "w-shop", "w-alice", "w-alice-2", "sys:sandbox_funding:CNY"
PAID, FEE = 10_000, 38
LIMITS = TierLimits(single_payment=500_000, daily_outflow=1_000_000, balance_cap=2_000_000)


def _payer(user_id: str) -> Payer:
    return Payer(user_id, "active", PayerLimits(3, LIMITS))


def _books(
    *,
    shop: Account | None = None,
    main: Account | None = None,
    sub: Account | None = None,
    paid: PaidPayment | None = None,
    holder: HolderCap | None = None,
    sub_settings: WalletSettings | None = None,
) -> Books:
    accounts = {
        SHOP: shop or make_account(SHOP, credits=PAID - FEE),
        MAIN: main or make_account(MAIN, credits=50_000),
        SUB: sub or make_account(SUB, credits=20_000),
        FUNDING: make_account(FUNDING),
    }
    return Books(
        payers={"shop": _payer("shop"), "alice": _payer("alice")},
        sources={
            SHOP: SourceWallet(SHOP, "shop", CNY, None),
            SUB: SourceWallet(SUB, "alice", CNY, sub_settings),
        },
        targets={MAIN: TargetWallet(MAIN, "alice", CNY), SUB: TargetWallet(SUB, "alice", CNY)},
        accounts=accounts,
        holders={} if holder is None else {"alice": holder},
        paid={"pay-1": paid or PaidPayment("succeeded", PAID, 0, FEE, 0)},
    )


def refund(amount: int, *, pro_rata: bool = True) -> PaymentRequest:
    return PaymentRequest(
        kind=Kind.REFUND,
        payer_user_id="shop",
        source_wallet_id=SHOP,
        target_wallet_id=MAIN,
        amount=amount,
        currency=CNY,
        payment_id="pay-1",
        fee_pro_rata=pro_rata,
    )


def funding(amount: int, wallet: str = SUB) -> PaymentRequest:
    return PaymentRequest(Kind.FUNDING, "alice", FUNDING, wallet, amount, CNY)


def closing() -> PaymentRequest:
    return PaymentRequest(Kind.CLOSE, "alice", SUB, MAIN, 0, CNY)


def code(decision: Decision) -> str:
    return decision.finding.code if isinstance(decision, Decline) else "ok"


def approved(decision: Decision) -> Approve:
    assert isinstance(decision, Approve), decision
    return decision


# -- refunds ---------------------------------------------------------------------------------------


def test_a_refund_gives_the_fee_back_pro_rata_and_counts_nothing() -> None:
    decision = approved(decide(refund(5_000), _books(), LOUD, NOW))
    assert decision.fee_back == fee_refund(FEE, PAID, 0, 5_000) == 19
    assert decision.moved == 5_000 and decision.spent == 0 and decision.step_up == ()
    assert approved(decide(refund(5_000, pro_rata=False), _books(), LOUD, NOW)).fee_back == 0


def test_a_refund_never_exceeds_what_is_left_and_exactly_that_passes() -> None:
    books = _books(paid=PaidPayment("succeeded", PAID, 6_000, FEE, 23))
    assert code(decide(refund(4_000), books, LOUD, NOW)) == "ok"
    over = decide(refund(4_001), books, LOUD, NOW)
    assert isinstance(over, Decline) and over.finding.code == "refund_exceeds_payment"
    assert over.finding.data == {"remaining": 4_000}


@pytest.mark.parametrize("status", ["failed", "pending", "canceled"])
def test_only_a_succeeded_payment_is_refunded(status: str) -> None:
    books = _books(paid=PaidPayment(status, PAID, 0, FEE, 0))
    decision = decide(refund(1_000), books, LOUD, NOW)
    assert isinstance(decision, Decline) and decision.finding.code == "payment_not_refundable"
    assert decision.finding.data == {"payment_status": status}


def test_the_merchant_wallet_must_hold_the_refund_less_the_fee_share_coming_back() -> None:
    # A full refund gives back the whole fee first: the wallet needs the amount less the fee.
    exact = _books(shop=make_account(SHOP, credits=PAID - FEE))
    assert code(decide(refund(PAID), exact, LOUD, NOW)) == "ok"
    short = _books(shop=make_account(SHOP, credits=PAID - FEE - 1))
    assert code(decide(refund(PAID), short, LOUD, NOW)) == "insufficient_funds"


@pytest.mark.parametrize(
    ("books", "expected"),
    [
        (_books(shop=make_account(SHOP, credits=PAID, status=S.FROZEN)), "wallet_frozen"),
        (_books(main=make_account(MAIN, credits=1, status=S.FROZEN)), "wallet_frozen"),
        (_books(main=make_account(MAIN, credits=1, ceiling=2_000)), "balance_cap_exceeded"),
    ],
)
def test_a_refund_needs_both_wallets_to_take_part(books: Books, expected: str) -> None:
    assert code(decide(refund(5_000), books, LOUD, NOW)) == expected


def test_refunds_of_one_payment_in_a_batch_see_each_other_and_return_the_whole_fee() -> None:
    decisions = decide_batch([refund(3_000), refund(7_001), refund(7_000)], _books(), LOUD, NOW)
    assert [code(d) for d in decisions] == ["ok", "refund_exceeds_payment", "ok"]
    assert isinstance(decisions[1], Decline) and decisions[1].finding.data == {"remaining": 7_000}
    backs = [d.fee_back for d in decisions if isinstance(d, Approve)]
    assert sum(backs) == FEE  # partial refunds adding up to the payment return exactly the fee


# -- sandbox funding ---------------------------------------------------------------------------------


def test_funding_asks_no_step_up_and_counts_nothing() -> None:
    decision = approved(decide(funding(10_000), _books(), LOUD, NOW))
    assert decision.spent == 0 and decision.step_up == () and decision.own


def test_funding_stops_at_the_owners_cap_and_tells_them_the_room() -> None:
    books = _books(holder=HolderCap(3, 100_000, 90_000))
    assert code(decide(funding(10_000), books, LOUD, NOW)) == "ok"
    over = decide(funding(10_001), books, LOUD, NOW)
    assert isinstance(over, Decline) and over.own
    assert over.finding.data == {"tier": 3, "limit": 100_000, "room": 10_000}


def test_fundings_in_a_batch_share_the_owners_cap_across_wallets() -> None:
    books = _books(holder=HolderCap(3, 100_000, 70_000))
    decisions = decide_batch(
        [funding(20_000, SUB), funding(10_001, MAIN), funding(10_000, MAIN)], books, LOUD, NOW
    )
    assert [code(d) for d in decisions] == ["ok", "balance_cap_exceeded", "ok"]


@pytest.mark.parametrize(
    ("sub", "expected"),
    [
        (make_account(SUB, ceiling=5_000), "balance_cap_exceeded"),
        (make_account(SUB, status=S.FROZEN), "wallet_frozen"),
        (make_account(SUB, status=S.CLOSED), "wallet_frozen"),
    ],
)
def test_funding_needs_a_wallet_that_takes_it(sub: Account, expected: str) -> None:
    assert code(decide(funding(5_001), _books(sub=sub), LOUD, NOW)) == expected


# -- closing a sub-wallet --------------------------------------------------------------------------


def test_closing_moves_the_whole_balance_and_asks_nothing() -> None:
    decision = approved(decide(closing(), _books(), LOUD, NOW))
    assert decision.moved == 20_000 and decision.spent == 0 and decision.step_up == ()
    empty = approved(decide(closing(), _books(sub=make_account(SUB)), LOUD, NOW))
    assert empty.moved == 0


@pytest.mark.parametrize(
    ("books", "expected"),
    [
        (_books(sub_settings=WalletSettings(SUB, locked_until=NOW + 1)), "wallet_locked"),
        (_books(sub=make_account(SUB, credits=20_000, debits_pending=1)), "wallet_close_refused"),
        (_books(sub=make_account(SUB, credits=20_000, credits_pending=1)), "wallet_close_refused"),
        (_books(sub=make_account(SUB, credits=20_000, status=S.FROZEN)), "wallet_frozen"),
        (_books(main=make_account(MAIN, status=S.FROZEN)), "wallet_frozen"),
        (_books(main=make_account(MAIN, status=S.CLOSED)), "wallet_frozen"),
    ],
)
def test_a_wallet_is_closed_only_unlocked_without_holds_and_with_both_wallets_open(
    books: Books, expected: str
) -> None:
    assert code(decide(closing(), books, LOUD, NOW)) == expected


def test_a_lock_that_has_ended_does_not_stop_closing() -> None:
    books = _books(sub_settings=WalletSettings(SUB, locked_until=NOW))
    assert code(decide(closing(), books, LOUD, NOW)) == "ok"


def test_in_a_batch_a_closing_takes_what_is_left_and_nothing_moves_after_it() -> None:
    spend = PaymentRequest(Kind.P2P, "alice", SUB, MAIN, 5_000, CNY)  # an own move first
    fund_after = funding(1_000)
    decisions = decide_batch([spend, closing(), fund_after, closing()], _books(), LOUD, NOW)
    assert [code(d) for d in decisions] == ["ok", "ok", "wallet_frozen", "wallet_frozen"]
    assert approved(decisions[1]).moved == 15_000


def test_a_refund_moves_the_books_it_leaves_for_the_next_request() -> None:
    books = _books()
    decision = approved(decide(refund(2_000), books, LOUD, NOW))
    after = books_after(books, decision.request, own=False, amount=decision.moved, fee_back=decision.fee_back)
    assert after.paid["pay-1"] == PaidPayment("succeeded", PAID, 2_000, FEE, decision.fee_back)
    assert after.accounts[SHOP].balance == PAID - FEE - 2_000 + decision.fee_back
    assert after.accounts[MAIN].balance == 50_000 + 2_000
    assert books.paid["pay-1"].refunded == 0 and books.accounts[SHOP].balance == PAID - FEE  # not in place

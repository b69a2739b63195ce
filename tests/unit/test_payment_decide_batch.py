"""Property tests of `decide_batch`: a batch decides as one-by-one decisions would, and keeps the books whole.

Random worlds of three users (two wallets each, random balances, holds, ceilings, budgets, locks, KYC
limits and balance caps) and a merchant; random batches of P2P (to someone else, to one's own other
wallet, now and then to the paying wallet itself) and merchant payments, all already stepped up. Each
amount is drawn knowing the state the request will meet, so that exact boundaries (the remaining daily
allowance, the available balance, the recipient's room…) and one fen more come up often.

The reference state of request i is derived here from the original books and the sums of the requests
approved before it, not with `facts.books_after`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from qianbao.identity.limit_rules import HolderCap, PayerLimits
from qianbao.identity.model import StepUpPolicy, TierLimits
from qianbao.ledger.model import Account, AccountStatus, NormalBalance
from qianbao.ledger.rules import room_under_ceiling
from qianbao.payments.engine.decide import Approve, Decision, decide, decide_batch
from qianbao.payments.engine.facts import (
    Books,
    Kind,
    Payer,
    PaymentRequest,
    SourceWallet,
    TargetWallet,
    books_after,
)
from qianbao.wallets.settings import Budget, WalletSettings

NOW = 1_767_225_600_000_000
CNY = "CNY"
USERS = ("u0", "u1", "u2")
WALLETS = {f"{user}-{n}": user for user in USERS for n in ("a", "b")}
MERCHANT_WALLET = "shop-w"
POLICY = StepUpPolicy(amount_threshold=1, new_payee_threshold=0, small_payment_threshold=0)
PROPERTY = settings(max_examples=200, deadline=None)

money = st.integers(min_value=0, max_value=10_000)
limit = st.one_of(st.none(), st.integers(min_value=1, max_value=12_000))


def make_account(
    id: str, credits: int, debits: int, debits_pending: int, ceiling: int | None, status: AccountStatus
) -> Account:
    return Account(
        id, CNY, "wallet", None, NormalBalance.CREDIT, True, False, ceiling, status,
        debits, credits, debits_pending, 0, None, 0,
    )  # fmt: skip


@st.composite
def accounts(draw: st.DrawFn, id: str) -> Account:
    debits = draw(money)
    credits = debits + draw(money)
    debits_pending = draw(st.integers(min_value=0, max_value=credits - debits) | st.just(0))
    net = credits - debits
    ceiling = draw(st.one_of(st.none(), st.integers(min_value=net, max_value=net + 6_000)))
    status = draw(st.sampled_from([AccountStatus.OPEN] * 40 + list(AccountStatus)))
    return make_account(id, credits, debits, debits_pending, ceiling, status)


@st.composite
def payers(draw: st.DrawFn, user: str) -> Payer:
    daily = draw(limit)
    used = 0 if daily is None else draw(st.integers(min_value=0, max_value=daily) | st.just(0))
    tier_limits = TierLimits(balance_cap=None, single_payment=draw(limit), daily_outflow=daily)
    credential = draw(st.sampled_from(["active"] * 30 + ["frozen"]))
    return Payer(user, credential, PayerLimits(draw(st.integers(1, 4)), tier_limits, used))


@st.composite
def wallet_settings(draw: st.DrawFn, wallet_id: str) -> WalletSettings | None:
    if draw(st.booleans()):
        return None
    budget = draw(st.one_of(st.none(), st.builds(Budget, money, st.sampled_from(["warn", "block"]))))
    locked_until = draw(st.sampled_from([None] * 6 + [NOW - 1, NOW, NOW + 1]))
    return WalletSettings(wallet_id, budget=budget, locked_until=locked_until)


@st.composite
def holder_caps(draw: st.DrawFn) -> HolderCap:
    cap = draw(limit)
    held = 0 if cap is None else draw(st.integers(min_value=0, max_value=cap))
    return HolderCap(draw(st.integers(1, 4)), cap, held)


@st.composite
def worlds(draw: st.DrawFn) -> Books:
    sources = {}
    for wallet_id, user in WALLETS.items():
        month_spent = draw(money)
        sources[wallet_id] = SourceWallet(wallet_id, user, CNY, draw(wallet_settings(wallet_id)), month_spent)
    targets = {w: TargetWallet(w, user, CNY) for w, user in WALLETS.items()}
    targets[MERCHANT_WALLET] = TargetWallet(MERCHANT_WALLET, "shop", CNY)
    all_accounts = {w: draw(accounts(w)) for w in targets}
    holders = {user: draw(holder_caps()) for user in USERS if draw(st.booleans())}
    return Books(
        payers={user: draw(payers(user)) for user in USERS},
        sources=sources,
        targets=targets,
        accounts=all_accounts,
        holders=holders,
    )


# -- the reference: the state request i meets, from the original books ----------------------------------


def is_own(request: PaymentRequest, books: Books) -> bool:
    assert request.target_wallet_id is not None
    return (
        request.kind is Kind.P2P and books.targets[request.target_wallet_id].user_id == request.payer_user_id
    )


def derived(original: Books, approved: Sequence[PaymentRequest]) -> Books:
    """The original books plus the sums of the approved requests (P2P and merchant payments)."""
    outflow = dict.fromkeys(original.payers, 0)
    spent = dict.fromkeys(original.sources, 0)
    debited = dict.fromkeys(original.accounts, 0)
    credited = dict.fromkeys(original.accounts, 0)
    received = dict.fromkeys(original.holders, 0)
    known = set(original.known_payees)
    for request in approved:
        assert request.target_wallet_id is not None
        own = is_own(request, original)
        payee = original.targets[request.target_wallet_id].user_id
        if not own:
            outflow[request.payer_user_id] += request.amount
            spent[request.source_wallet_id] += request.amount
            if request.kind is Kind.P2P:
                known.add((request.payer_user_id, payee))
        # What each user's wallets hold together: the payee's rises, the payer's falls (own: both).
        if payee in received:
            received[payee] += request.amount
        if request.payer_user_id in received:
            received[request.payer_user_id] -= request.amount
        debited[request.source_wallet_id] += request.amount
        credited[request.target_wallet_id] += request.amount
    payers = {
        user: replace(
            p, limits=PayerLimits(p.limits.tier, p.limits.limits, p.limits.used_today + outflow[user])
        )
        for user, p in original.payers.items()
    }
    sources = {w: replace(s, month_spent=s.month_spent + spent[w]) for w, s in original.sources.items()}
    accounts = {}
    for account_id, account in original.accounts.items():
        moved = account.copy()
        moved.debits_posted += debited[account_id]
        moved.credits_posted += credited[account_id]
        accounts[account_id] = moved
    holders = {
        user: HolderCap(h.tier, h.balance_cap, h.held + received[user])
        for user, h in original.holders.items()
    }
    return Books(payers, sources, original.targets, accounts, holders, frozenset(known))


@dataclass(frozen=True)
class Batch:
    books: Books
    requests: list[PaymentRequest]
    reference: list[Decision]  # each request decided alone over its derived state


def _boundaries(request: PaymentRequest, books: Books) -> list[int]:
    """Amounts at which some rule of this request, over this state, flips (and one fen either side)."""
    points: list[int] = []
    payer = books.payers[request.payer_user_id].limits
    points += [v for v in (payer.limits.single_payment, payer.remaining_today) if v is not None]
    points.append(books.accounts[request.source_wallet_id].available)
    source = books.sources[request.source_wallet_id]
    if source.settings is not None and source.settings.budget is not None:
        points.append(source.settings.budget.amount - source.month_spent)
    assert request.target_wallet_id is not None
    room = room_under_ceiling(books.accounts[request.target_wallet_id])
    if room is not None:
        points.append(room)
    holder = books.holders.get(books.targets[request.target_wallet_id].user_id)
    if holder is not None and holder.room is not None:
        points.append(holder.room)
    return [p + d for p in points for d in (-1, 0, 1) if p + d > 0]


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    books = draw(worlds())
    requests: list[PaymentRequest] = []
    reference: list[Decision] = []
    approved: list[PaymentRequest] = []
    for _ in range(draw(st.integers(min_value=2, max_value=12))):
        source = draw(st.sampled_from(sorted(WALLETS)))
        payer = WALLETS[source]
        kind = draw(st.sampled_from([Kind.P2P, Kind.P2P, Kind.MERCHANT]))
        if kind is Kind.MERCHANT:
            target = MERCHANT_WALLET
            status = draw(st.sampled_from([None] * 5 + ["active"] * 5 + ["suspended"]))
        else:
            others = [w for w in sorted(WALLETS) if w != source]
            target = draw(st.sampled_from(others * 10 + [source]))  # now and then the paying wallet
            status = None
        state = derived(books, approved)
        template = PaymentRequest(
            kind, payer, source, target, 1, CNY, merchant_status=status, stepped_up=True
        )
        boundaries = _boundaries(template, state)
        amount = draw(
            st.one_of(
                st.integers(min_value=1, max_value=300),
                st.integers(min_value=1, max_value=3_000),
                st.sampled_from(boundaries),
            )
            if boundaries
            else st.integers(min_value=1, max_value=300)
        )
        request = replace(template, amount=amount)
        decision = decide(request, state, POLICY, NOW)
        requests.append(request)
        reference.append(decision)
        if isinstance(decision, Approve):
            assert decision.step_up == ()  # stepped up: the batch writes every approval
            approved.append(request)
    return Batch(books, requests, reference)


def snapshot(books: Books) -> dict[str, tuple[int, int, int, int]]:
    return {
        i: (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
        for i, a in books.accounts.items()
    }


# -- properties ---------------------------------------------------------------------------------------


@PROPERTY
@given(batches())
def test_a_batch_decides_as_one_by_one_decisions_over_the_running_totals(batch: Batch) -> None:
    before = snapshot(batch.books)
    decisions = decide_batch(batch.requests, batch.books, POLICY, NOW)
    assert decisions == batch.reference
    assert snapshot(batch.books) == before  # the books handed in are not touched
    for decision in decisions:
        if isinstance(decision, Approve):
            counted = 0 if decision.own else decision.request.amount
            assert decision.spent == counted
            assert decision.own == is_own(decision.request, batch.books)


@PROPERTY
@given(batches())
def test_approvals_keep_the_books_whole(batch: Batch) -> None:
    def total(books: Books) -> int:
        return sum(a.credits_posted - a.debits_posted for a in books.accounts.values())

    books = batch.books
    approved = []
    for decision in decide_batch(batch.requests, batch.books, POLICY, NOW):
        if not isinstance(decision, Approve):
            continue
        books = books_after(books, decision.request, own=decision.own)
        approved.append(decision.request)
        assert total(books) == total(batch.books)  # money is moved, never made
        for account in books.accounts.values():
            assert account.available >= 0
            ceiling = account.balance_ceiling
            assert ceiling is None or account.balance + account.credits_pending <= ceiling
        for payer in books.payers.values():
            daily = payer.limits.limits.daily_outflow
            assert daily is None or payer.limits.used_today <= daily
        for holder in books.holders.values():
            assert holder.balance_cap is None or holder.held <= holder.balance_cap
    # `books_after` carries the running totals the reference derives from the sums.
    expected = derived(batch.books, approved)
    assert books.payers == expected.payers
    assert books.sources == expected.sources
    assert books.accounts == expected.accounts
    assert books.holders == expected.holders
    assert books.known_payees == expected.known_payees

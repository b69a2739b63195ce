"""Property tests of `decide_batch` over batches mixing refunds, sandbox funding and sub-wallet closings
with P2P and merchant payments: a batch decides as one-by-one decisions would, and keeps the books whole.

Random worlds like `test_payment_decide_batch`'s (three users, each with a main wallet `-a` and a
sub-wallet `-b`, random balances, holds out and in, ceilings, budgets, locks, KYC limits; a merchant
wallet), plus balance caps for most users and the merchant's owner, the fee account, the sandbox funding
account, and three paid payments: two succeeded (not refunded yet, partly or fully) and one that did
not. Random batches of refunds (several of one payment, pro rata or not), fundings (the two wallets of
one user against one cap), closings, P2P payments (already stepped up; out of a sub-wallet before its
closing, to or from a wallet closed earlier) and merchant payments. Each amount is drawn knowing the
state the request will meet, so that exact boundaries (what is left of a payment, the merchant wallet's
balance with the fee share coming back, the owner's cap room, a wallet's ceiling…) and one fen more come
up often.

The reference state of request i is derived here from the original books and the sums of the movements
approved before it, not with `facts.books_after`; the rules of the three kinds are also restated here,
independently of `decide` and `payments.fees`, over that state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from math import floor
from typing import Any, TypeVar

from hypothesis import example, given, settings
from hypothesis import strategies as st

from qianbao.identity.limit_rules import HolderCap, PayerLimits
from qianbao.identity.model import TierLimits
from qianbao.ledger.model import Account, AccountStatus, NormalBalance
from qianbao.ledger.rules import room_under_ceiling
from qianbao.ledger.system_accounts import FEES, SANDBOX_FUNDING, system_account_id
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
from qianbao.wallets.model import Budget, WalletSettings
from tests.unit.test_payment_decide_batch import (
    CNY,
    MERCHANT_WALLET,
    NOW,
    POLICY,
    USERS,
    WALLETS,
    make_account,
)

SHOP = "shop"  # the merchant's owner: MERCHANT_WALLET's user
FEE_ACCOUNT = system_account_id(FEES, CNY)
FUNDING_ACCOUNT = system_account_id(SANDBOX_FUNDING, CNY)
SYSTEM = (FEE_ACCOUNT, FUNDING_ACCOUNT)
SUCCEEDED = ("pay-1", "pay-2")
NOT_SUCCEEDED = "pay-3"
PAYMENTS = (*SUCCEEDED, NOT_SUCCEEDED)
PROPERTY = settings(max_examples=200, deadline=None)
KINDS = [Kind.P2P] * 3 + [Kind.MERCHANT] + [Kind.REFUND] * 3 + [Kind.FUNDING] * 2 + [Kind.CLOSE] * 2
FOCUS = [Kind.P2P, Kind.REFUND, Kind.FUNDING, Kind.CLOSE]  # what a batch has more of


def main_of(user: str) -> str:
    return f"{user}-a"


def sub_of(user: str) -> str:
    return f"{user}-b"


def half_up(fraction: Fraction) -> int:
    return floor(fraction + Fraction(1, 2))


# -- drawing -----------------------------------------------------------------------------------------
# One module-level strategy, mapped onto each range or list: cheaper than a new strategy per draw (the
# file has to run in a few seconds), and it still shrinks (towards the low end, the first option).

NUMBER = st.integers(min_value=0, max_value=2**24)
T = TypeVar("T")


def between(draw: st.DrawFn, low: int, high: int) -> int:
    return low + draw(NUMBER) % (high - low + 1)


def pick(draw: st.DrawFn, options: Sequence[T]) -> T:
    return options[draw(NUMBER) % len(options)]


def one_in(draw: st.DrawFn, n: int) -> bool:
    return draw(NUMBER) % n == n - 1


def limit(draw: st.DrawFn) -> int | None:
    return None if one_in(draw, 2) else between(draw, 1, 12_000)


# -- worlds -----------------------------------------------------------------------------------------

STATUSES = [AccountStatus.OPEN] * 20 + list(AccountStatus)
SUB_STATUSES = [AccountStatus.OPEN] * 12 + list(AccountStatus) + [AccountStatus.DEBIT_FROZEN] * 2  # closable?


def wallet_account(draw: st.DrawFn, id: str) -> Account:
    """A wallet's ledger account (it may not go below zero): holds out now and then (a sub-wallet's
    less often, so that its closing may go through, and the merchant wallet's, so that refunds may),
    money on its way in now and then, a ceiling or none."""
    debits = between(draw, 0, 10_000)
    credits = debits + between(draw, 0, 10_000)
    net = credits - debits
    quiet = id.endswith("-b") or id == MERCHANT_WALLET
    debits_pending = between(draw, 0, net) if one_in(draw, 5 if quiet else 2) else 0
    # A main wallet's room is larger (often enough to take a sub-wallet's balance when it is closed).
    ceiling = None if one_in(draw, 2) else net + between(draw, 0, 15_000 if id.endswith("-a") else 6_000)
    status = pick(draw, SUB_STATUSES if id.endswith("-b") else STATUSES)
    account = make_account(id, credits, debits, debits_pending, ceiling, status)
    if one_in(draw, 8 if quiet else 5):
        room = room_under_ceiling(account)
        account.credits_pending = between(draw, 0, 3_000 if room is None else room)
    return account


def system_account(id: str, normal: NormalBalance, credits: int, debits: int) -> Account:
    """An operator account: no overdraft flag, so the funding account may go below zero."""
    return Account(
        id, CNY, "system", None, normal, False, False, None, AccountStatus.OPEN,
        debits, credits, 0, 0, None, 0,
    )  # fmt: skip


def source_wallet(draw: st.DrawFn, wallet_id: str) -> SourceWallet:
    settings_ = None
    if one_in(draw, 2):
        budget = None if one_in(draw, 2) else Budget(between(draw, 0, 10_000), pick(draw, ["warn", "block"]))
        locked_until = pick(draw, [None] * 4 + [NOW - 1, NOW, NOW + 1, NOW + 1])
        settings_ = WalletSettings(wallet_id, budget=budget, locked_until=locked_until)
    return SourceWallet(wallet_id, WALLETS[wallet_id], CNY, settings_, between(draw, 0, 10_000))


def payer(draw: st.DrawFn, user: str) -> Payer:
    daily = limit(draw)
    used = 0 if daily is None or one_in(draw, 2) else between(draw, 0, daily)
    tier_limits = TierLimits(balance_cap=None, single_payment=limit(draw), daily_outflow=daily)
    credential = "frozen" if one_in(draw, 30) else "active"
    return Payer(user, credential, PayerLimits(between(draw, 1, 4), tier_limits, used))


def holder_cap(draw: st.DrawFn) -> HolderCap:
    cap = None if one_in(draw, 3) else between(draw, 1, 15_000)
    held = 0 if cap is None else pick(draw, [cap, *[between(draw, 0, cap)] * 3])
    return HolderCap(between(draw, 1, 4), cap, held)


def paid_payment(draw: st.DrawFn, status: str) -> PaidPayment:
    """A paid payment, partly refunded maybe, the fee shares given back so far pro rata (as refunds do)."""
    amount = between(draw, 1, 6_000)
    refunded = pick(draw, [0, 0, amount, between(draw, 0, amount)])
    fee = between(draw, 0, pick(draw, [min(amount, 99), amount]))
    return PaidPayment(status, amount, refunded, fee, half_up(Fraction(fee * refunded, amount)))


@st.composite
def worlds(draw: st.DrawFn) -> Books:
    targets = {w: TargetWallet(w, user, CNY) for w, user in WALLETS.items()}
    targets[MERCHANT_WALLET] = TargetWallet(MERCHANT_WALLET, SHOP, CNY)
    accounts = {w: wallet_account(draw, w) for w in targets}
    accounts[FEE_ACCOUNT] = system_account(FEE_ACCOUNT, NormalBalance.CREDIT, between(draw, 0, 10_000), 0)
    accounts[FUNDING_ACCOUNT] = system_account(
        FUNDING_ACCOUNT, NormalBalance.DEBIT, 0, between(draw, 0, 10_000)
    )
    paid = {pid: paid_payment(draw, "succeeded") for pid in SUCCEEDED}
    paid[NOT_SUCCEEDED] = paid_payment(draw, pick(draw, ["failed", "pending", "canceled"]))
    return Books(
        payers={user: payer(draw, user) for user in USERS},
        sources={w: source_wallet(draw, w) for w in WALLETS},
        targets=targets,
        accounts=accounts,
        holders={user: holder_cap(draw) for user in (*USERS, SHOP) if not one_in(draw, 4)},
        paid=paid,
    )


# -- the reference: the state request i meets, from the original books ----------------------------------


def is_own(request: PaymentRequest, books: Books) -> bool:
    """Between one's own wallets: a P2P payment to oneself, a funding or a closing (of one's own)."""
    assert request.target_wallet_id is not None
    if request.kind in (Kind.FUNDING, Kind.CLOSE):
        return True
    return (
        request.kind is Kind.P2P and books.targets[request.target_wallet_id].user_id == request.payer_user_id
    )


def movements(decision: Approve) -> list[tuple[str, str, int]]:
    """What an approval moves, as (debited, credited, amount): a refund's fee share comes back to the
    merchant wallet from the fee account."""
    request = decision.request
    assert request.target_wallet_id is not None
    moved = [(request.source_wallet_id, request.target_wallet_id, decision.moved)]
    if request.kind is Kind.REFUND:
        moved.insert(0, (FEE_ACCOUNT, request.source_wallet_id, decision.fee_back))
    return moved


def derived(original: Books, approved: Sequence[Approve]) -> Books:
    """The original books plus the sums of the approved movements."""
    owner = {wallet_id: target.user_id for wallet_id, target in original.targets.items()}
    outflow: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    debited: Counter[str] = Counter()
    credited: Counter[str] = Counter()
    held: Counter[str] = Counter()  # what each user's wallets hold together, the change
    refunded: Counter[str] = Counter()
    fee_refunded: Counter[str] = Counter()
    known = set(original.known_payees)
    closed: set[str] = set()
    for decision in approved:
        request = decision.request
        assert request.target_wallet_id is not None
        if request.kind in (Kind.P2P, Kind.MERCHANT) and not is_own(request, original):
            outflow[request.payer_user_id] += request.amount
            spent[request.source_wallet_id] += request.amount
            if request.kind is Kind.P2P:
                known.add((request.payer_user_id, owner[request.target_wallet_id]))
        for debit, credit, amount in movements(decision):
            debited[debit] += amount
            credited[credit] += amount
            if debit in owner:
                held[owner[debit]] -= amount
            if credit in owner:
                held[owner[credit]] += amount
        if request.kind is Kind.REFUND:
            assert request.payment_id is not None
            refunded[request.payment_id] += decision.moved
            fee_refunded[request.payment_id] += decision.fee_back
        if request.kind is Kind.CLOSE:
            closed.add(request.source_wallet_id)
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
        if account_id in closed:
            moved.status = AccountStatus.CLOSED
        accounts[account_id] = moved
    holders = {
        user: HolderCap(h.tier, h.balance_cap, h.held + held[user]) for user, h in original.holders.items()
    }
    paid = {
        pid: replace(p, refunded=p.refunded + refunded[pid], fee_refunded=p.fee_refunded + fee_refunded[pid])
        for pid, p in original.paid.items()
    }
    return Books(payers, sources, original.targets, accounts, holders, frozenset(known), paid)


# -- the rules of the three kinds, restated --------------------------------------------------------------

Expected = tuple[str, Mapping[str, Any], int, int]  # finding code ("ok"), its data, moved, fee back


def _room(account: Account) -> int | None:
    if account.balance_ceiling is None:
        return None
    return max(
        0, account.balance_ceiling - account.credits_posted - account.credits_pending + account.debits_posted
    )


def _takes(account: Account, amount: int) -> Expected | None:
    """A wallet money arrives in: not frozen or closed (debit-frozen takes money), with room."""
    if account.status in (AccountStatus.FROZEN, AccountStatus.CLOSED):
        return ("wallet_frozen", {}, 0, 0)
    room = _room(account)
    if room is not None and amount > room:
        return ("balance_cap_exceeded", {"room": room}, 0, 0)
    return None


def expected(request: PaymentRequest, books: Books) -> Expected:
    """What a refund, a funding or a closing comes to over `books`, from their rules alone."""
    assert request.target_wallet_id is not None
    target = books.accounts[request.target_wallet_id]
    amount = request.amount
    if request.kind is Kind.REFUND:
        assert request.payment_id is not None
        paid = books.paid[request.payment_id]
        if paid.status != "succeeded":
            return ("payment_not_refundable", {"payment_status": paid.status}, 0, 0)
        remaining = paid.amount - paid.refunded
        if amount > remaining:
            return ("refund_exceeds_payment", {"remaining": remaining}, 0, 0)
        fee_back = 0
        if request.fee_pro_rata:  # what the refunds so far give back in all, less what they gave
            fee_back = half_up(Fraction(paid.fee * (paid.refunded + amount), paid.amount)) - half_up(
                Fraction(paid.fee * paid.refunded, paid.amount)
            )
        shop = books.accounts[request.source_wallet_id]
        if shop.status is not AccountStatus.OPEN:
            return ("wallet_frozen", {}, 0, 0)
        # The fee share arrives first: the wallet pays the refund less it, holds counted.
        if shop.debits_posted + shop.debits_pending + amount - fee_back > shop.credits_posted:
            return ("insufficient_funds", {}, 0, 0)
        return _takes(target, amount) or ("ok", {}, amount, fee_back)
    if request.kind is Kind.FUNDING:
        holder = books.holders.get(request.payer_user_id)
        if holder is not None and holder.balance_cap is not None:
            room = max(0, holder.balance_cap - holder.held)
            if amount > room:
                data = {"tier": holder.tier, "limit": holder.balance_cap, "room": room}
                return ("balance_cap_exceeded", data, 0, 0)
        return _takes(target, amount) or ("ok", {}, amount, 0)
    assert request.kind is Kind.CLOSE
    settings_ = books.sources[request.source_wallet_id].settings
    if settings_ is not None and settings_.locked_until is not None and settings_.locked_until > NOW:
        return ("wallet_locked", {"locked_until": settings_.locked_until}, 0, 0)
    closing = books.accounts[request.source_wallet_id]
    if closing.debits_pending or closing.credits_pending:
        return ("wallet_close_refused", {"reason": "pending_holds"}, 0, 0)
    if closing.status is not AccountStatus.OPEN or target.status in (
        AccountStatus.FROZEN,
        AccountStatus.CLOSED,
    ):
        return ("wallet_frozen", {}, 0, 0)
    balance = closing.credits_posted - closing.debits_posted
    main_room = _room(target)  # the main wallet takes all of it under its own ceiling
    if main_room is not None and balance > main_room:
        return ("wallet_close_refused", {"reason": "exceeds_ceiling", "room": main_room}, 0, 0)
    return ("ok", {}, balance, 0)


def outcome(decision: Decision) -> Expected:
    if isinstance(decision, Decline):
        return (decision.finding.code, decision.finding.data, 0, 0)
    return ("ok", {}, decision.moved, decision.fee_back)


# -- batches ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    books: Books
    requests: list[PaymentRequest]
    states: list[Books]  # the derived state each request met
    reference: list[Decision]  # each request decided alone over its derived state


def _near(points: Iterable[int | None]) -> list[int]:
    """Each point and one fen either side (a point given twice comes up twice as often)."""
    return [p + d for p in points if p is not None for d in (-1, 0, 1) if p + d > 0]


def _amount(draw: st.DrawFn, points: Iterable[int | None]) -> int:
    near = _near(points)
    how = between(draw, 0, 4 if near else 1)
    return between(draw, 1, (300, 3_000)[how]) if how < 2 else pick(draw, near)


def _payment_points(request: PaymentRequest, books: Books) -> list[int | None]:
    """Where a P2P or merchant payment's rules flip over this state."""
    assert request.target_wallet_id is not None
    payer = books.payers[request.payer_user_id].limits
    source = books.sources[request.source_wallet_id]
    budget = None if source.settings is None else source.settings.budget
    holder = books.holders.get(books.targets[request.target_wallet_id].user_id)
    return [
        payer.limits.single_payment,
        payer.remaining_today,
        books.accounts[request.source_wallet_id].available,
        None if budget is None else budget.amount - source.month_spent,
        room_under_ceiling(books.accounts[request.target_wallet_id]),
        None if holder is None else holder.room,
    ]


def _refund_points(request: PaymentRequest, books: Books) -> list[int | None]:
    """What is left of the payment (and parts of it, so that partials add up to it), where the merchant
    wallet's balance with the fee share coming back runs out, the receiving wallet's room."""
    assert request.payment_id is not None and request.target_wallet_id is not None
    paid = books.paid[request.payment_id]
    remaining = paid.amount - paid.refunded
    points: list[int | None] = [remaining, remaining, remaining // 2, remaining // 3, 2 * remaining // 3]
    available = books.accounts[request.source_wallet_id].available
    points.append(available)
    for amount in range(max(1, available), min(remaining, available + paid.fee + 1) + 1):
        back = fee_refund(paid.fee, paid.amount, paid.refunded, amount) if request.fee_pro_rata else 0
        if amount - back > available:  # the first amount the wallet cannot pay
            points.append(amount)
            break
    points.append(room_under_ceiling(books.accounts[request.target_wallet_id]))
    return points


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    books = draw(worlds())
    wallets = sorted(WALLETS)
    customers = {pid: pick(draw, wallets) for pid in PAYMENTS}  # the wallets that paid
    pro_rata_mode = pick(draw, ["all", "all", "none", "mixed"])  # the operator's setting
    kinds = KINDS + [pick(draw, FOCUS)] * 6
    requests: list[PaymentRequest] = []
    states: list[Books] = []
    reference: list[Decision] = []
    approved: list[Approve] = []
    for _ in range(between(draw, 2, 14)):
        state = derived(books, approved)
        # Wallets closed or paid from earlier come up again, often.
        closed = [a.request.source_wallet_id for a in approved if a.request.kind is Kind.CLOSE]
        used = [r.source_wallet_id for r in requests if r.source_wallet_id in WALLETS]
        hot = closed * 4 + used
        mains = [main_of(WALLETS[w]) for w in closed] * 4  # what a closing moved there moves on
        # Sub-wallets paid from: closed after, they move what is left.
        paid_from = [a.request.source_wallet_id for a in approved if a.request.kind is Kind.P2P]
        paid_from = [w for w in paid_from if w.endswith("-b")]
        kind = pick(draw, kinds)
        if kind is Kind.REFUND:
            pid = pick(draw, [*SUCCEEDED, *SUCCEEDED, NOT_SUCCEEDED])
            target = pick(draw, [customers[pid]] * 4 + closed + mains + wallets)
            pro_rata = pro_rata_mode == "all" or (pro_rata_mode == "mixed" and one_in(draw, 2))
            template = PaymentRequest(
                Kind.REFUND, SHOP, MERCHANT_WALLET, target, 1, CNY, payment_id=pid, fee_pro_rata=pro_rata
            )
            points = _refund_points(template, state)
        elif kind is Kind.FUNDING:
            funded = [r.target_wallet_id for r in requests if r.kind is Kind.FUNDING]
            user = pick(draw, [*USERS, *(WALLETS[w] for w in funded * 2 + closed if w is not None)])
            # Now and then the other wallet of a user funded before: both share the user's cap.
            others = [w for w in (main_of(user), sub_of(user)) if w not in funded]
            target = pick(draw, [main_of(user), sub_of(user), *others, *others])
            template = PaymentRequest(Kind.FUNDING, user, FUNDING_ACCOUNT, target, 1, CNY)
            holder = state.holders.get(user)
            room = None if holder is None else holder.room
            points = [room, room, room_under_ceiling(state.accounts[target])]
        elif kind is Kind.CLOSE:
            user = pick(draw, [*USERS, *(WALLETS[w] for w in closed + used + paid_from * 6)])
            template = PaymentRequest(Kind.CLOSE, user, sub_of(user), main_of(user), 0, CNY)
            points = []
        else:
            subs = [w for w in hot if w.endswith("-b")] + [sub_of(u) for u in USERS]
            source = pick(draw, wallets + subs + mains * 3)
            if kind is Kind.MERCHANT:
                target = MERCHANT_WALLET
                status = pick(draw, [None] * 5 + ["active"] * 5 + ["suspended"])
            else:
                others = [w for w in wallets + closed * 3 + mains if w != source]
                own = [main_of(WALLETS[source])] * 6 if source.endswith("-b") else []
                target = pick(draw, others * 4 + own + [source])  # now and then the paying wallet
                status = None
            template = PaymentRequest(
                kind, WALLETS[source], source, target, 1, CNY, merchant_status=status, stepped_up=True
            )
            points = _payment_points(template, state)
            if source in mains:  # all it holds now, with what the closing moved there
                points += [state.accounts[source].available] * 4
        request = template if kind is Kind.CLOSE else replace(template, amount=_amount(draw, points))
        decision = decide(request, state, POLICY, NOW)
        requests.append(request)
        states.append(state)
        reference.append(decision)
        if isinstance(decision, Approve):
            assert decision.step_up == ()  # stepped up, or a kind that never asks: the batch writes it
            approved.append(decision)
    return Batch(books, requests, states, reference)


def batch_of(books: Books, requests: Sequence[PaymentRequest]) -> Batch:
    """Given requests, each decided alone over its derived state."""
    states: list[Books] = []
    reference: list[Decision] = []
    approved: list[Approve] = []
    for request in requests:
        states.append(derived(books, approved))
        reference.append(decide(request, states[-1], POLICY, NOW))
        if isinstance(reference[-1], Approve):
            approved.append(reference[-1])
    return Batch(books, list(requests), states, reference)


def _example_books(*, u2_sub: AccountStatus, u2_sub_locked: bool) -> Books:
    """u0 moves money around its wallets, u1 has a capped owner and a sub-wallet with a hold, u2's
    sub-wallet is debit-frozen or locked; the merchant wallet holds just enough for pay-1's refunds."""
    wallets = {
        "u0-a": make_account("u0-a", 5_000, 0, 0, None, AccountStatus.OPEN),
        "u0-b": make_account("u0-b", 3_000, 0, 0, None, AccountStatus.OPEN),
        "u1-a": make_account("u1-a", 1_000, 0, 0, 3_000, AccountStatus.OPEN),
        "u1-b": make_account("u1-b", 500, 0, 100, None, AccountStatus.OPEN),
        "u2-a": make_account("u2-a", 2_000, 0, 0, None, AccountStatus.OPEN),
        "u2-b": make_account("u2-b", 1_000, 0, 0, None, u2_sub),
        MERCHANT_WALLET: make_account(MERCHANT_WALLET, 2_981, 0, 0, None, AccountStatus.OPEN),
    }
    fees = system_account(FEE_ACCOUNT, NormalBalance.CREDIT, 500, 0)
    funding = system_account(FUNDING_ACCOUNT, NormalBalance.DEBIT, 0, 1_000)
    unlimited = TierLimits(balance_cap=None, single_payment=None, daily_outflow=None)
    lock = WalletSettings("u2-b", locked_until=NOW + 1) if u2_sub_locked else None
    targets = {w: TargetWallet(w, user, CNY) for w, user in WALLETS.items()}
    return Books(
        payers={user: Payer(user, "active", PayerLimits(2, unlimited)) for user in USERS},
        sources={w: SourceWallet(w, user, CNY, lock if w == "u2-b" else None) for w, user in WALLETS.items()},
        targets={**targets, MERCHANT_WALLET: TargetWallet(MERCHANT_WALLET, SHOP, CNY)},
        accounts={**wallets, FEE_ACCOUNT: fees, FUNDING_ACCOUNT: funding},
        holders={"u0": HolderCap(2, 20_000, 8_000), "u1": HolderCap(1, 6_000, 1_500)},
        paid={
            "pay-1": PaidPayment("succeeded", 3_000, 0, 19, 0),
            "pay-2": PaidPayment("succeeded", 1_000, 400, 7, 3),
            "pay-3": PaidPayment("failed", 500, 0, 2, 0),
        },
    )


def _refund(pid: str, amount: int, target: str = "u0-a") -> PaymentRequest:
    return PaymentRequest(
        Kind.REFUND, SHOP, MERCHANT_WALLET, target, amount, CNY, payment_id=pid, fee_pro_rata=True
    )


def _p2p(source: str, target: str, amount: int) -> PaymentRequest:
    return PaymentRequest(Kind.P2P, WALLETS[source], source, target, amount, CNY, stepped_up=True)


def _funding(wallet: str, amount: int) -> PaymentRequest:
    return PaymentRequest(Kind.FUNDING, WALLETS[wallet], FUNDING_ACCOUNT, wallet, amount, CNY)


def _closing(user: str) -> PaymentRequest:
    return PaymentRequest(Kind.CLOSE, user, sub_of(user), main_of(user), 0, CNY)


# Refunds of one payment up to it and one fen past it (the last one exactly what the merchant wallet
# holds with the fee share coming back), of a payment that failed, to a wallet without room; a
# debit-frozen sub-wallet's closing.
REFUNDS = batch_of(
    _example_books(u2_sub=AccountStatus.DEBIT_FROZEN, u2_sub_locked=False),
    [
        _refund("pay-1", 1_000),
        _refund("pay-1", 2_001),
        _refund("pay-1", 2_000),
        _refund("pay-1", 1),
        _refund("pay-3", 100),
        PaymentRequest(Kind.MERCHANT, "u2", "u2-a", MERCHANT_WALLET, 1_000, CNY, stepped_up=True),
        _refund("pay-2", 600, "u1-a"),
        _refund("pay-2", 1, "u1-a"),
        _closing("u2"),
    ],
)
# A sub-wallet paid from, then closed (what is left moves), then all of the main wallet paid on; the
# closed wallet paid to, funded, closed again and paid from; two wallets of one owner funded against
# one cap (exact room and one fen more); a closing refused for a hold, another for a lock.
CLOSINGS = batch_of(
    _example_books(u2_sub=AccountStatus.OPEN, u2_sub_locked=True),
    [
        _p2p("u0-b", "u0-a", 1_000),
        _closing("u0"),
        _p2p("u0-a", "u2-a", 8_000),
        _p2p("u1-a", "u0-b", 10),
        _funding("u0-b", 10),
        _funding("u1-a", 2_000),
        _funding("u1-b", 2_501),
        _funding("u1-b", 2_500),
        _closing("u1"),
        _closing("u2"),
        _closing("u0"),
        _p2p("u0-b", "u0-a", 1),
    ],
)


def snapshot(books: Books) -> dict[str, tuple[int, int, int, int, str]]:
    return {
        i: (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending, a.status)
        for i, a in books.accounts.items()
    }


def approvals(decisions: Sequence[Decision]) -> list[Approve]:
    return [d for d in decisions if isinstance(d, Approve)]


# -- properties ---------------------------------------------------------------------------------------


@PROPERTY
@given(batches())
@example(REFUNDS)
@example(CLOSINGS)
def test_a_mixed_batch_decides_as_one_by_one_decisions_over_the_running_totals(batch: Batch) -> None:
    before, paid_before, holders_before = snapshot(batch.books), dict(batch.books.paid), batch.books.holders
    decisions = decide_batch(batch.requests, batch.books, POLICY, NOW)
    # The same Approve / Decline, finding code and data, `moved` and `fee_back`, `own` and `spent`.
    assert decisions == batch.reference
    assert snapshot(batch.books) == before  # the books handed in are not touched
    assert batch.books.paid == paid_before and batch.books.holders == holders_before
    closed: set[str] = set()
    for decision in decisions:
        request = decision.request
        assert decision.own == is_own(request, batch.books)
        if not isinstance(decision, Approve):
            continue
        # Nothing moves from or to a wallet once it is closed.
        assert request.source_wallet_id not in closed and request.target_wallet_id not in closed
        counted = request.kind in (Kind.P2P, Kind.MERCHANT) and not decision.own
        assert decision.spent == (request.amount if counted else 0)
        assert decision.step_up == ()
        if request.kind is Kind.CLOSE:
            closed.add(request.source_wallet_id)
    # And each refund, funding and closing is what its rules, restated here, say over that state.
    for request, state, decision in zip(batch.requests, batch.states, batch.reference, strict=True):
        if request.kind in (Kind.REFUND, Kind.FUNDING, Kind.CLOSE):
            assert outcome(decision) == expected(request, state), request


@PROPERTY
@given(batches())
@example(REFUNDS)
@example(CLOSINGS)
def test_approvals_keep_the_books_whole_and_give_back_at_most_the_fee(batch: Batch) -> None:
    def total(books: Books) -> int:
        return sum(a.credits_posted - a.debits_posted for a in books.accounts.values())

    decisions = decide_batch(batch.requests, batch.books, POLICY, NOW)
    approved = approvals(decisions)
    # Money is moved, never made: across the wallets, the merchant wallet, the fee account and the
    # funding account (which may go below zero: sandbox money comes from it).
    for k in range(len(approved) + 1):
        books = derived(batch.books, approved[:k])
        assert total(books) == total(batch.books)
        for account_id, account in books.accounts.items():
            if account_id in SYSTEM:
                continue
            # The wallets never go below zero (holds out counted), nor past their ceiling (holds in).
            assert account.debits_posted + account.debits_pending <= account.credits_posted
            ceiling = account.balance_ceiling
            assert ceiling is None or account.balance + account.credits_pending <= ceiling
    final = derived(batch.books, approved)
    for decision in approved:
        if decision.request.kind is Kind.CLOSE:  # emptied (all of it moved) and closed
            closed = final.accounts[decision.request.source_wallet_id]
            assert closed.balance == 0 and closed.status is AccountStatus.CLOSED

    # Over the refunds of one payment, the fee shares add up to at most the fee; exactly the fee
    # (the cumulative pro-rata share at each step) when they all give it back pro rata.
    for pid in PAYMENTS:
        paid = batch.books.paid[pid]
        refunds = [d for d in approved if d.request.payment_id == pid]
        refunded, fee_back = paid.refunded, paid.fee_refunded
        for refund in refunds:
            assert refund.fee_back >= 0
            refunded += refund.moved
            fee_back += refund.fee_back
            assert refunded <= paid.amount and fee_back <= paid.fee
            if all(r.request.fee_pro_rata for r in refunds):
                assert fee_back == half_up(Fraction(paid.fee * refunded, paid.amount))
        if refunded == paid.amount and all(r.request.fee_pro_rata for r in refunds):
            assert fee_back == paid.fee
        if not any(r.request.fee_pro_rata for r in refunds):
            assert fee_back == paid.fee_refunded

    # `books_after` carries the running totals derived here from the sums (the fee account aside: it
    # is locked for the refund chain, but no rule reads it, and `books_after` does not move it).
    books = batch.books
    for decision in approved:
        books = books_after(
            books, decision.request, own=decision.own, amount=decision.moved, fee_back=decision.fee_back
        )
    assert books.payers == final.payers
    assert books.sources == final.sources
    assert books.holders == final.holders
    assert books.known_payees == final.known_payees
    assert books.paid == final.paid
    assert {i: a for i, a in books.accounts.items() if i != FEE_ACCOUNT} == {
        i: a for i, a in final.accounts.items() if i != FEE_ACCOUNT
    }

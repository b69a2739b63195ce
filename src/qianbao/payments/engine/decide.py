"""`decide`: every rule of a money movement, in the one order they are asked, over loaded state.

The order (a request failing several rules is answered with the first):

   1. the payer may pay (not frozen or closed)            account_frozen
   2. the wallet named is not the paying wallet           same_wallet
   3. the amount is in the paying wallet's currency       currency_mismatch
   4. the recipient exists                                recipient_not_found
   5. it is another wallet, in the same currency          same_wallet, currency_mismatch
   6. the merchant is active                              merchant_inactive
   7. the paying wallet is not locked                     wallet_locked
   8. its blocking monthly budget has room (spending)     budget_exceeded
   9. the single-payment limit, then today's outflow      limit_exceeded_single, limit_exceeded_daily
      (payments to someone else)
  10. the paying wallet's account is open, and holds      wallet_frozen, insufficient_funds
      the amount (a confirmation posts funds held)
  11. the receiving wallet's account takes credits        wallet_frozen / merchant_inactive
  12. the recipient's balance cap over all their wallets, balance_cap_exceeded
      then the receiving wallet's own ceiling
  13. the step-up policy                                  → StepUp(reasons)

The payer's own checks (1–10) come before anything about the recipient (11–12): whoever cannot pay
hears nothing about the recipient's balance, and a cap refusal of someone else's wallet carries no
limit, room or tier (`declines`). Checks 1–12 are hard: no step-up is asked for a payment that cannot
happen.

`decide_batch` decides requests in order over shared books, each seeing the running totals (balances,
today's outflow, the month's spending, the recipients' holdings) of the approved ones before it; its
result equals deciding them one by one, writing each approval before the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from qianbao.findings import Finding
from qianbao.identity import limit_rules
from qianbao.identity.model import Operation, StepUpFacts, StepUpPolicy
from qianbao.payments.engine import rules
from qianbao.payments.engine.facts import (
    Books,
    Kind,
    PaymentRequest,
    books_after,
    holds_funds,
    is_spending,
)
from qianbao.payments.fees import fee_refund
from qianbao.wallets import spend_rules


@dataclass(frozen=True, slots=True)
class Approve:
    """The payment may be written: `spent` is what counts toward the payer's outflow today and the paying
    wallet's monthly budget (0: not spending); `step_up` the reasons fresh proof is needed first (empty:
    none)."""

    request: PaymentRequest
    own: bool
    spent: int
    step_up: tuple[str, ...] = ()
    amount: int = -1  # what moves: the request's amount, or a closing wallet's balance (-1: the request's)
    fee_back: int = 0  # a refund: the merchant's fee share it gives back (fee account → merchant wallet)

    @property
    def moved(self) -> int:
        return self.request.amount if self.amount < 0 else self.amount


@dataclass(frozen=True, slots=True)
class Decline:
    request: PaymentRequest
    own: bool
    finding: Finding


Decision = Approve | Decline


_OWN_KINDS = frozenset({Kind.P2P, Kind.CLOSE, Kind.FUNDING})
_NO_STEP_UP = frozenset({Kind.CODE_HOLD, Kind.REFUND, Kind.FUNDING, Kind.CLOSE})


def is_own(request: PaymentRequest, books: Books) -> bool:
    """Money between one's own wallets: a P2P payment whose recipient is the payer, a wallet's closing,
    a sandbox funding (a refusal then may tell its owner everything about their own wallets)."""
    target = None if request.target_wallet_id is None else books.targets.get(request.target_wallet_id)
    return request.kind in _OWN_KINDS and target is not None and target.user_id == request.payer_user_id


def _refund(request: PaymentRequest, books: Books, fee_back: int) -> Iterator[Finding | None]:
    """A refund: within what is left of the payment, from a merchant wallet that may pay it (the fee
    share comes back to it first), to a wallet that takes it."""
    assert request.payment_id is not None and request.target_wallet_id is not None  # noqa: S101
    paid = books.paid[request.payment_id]
    yield rules.refundable(paid.status, paid.amount, paid.refunded, request.amount)
    paying = books.accounts[request.source_wallet_id]
    yield rules.payer_account(paying)
    yield rules.payer_balance(paying, request.amount - fee_back)
    receiving = books.accounts[request.target_wallet_id]
    yield rules.recipient_account(receiving, merchant=False)
    yield rules.recipient_room(receiving, request.amount)


def _funding(request: PaymentRequest, books: Books) -> Iterator[Finding | None]:
    """Sandbox funding: the owner's balance cap over all their wallets, then the wallet's own."""
    assert request.target_wallet_id is not None  # noqa: S101 - named by its owner, found
    holder = books.holders.get(request.payer_user_id)
    if holder is not None:
        yield limit_rules.balance_cap(holder, request.amount)
    receiving = books.accounts[request.target_wallet_id]
    yield rules.recipient_account(receiving, merchant=False)
    yield rules.recipient_room(receiving, request.amount)


def _closing(request: PaymentRequest, books: Books, now: int) -> Iterator[Finding | None]:
    """A sub-wallet's closing: no money leaves a locked wallet, none may be on hold, both wallets must
    be open, and the main wallet must have room under its own ceiling for the balance."""
    assert request.target_wallet_id is not None  # noqa: S101 - the main wallet, found
    yield spend_rules.wallet_lock(books.sources[request.source_wallet_id].settings, now)
    closing = books.accounts[request.source_wallet_id]
    yield rules.no_holds(closing)
    main = books.accounts[request.target_wallet_id]
    yield rules.closable(closing, main)
    yield rules.main_takes(main, closing.balance)


def _findings(request: PaymentRequest, books: Books, now: int, own: bool) -> Iterator[Finding | None]:
    amount = request.amount
    payer = books.payers[request.payer_user_id]
    source = books.sources[request.source_wallet_id]
    yield limit_rules.payer_may_pay(payer.credential_status)
    yield rules.same_wallet(source.wallet_id, request.named_wallet_id)
    yield rules.wallet_currency(source.currency, request.currency)
    yield rules.recipient_found(request.target_wallet_id, request.recipient_by)
    assert request.target_wallet_id is not None  # noqa: S101 - the rule above stops a missing one
    target = books.targets[request.target_wallet_id]
    yield rules.same_wallet(source.wallet_id, target.wallet_id)
    yield rules.wallets_currency(source.currency, target.currency)
    yield rules.merchant_active(request.merchant_status)
    yield spend_rules.wallet_lock(source.settings, now)
    if not own:  # spending and limits; a hold is checked now and counted when it is confirmed
        yield spend_rules.monthly_budget(source.settings, source.month_spent, amount)
        yield limit_rules.single_limit(payer.limits, amount)
        yield limit_rules.daily_limit(payer.limits, amount)
    paying = books.accounts[source.wallet_id]
    yield rules.payer_account(paying)
    if not holds_funds(request):
        yield rules.payer_balance(paying, amount)
    receiving = books.accounts[target.wallet_id]
    yield rules.recipient_account(receiving, merchant=request.kind is not Kind.P2P)
    if not holds_funds(request):  # a held credit already counts toward the recipient's ceiling
        holder = books.holders.get(target.user_id)
        if not own and holder is not None:
            yield limit_rules.balance_cap(holder, amount)
        yield rules.recipient_room(receiving, amount)


def _step_up(request: PaymentRequest, books: Books, policy: StepUpPolicy, own: bool) -> tuple[str, ...]:
    if request.stepped_up:
        return ()
    if request.kind is Kind.CODE_CONFIRM:  # confirming is the point of the hold: always
        return ("payment_code_confirmation",)
    if own or request.no_pin or request.kind in _NO_STEP_UP:
        return ()
    payee_is_new = False
    if request.kind is Kind.P2P and request.target_wallet_id is not None:
        payee = books.targets[request.target_wallet_id].user_id
        payee_is_new = (request.payer_user_id, payee) not in books.known_payees
    facts = StepUpFacts(Operation.PAYMENT, request.amount, payee_is_new, request.device_trusted)
    return tuple(policy.reasons(facts))


def decide(request: PaymentRequest, books: Books, policy: StepUpPolicy, now: int) -> Decision:
    """Approve (with the step-up reasons, if any) or decline one request."""
    own = is_own(request, books)
    amount, fee_back = request.amount, 0
    if request.kind is Kind.REFUND:
        assert request.payment_id is not None  # noqa: S101 - a refund names its payment
        paid = books.paid[request.payment_id]
        if request.fee_pro_rata and rules.refundable(paid.status, paid.amount, paid.refunded, amount) is None:
            fee_back = fee_refund(paid.fee, paid.amount, paid.refunded, amount)
        findings = _refund(request, books, fee_back)
    elif request.kind is Kind.FUNDING:
        findings = _funding(request, books)
    elif request.kind is Kind.CLOSE:
        amount = books.accounts[request.source_wallet_id].balance
        findings = _closing(request, books, now)
    else:
        findings = _findings(request, books, now, own)
    for finding in findings:
        if finding is not None:
            return Decline(request, own, finding)
    return Approve(
        request,
        own,
        spent=request.amount if is_spending(request, own) else 0,
        step_up=_step_up(request, books, policy, own),
        amount=amount,
        fee_back=fee_back,
    )


def decide_batch(
    requests: Sequence[PaymentRequest],
    books: Books,
    policy: StepUpPolicy,
    now: int,
    *,
    admit: Callable[[Approve], bool] | None = None,
) -> list[Decision]:
    """Decide in order; an approval moves the books for the next when it needs no further proof, or,
    with `admit` (the pipeline's: it spends the order's Step-Up proof where one is needed), when
    `admit` takes it."""
    decisions: list[Decision] = []
    for request in requests:
        decision = decide(request, books, policy, now)
        decisions.append(decision)
        if isinstance(decision, Approve) and (admit(decision) if admit is not None else not decision.step_up):
            books = books_after(
                books, request, own=decision.own, amount=decision.moved, fee_back=decision.fee_back
            )
    return decisions

"""The state `decide` needs, read in the caller's transaction.

One statement per table for any number of requests (a batch of the payment pipeline). The recipients'
user rows are locked first (`holder_caps(lock=True)`), so concurrent credits to one user queue and each
sees the others, then the ledger accounts (in id order, as the ledger itself locks them). The daily
limit and blocking budgets are held under concurrency by the batch's upserts, whose returned totals are
checked (`identity.limits.add_outflows`, `wallets.budgets.add_spendings`), the balances by the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, select

from qianbao.identity.context import IdentityContext
from qianbao.identity.limit_rules import HolderCap
from qianbao.identity.limits import holder_caps, payers_limits
from qianbao.payments.engine.facts import (
    Books,
    Kind,
    PaidPayment,
    Payer,
    PaymentRequest,
    SourceWallet,
    TargetWallet,
)
from qianbao.payments.tables import transfers
from qianbao.wallets import spending


def _known_payees(conn: Connection, pairs: set[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """Which (payer, payee) pairs have a successful payment already: one statement for all of them."""
    if not pairs:
        return frozenset()
    rows = conn.execute(
        select(transfers.c.from_user_id, transfers.c.to_user_id)
        .where(
            transfers.c.from_user_id.in_(sorted({p for p, _ in pairs})),
            transfers.c.to_user_id.in_(sorted({q for _, q in pairs})),
            transfers.c.status == "succeeded",
        )
        .distinct()
    )
    return frozenset((str(a), str(b)) for a, b in rows) & frozenset(pairs)


def load_books(
    ctx: IdentityContext,
    conn: Connection,
    requests: Sequence[PaymentRequest],
    targets: Sequence[TargetWallet],
    *,
    now: int,
    also_lock: Sequence[str] = (),
    paid: Mapping[str, PaidPayment] | None = None,
) -> Books:
    """The books for `requests`, whose recipients (already resolved) are `targets`, in one statement per
    table however many requests there are. `also_lock` names the other accounts the ledger chains touch
    (the fee account): locking them all in one id-ordered step, as the ledger does, is what keeps two
    units of work (or batches) from waiting on each other. The order: the recipients' user rows (their
    balance caps), then the accounts, then what is read without locks. `paid`: the payments refunds
    give back, as their flow staged them (their refunded totals are held by a conditional update)."""
    by_id = {t.wallet_id: t for t in targets}
    capped: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for request in requests:
        target = None if request.target_wallet_id is None else by_id.get(request.target_wallet_id)
        if request.kind is Kind.FUNDING and target is not None:  # the owner's own cap
            capped.add(target.user_id)
            continue
        if request.kind is not Kind.P2P or target is None or target.user_id == request.payer_user_id:
            continue
        capped.add(target.user_id)
        # Only the step-up policy asks whether the payee is new: not once the proof is in hand.
        if not request.stepped_up:
            pairs.add((request.payer_user_id, target.user_id))
    holders: dict[str, HolderCap] = {}
    for code in sorted({r.currency for r in requests}):  # one currency, but a batch could mix them
        holders |= holder_caps(conn, ctx.settings, capped, code, now, lock=True)
    source_ids = {r.source_wallet_id for r in requests}
    account_ids = sorted({*source_ids, *by_id, *also_lock})
    # Locked in id order, as the ledger locks them: the balances decided on are the ones written.
    accounts = ctx.ledger.lock_accounts_in(conn, account_ids)
    # Read after the locks: a batch paying from the same wallet committed before they were granted.
    payers: dict[str, Payer] = {}
    for code in sorted({r.currency for r in requests}):
        found = payers_limits(conn, ctx.settings, {r.payer_user_id for r in requests}, code, now)
        payers |= {user_id: Payer(user_id, status, limits) for user_id, (status, limits) in found.items()}
    sources = {
        wallet_id: SourceWallet(wallet_id, state.user_id, state.currency, state.settings, state.month_spent)
        for wallet_id, state in spending.source_states(conn, source_ids, now).items()
    }
    known = _known_payees(conn, pairs)
    return Books(payers, sources, by_id, accounts, holders, known, dict(paid or {}))

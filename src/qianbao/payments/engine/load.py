"""The state `decide` needs, read in the caller's transaction.

Before step-up it is read without locks; inside the unit of work the recipients' user rows are locked
first (`holder_cap(lock=True)`), so concurrent credits to one user queue and each sees the others, then
the ledger accounts (in id order, as the ledger itself locks them).
The daily limit and blocking budgets are held under concurrency by their conditional writes
(`identity.limits.reserve_outflow`, `wallets.spending.record_spend`), the balances by the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from qianbao.identity.context import IdentityContext
from qianbao.identity.limit_rules import HolderCap
from qianbao.identity.limits import holder_cap, payer_limits
from qianbao.ledger.queries import LedgerReader
from qianbao.payments.engine.facts import Books, Kind, Payer, PaymentRequest, SourceWallet, TargetWallet
from qianbao.payments.tables import transfers
from qianbao.wallets import spending


def _paid_before(conn: Connection, payer_user_id: str, payee_user_id: str) -> bool:
    earlier = conn.execute(
        select(transfers.c.id)
        .where(
            transfers.c.from_user_id == payer_user_id,
            transfers.c.to_user_id == payee_user_id,
            transfers.c.status == "succeeded",
        )
        .limit(1)
    ).first()
    return earlier is not None


def load_books(
    ctx: IdentityContext,
    conn: Connection,
    requests: Sequence[PaymentRequest],
    targets: Sequence[TargetWallet],
    *,
    now: int,
    lock: bool,
    also_lock: Sequence[str] = (),
) -> Books:
    """The books for `requests`, whose recipients (already resolved) are `targets`. `also_lock` names
    the other accounts the unit of work's ledger chain touches (the fee account): locking them all in one
    id-ordered step, as the ledger does, is what keeps two units of work from waiting on each other."""
    by_id = {t.wallet_id: t for t in targets}
    payers: dict[str, Payer] = {}
    sources: dict[str, SourceWallet] = {}
    holders: dict[str, HolderCap] = {}
    known: set[tuple[str, str]] = set()
    for request in requests:
        if request.payer_user_id not in payers:
            status, limits = payer_limits(conn, ctx.settings, request.payer_user_id, request.currency, now)
            payers[request.payer_user_id] = Payer(request.payer_user_id, status, limits)
        if request.source_wallet_id not in sources:
            state = spending.source_state(conn, request.source_wallet_id, now)
            assert state is not None  # noqa: S101 - the caller loaded the payer's own wallet
            sources[request.source_wallet_id] = SourceWallet(
                request.source_wallet_id, state.user_id, state.currency, state.settings, state.month_spent
            )
        target = None if request.target_wallet_id is None else by_id.get(request.target_wallet_id)
        if request.kind is not Kind.P2P or target is None or target.user_id == request.payer_user_id:
            continue
        if target.user_id not in holders:
            cap = holder_cap(conn, ctx.settings, target.user_id, target.currency, now, lock=lock)
            if cap is not None:
                holders[target.user_id] = cap
        pair = (request.payer_user_id, target.user_id)
        # Only the step-up policy asks whether the payee is new: not once the proof is in hand.
        if not request.stepped_up and pair not in known and _paid_before(conn, *pair):
            known.add(pair)
    account_ids = sorted({*sources, *by_id, *(also_lock if lock else ())})
    if lock:  # locked in id order, as the ledger locks them: the balances decided on are the ones written
        accounts = ctx.ledger.lock_accounts_in(conn, account_ids)
    else:
        accounts = LedgerReader(ctx.db).lookup_accounts_in(conn, account_ids)
    return Books(payers, sources, by_id, accounts, holders, frozenset(known))

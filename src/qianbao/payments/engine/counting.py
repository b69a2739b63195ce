"""Counting a batch's approved money movements toward what they use up: the payers' outflow today
(the daily limit), the paying wallets' months (their budgets), and the goals of the wallets credited.

One statement per table for the whole batch; the totals the upserts return are checked against the
limits and budgets the batch decided on (`identity.limits.add_outflows`, `wallets.budgets
.add_spendings`), so no interleaving of batches, processes or servers takes a payer past a limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection

from qianbao.identity.limits import add_outflows
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.facts import Books
from qianbao.payments.engine.orders import Staged, Stale
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets import budgets, spending


def count_batch(
    conn: Connection, approved: Sequence[tuple[Staged, Approve]], books_of: Mapping[str, Books], now: int
) -> list[OutboxEvent]:
    """Today's outflow and the months' spending, one upsert each for the whole batch; then the goals
    reached. A total past the limit or the blocking budget it was decided under means another
    transaction counted meanwhile: `Stale`, and the batch is rolled back and tried again."""
    events: list[OutboxEvent] = []
    for currency in sorted({item.request.currency for item, _ in approved}):
        mine = [(item, d) for item, d in approved if item.request.currency == currency]
        books = books_of[currency]
        spent = [(item.request.payer_user_id, d.spent) for item, d in mine if d.spent]
        limits = {p: books.payers[p].limits for p, _ in spent}
        if add_outflows(conn, limits, spent, currency, now):
            raise Stale("today's outflow changed since the batch read it")
        by_wallet: dict[str, int] = {}
        for item, decision in mine:
            if decision.spent:
                wallet_id = item.request.source_wallet_id
                by_wallet[wallet_id] = by_wallet.get(wallet_id, 0) + decision.spent
        spends = []
        for wallet_id, amount in by_wallet.items():
            source = books.sources[wallet_id]
            budget = None if source.settings is None else source.settings.budget
            spends.append(budgets.Spend(source.user_id, wallet_id, amount, currency, budget))
        budget_events, refused = budgets.add_spendings(conn, spends, now)
        if refused:
            raise Stale("a month's spending changed since the batch read it")
        events += budget_events
    credited = {item.target.wallet_id for item, _ in approved if item.target is not None}
    events += spending.after_credits(conn, credited, now)
    return events


__all__ = ["count_batch"]

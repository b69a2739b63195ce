"""Inside a payment's unit of work, after `decide` approved it again over locked state: the writes
that can still refuse under concurrency, and how a refusal leaves the unit of work.

Each conditional write holds its rule under concurrency (the second line after `decide`): today's
outflow (`identity.limits.reserve_outflow`), a blocking budget (`wallets.spending.record_spend`), the
balances and ceilings (the ledger). A refusal raises `Declined`, which rolls the unit of work back; the
caller then records the decline in its own transaction, bound to the Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection

from qianbao.errors import IdempotencyKeyReused, QianbaoError
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import reserve_outflow
from qianbao.ledger.model import ResultCode, TransferResult
from qianbao.payments.engine.decide import Approve, Decision, Decline, decide
from qianbao.payments.engine.declines import error_for
from qianbao.payments.engine.facts import PaymentRequest, TargetWallet
from qianbao.payments.engine.load import load_books
from qianbao.payments.engine.rules import ledger_finding
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets import spending


class AlreadyApplied(Exception):  # noqa: N818 - control flow inside a use case
    """The ledger already holds this transfer id: an earlier attempt with the same key committed."""


class Declined(Exception):  # noqa: N818 - control flow inside a use case
    """A rule or the ledger declined the payment inside the unit of work (which then rolls back)."""

    def __init__(self, error: QianbaoError) -> None:
        super().__init__(error.code)
        self.error = error


def approved_or_decline(decision: Decision) -> Approve:
    """Inside the unit of work: a decline leaves it (rolled back) as `Declined`."""
    if isinstance(decision, Decline):
        raise Declined(error_for(decision.finding, decision.request.currency, reveal=decision.own))
    return decision


def decide_locked(
    ctx: IdentityContext,
    conn: Connection,
    request: PaymentRequest,
    targets: Sequence[TargetWallet],
    now: int,
    *,
    proof: stepup.StepUpPass | None,
    applied: Callable[[Connection], bool] | None = None,
    also_lock: Sequence[str] = (),
) -> Approve:
    """The unit of work's decision: load the state with its locks, then (once the locks are held, so an
    overlapping attempt with the same Idempotency-Key has committed or rolled back) `applied` tells
    whether this payment exists already (`AlreadyApplied`: replay it), then the step-up pass is spent and
    the request decided again."""
    books = load_books(ctx, conn, [request], targets, now=now, lock=True, also_lock=also_lock)
    if applied is not None and applied(conn):
        raise AlreadyApplied
    stepup.consume(ctx, conn, proof)
    return approved_or_decline(decide(request, books, ctx.step_up_policy, now))


def count_outflow(ctx: IdentityContext, conn: Connection, approved: Approve, user_id: str, now: int) -> None:
    """Count the approved outflow toward the payer's day (atomic; a race lost is a decline)."""
    if not approved.spent:
        return
    currency = approved.request.currency
    refusal = reserve_outflow(conn, ctx.settings, user_id, approved.spent, currency, now)
    if refusal is not None:
        raise Declined(error_for(refusal, currency, reveal=True))


def count_spend(conn: Connection, approved: Approve, wallet_id: str, now: int) -> list[OutboxEvent]:
    """Count the approved spending toward the wallet's month; the budget events to emit."""
    if not approved.spent:
        return []
    currency = approved.request.currency
    counted = spending.record_spend(conn, wallet_id, approved.spent, currency, now)
    if not isinstance(counted, list):  # a blocking budget lost a race
        raise Declined(error_for(counted, currency))
    return counted


def chain_outcome(
    results: Sequence[TransferResult], currency: str, *, reveal: bool = True, what: str = "payment"
) -> None:
    """Raise for a ledger chain that did not apply: `AlreadyApplied` when its first transfer exists (a
    replay), `Declined` with the code of the transfer that failed (not `linked_event_failed`)."""
    first = results[0].code
    if first is ResultCode.EXISTS:
        raise AlreadyApplied
    if all(r.code is ResultCode.OK for r in results):
        return
    failing = next(
        (r.code for r in results if r.code not in (ResultCode.OK, ResultCode.LINKED_EVENT_FAILED)), first
    )
    if failing is ResultCode.EXISTS_WITH_DIFFERENT_FIELDS:
        raise IdempotencyKeyReused(f"this Idempotency-Key was used for a different {what}")
    raise Declined(error_for(ledger_finding(failing), currency, reveal=reveal))

"""The payment pipeline: every payment is an order in a batch, and a batch is ONE transaction.

    orders ──► GroupCommitter (store/group_commit.py: the callers take turns writing a batch)
                 │
                 ▼  one transaction, one statement per table for the whole batch
       1. Idempotency-Key claims (sorted)      store.idempotency.claim_keys   → replays, reused keys
       2. stage: wallets, recipients          Flow.stage (per kind)          → refusals
       3. load with locks: recipients' user    engine.load.load_books
          rows, then every account in id order,
          then limits, budgets, known payees;
          the records of keyed orders          Flow.existing                  → replays
       4. decide each order in turn over the   engine.decide.decide + facts.books_after
          running books; spend step-up passes     (declines decided in memory: no rollback)
       5. the ledger: every approved chain      LedgerEngine.apply_in
       6. today's outflow, the months' budgets  engine.counting.count_batch (identity.limits,
          (totals checked: stale → retry)         wallets.budgets, wallets.spending)
       7. records (paid and declined), hooks,   Flow.write, store.outbox
          outbox events
       8. answers bound to their keys; keys     store.idempotency.store_answers / release_keys
          refused before anything was tried freed
       COMMIT, then every caller of the batch gets its outcome.

A decline never rolls back its neighbours: it is decided in memory and recorded in the same batch. A
database error, a stale total (another process counted meanwhile) or a ledger refusal the decision did
not foresee rolls the batch back; it is retried, and if it still fails its orders run one by one, each
as a batch of one, where that refusal is answered for the one order it concerns. Correctness comes
from the database (row locks, the primary keys of idempotency records and ledger transfers, the
totals checked after the upserts), never from a lock in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from qianbao.errors import IdempotencyKeyInUse, IdempotencyKeyReused, QianbaoError, ServiceUnavailable
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Operation
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.payments.engine.batch import Batch, Result, claim, follow, store
from qianbao.payments.engine.counting import count_batch
from qianbao.payments.engine.decide import Approve, Decline, decide_batch
from qianbao.payments.engine.declines import error_for
from qianbao.payments.engine.facts import Books
from qianbao.payments.engine.load import load_books
from qianbao.payments.engine.orders import (
    Done,
    NeedsStepUp,
    OneByOne,
    Order,
    Outcome,
    Replay,
    Staged,
    Stale,
)
from qianbao.payments.engine.rules import ledger_finding
from qianbao.store.errors import DATABASE_ERRORS, is_retryable
from qianbao.store.group_commit import GroupCommitter
from qianbao.store.outbox import OutboxEvent

log = logging.getLogger(__name__)

ATTEMPTS = 4  # a batch's tries before its orders run one by one


class _Retry(Stale):
    """The batch's view was stale (another transaction counted meanwhile), or the ledger refused what
    the decision approved: roll back and try again (or one by one)."""


def pipeline(ctx: IdentityContext) -> GroupCommitter[Order, Outcome]:
    """The process's pipeline for this context (built on first use: it has no thread of its own)."""
    found: GroupCommitter[Order, Outcome] | None = getattr(ctx, "_payment_pipeline", None)
    if found is None:
        found = GroupCommitter(lambda orders: process(ctx, orders), max_batch=ctx.settings.payment_batch_max)
        object.__setattr__(ctx, "_payment_pipeline", found)
    return found


def submit(ctx: IdentityContext, order: Order) -> Outcome:
    """Pay (or replay) one order through the pipeline; raises what the order is refused with."""
    return pipeline(ctx).run(order)


async def submit_async(ctx: IdentityContext, order: Order) -> Outcome:
    """`submit` from an event loop, without holding a thread while the batch is written."""
    return await pipeline(ctx).run_async(order)


def process(ctx: IdentityContext, orders: Sequence[Order]) -> list[Result]:
    """A batch: one transaction for all, retried; if it keeps failing, or one order's own step refuses
    (a money request's hook, a dynamic code claimed meanwhile), each order alone, where every error
    is its own order's."""
    if len(orders) == 1:
        return [_alone(ctx, orders[0])]
    failure: BaseException | None = None
    for _attempt in range(ATTEMPTS):
        try:
            return _run(ctx, orders)
        except OneByOne as exc:
            failure = exc
            break
        except Stale as exc:
            failure = exc
        except DATABASE_ERRORS as exc:
            failure = exc
            if not is_retryable(exc):
                break
        except Exception as exc:  # noqa: BLE001 - an order's own refusal: find out whose, alone
            failure = exc
            break
    log.info("a payment batch of %d is run one by one (%r)", len(orders), failure)
    return [_alone(ctx, order) for order in orders]


def _alone(ctx: IdentityContext, order: Order) -> Result:
    """One order as a batch of one, with the usual retries; its error, if it still fails, is its own."""
    failure: BaseException | None = None
    for _attempt in range(ATTEMPTS):
        try:
            return _run(ctx, [order], alone=True)[0]
        except Stale as exc:
            failure = exc
        except DATABASE_ERRORS as exc:
            if not is_retryable(exc):
                return exc
            failure = exc
        except Exception as exc:  # noqa: BLE001 - this order's own error: answered to its caller
            return exc
    log.warning("a payment could not be written after %d attempts: %r", ATTEMPTS, failure)
    return ServiceUnavailable(
        "the payment could not be completed now; try again with the same Idempotency-Key"
    )


# -- one attempt -----------------------------------------------------------------------------------


def _run(ctx: IdentityContext, orders: Sequence[Order], *, alone: bool = False) -> list[Result]:
    batch = Batch(orders)
    with ctx.uow() as uow:
        conn = uow.conn
        now = ctx.now()
        claim(ctx, conn, batch, now)
        staged = _stage(ctx, conn, batch, now)
        # The books hold one currency's limits and holdings per user: a batch that mixes currencies
        # (in practice, a request in a currency its wallet does not hold) is decided per currency.
        books_of: dict[str, Books] = {}
        approved: list[tuple[Staged, Approve]] = []
        refused: list[tuple[Staged, QianbaoError]] = []  # declined by the decision
        proofs: list[tuple[Staged, stepup.StepUpPass]] = []
        for code in sorted({s.request.currency for s in staged}):
            part = [s for s in staged if s.request.currency == code]
            books_of[code] = books = load_books(
                ctx,
                conn,
                [s.request for s in part],
                [s.target for s in part if s.target is not None],
                now=now,
                also_lock=sorted({a for s in part for a in s.also_lock}),
                paid={
                    s.request.payment_id: s.paid for s in part if s.paid is not None and s.request.payment_id
                },
            )
            part = _replays(ctx, conn, batch, part)
            approved += _decide(ctx, conn, batch, part, books, now, refused, later=proofs if alone else None)
        approved, declined = _apply_ledger(ctx, conn, batch, approved, alone=alone)
        _spend_later(ctx, conn, proofs, approved)
        counted = count_batch(conn, approved, books_of, now)
        # Each payment's own event before what it caused (a budget threshold, a goal), as subscribers
        # read them in the outbox's order.
        events = _records(ctx, conn, batch, approved, declined, books_of, now)
        events += _refused(ctx, conn, batch, refused)
        for event in events + counted:
            uow.emit(event)
        store(ctx, conn, batch)
        uow.commit()
    for i, j in batch.followers.items():
        batch.results[i] = follow(batch, i, j)
    return [r if r is not None else RuntimeError("an order was not answered") for r in batch.results]


def _stage(ctx: IdentityContext, conn: Connection, batch: Batch, now: int) -> list[Staged]:
    """Each flow resolves its orders (one statement per table); refusals and replays are answered."""
    live = []
    for i, result in enumerate(batch.results):
        refusal = batch.orders[i].refusal
        if i in batch.followers or result is not None:
            continue
        if refusal is not None:
            batch.refuse(i, refusal)
        else:
            live.append(i)
    by_flow: dict[int, list[int]] = {}
    for i in live:
        by_flow.setdefault(id(batch.orders[i].flow), []).append(i)
    staged: dict[int, Staged] = {}
    for indexes in by_flow.values():
        flow = batch.orders[indexes[0]].flow
        for i, found in zip(
            indexes, flow.stage(ctx, conn, [batch.orders[i] for i in indexes], now), strict=True
        ):
            if isinstance(found, QianbaoError):
                batch.refuse(i, found)
            elif isinstance(found, Replay):
                _answer_record(conn, batch, i, found.record, replayed=True)
            else:
                staged[i] = found
    return [staged[i] for i in sorted(staged)]


def _replays(ctx: IdentityContext, conn: Connection, batch: Batch, staged: list[Staged]) -> list[Staged]:
    """Orders whose ledger id has a record already: an attempt with the same key committed first (an
    overlapping retry waited for its locks just now), or, for a flow whose ledger ids name what they
    act on (a wallet's closing), it was done meanwhile. Asked once the locks are held, so the first
    attempt has committed or rolled back; answered from the record, not decided again."""
    keyed: dict[int, list[Staged]] = {}
    for item in staged:
        if item.order.key is not None or item.order.flow.ids_name_their_subject:
            keyed.setdefault(id(item.order.flow), []).append(item)
    done: set[int] = set()
    for items in keyed.values():
        found = items[0].order.flow.existing(ctx, conn, [i.order.ledger_id for i in items])
        for item in items:
            record = found.get(item.order.ledger_id)
            if record is not None:
                _answer_record(conn, batch, batch.index(item), record, replayed=True)
                done.add(id(item))
    return [item for item in staged if id(item) not in done]


def _answer_record(
    conn: Connection, batch: Batch, i: int, record: Any, *, replayed: bool, seen: Any = None
) -> None:
    """A record as the order's answer: a payment, or (a recorded decline) its error."""
    order = batch.orders[i]
    try:
        shown = order.flow.replay(record, order) if replayed else record
    except QianbaoError as error:
        batch.results[i] = error
        if order.http is not None:
            batch.bind(i, *order.http.render_error(error), sealed=False)
        return
    answer = None
    if order.http is not None:
        answer = order.http.render(shown, conn, seen)
        batch.bind(i, *answer, sealed=order.http.sealed)
    batch.results[i] = Done(shown, answer)


def _decide(
    ctx: IdentityContext,
    conn: Connection,
    batch: Batch,
    staged: Sequence[Staged],
    books: Books,
    now: int,
    refused: list[tuple[Staged, QianbaoError]],
    *,
    later: list[tuple[Staged, stepup.StepUpPass]] | None = None,
) -> list[tuple[Staged, Approve]]:
    """Decide the orders in turn over the running books (`decide_batch`). An approval that needs fresh
    proof spends its order's Step-Up proof then (a proof that does not hold refuses that order alone);
    without one it is answered `step_up_required` after the batch. A Step-Up header on a payment that
    needs no proof is ignored, as it always was. The books move only for what is admitted. Declines
    are in memory (added to `refused`): nothing is rolled back for them. With `later` (an order
    alone), its proof is spent only once the ledger has taken the payment (`_spend_later`): a ledger
    refusal, recorded as a failed payment, leaves the proof unspent."""
    order_of = {id(item.request): item for item in staged}
    approved: list[tuple[Staged, Approve]] = []
    settled: set[int] = set()  # admitted, or refused by its proof

    def admit(decision: Approve) -> bool:
        item = order_of[id(decision.request)]
        order = item.order
        if decision.step_up:
            if order.step_up is None:
                return False
            settled.add(id(item))
            binding = stepup.binding_of(Operation.PAYMENT, order.flow.step_up_params(item))
            proof = stepup.StepUpPass(
                decision.request.payer_user_id, order.step_up, binding, order.principal.session_id
            )
            if later is not None:
                later.append((item, proof))
                approved.append((item, decision))
                return True
            try:
                stepup.consume(ctx, conn, proof)
            except QianbaoError as error:  # a conditional update that changed nothing
                batch.refuse(batch.index(item), error)
                return False
        settled.add(id(item))
        approved.append((item, decision))
        return True

    for decision in decide_batch(
        [item.request for item in staged], books, ctx.step_up_policy, now, admit=admit
    ):
        item = order_of[id(decision.request)]
        i = batch.index(item)
        if isinstance(decision, Decline):
            if item.refusal is not None and decision.finding.code == "recipient_not_found":
                refused.append((item, item.refusal))  # the payer's own checks passed: the code refuses
            else:
                currency = decision.request.currency
                refused.append((item, error_for(decision.finding, currency, reveal=decision.own)))
        elif id(item) not in settled:
            batch.results[i] = NeedsStepUp(decision.step_up, item.order.flow.step_up_params(item))
            if item.order.http is not None:
                batch.unbound.append(item.order.http.claim.id)
    return approved


def _refused(
    ctx: IdentityContext, conn: Connection, batch: Batch, refused: Sequence[tuple[Staged, QianbaoError]]
) -> list[OutboxEvent]:
    """The decision's declines, answered as the check before step-up always was: bound to the key, and
    recorded only where the flow keeps something for them (a held payment's confirmation declined
    releases the hold and fails the payment)."""
    events: list[OutboxEvent] = []
    for item, error in refused:
        answered, caused = item.order.flow.refused(ctx, conn, item, error)
        batch.refuse(batch.index(item), answered)
        events += caused
    return events


def _spend_later(
    ctx: IdentityContext,
    conn: Connection,
    proofs: Sequence[tuple[Staged, stepup.StepUpPass]],
    paid: Sequence[tuple[Staged, Approve]],
) -> None:
    """An order alone spends its proof once the ledger took it; a proof that does not hold raises,
    and the order's whole transaction (its ledger transfer too) rolls back."""
    taken = {id(item) for item, _decision in paid}
    for item, proof in proofs:
        if id(item) in taken:
            stepup.consume(ctx, conn, proof)


def _apply_ledger(
    ctx: IdentityContext,
    conn: Connection,
    batch: Batch,
    approved: list[tuple[Staged, Approve]],
    *,
    alone: bool,
) -> tuple[list[tuple[Staged, Approve]], list[tuple[Staged, Approve, QianbaoError]]]:
    """Every approved chain in one ledger call, each chain its own linked group. What the ledger
    refused (a batch of one only: in a larger batch that means retrying alone) is declined: recorded as
    a failed payment (or transfer, or refund) with its reference."""
    declined: list[tuple[Staged, Approve, QianbaoError]] = []
    specs: list[TransferSpec] = []
    ends: list[int] = []
    spans: list[tuple[int, int]] = []
    for item, decision in approved:
        chain = item.order.flow.chain(item, decision)
        spans.append((len(specs), len(chain)))
        specs.extend(chain)
        if chain:  # a wallet closed empty moves nothing
            ends.append(len(specs) - 1)
    if not specs:
        return approved, declined
    results = ctx.ledger.apply_in(conn, specs, frozenset(ends))
    kept: list[tuple[Staged, Approve]] = []
    for (item, decision), (start, size) in zip(approved, spans, strict=True):
        mine = results[start : start + size]
        if all(r.code is ResultCode.OK for r in mine):
            kept.append((item, decision))
            continue
        if not alone:  # the decision over locked books did not foresee it: decide each alone
            raise _Retry("the ledger refused an approved chain")
        i = batch.index(item)
        first = mine[0].code
        if first is ResultCode.EXISTS:  # an earlier attempt with the same ledger id committed it
            ledger_id = item.order.ledger_id
            record = item.order.flow.existing(ctx, conn, [ledger_id]).get(ledger_id)
            if record is not None:
                _answer_record(conn, batch, i, record, replayed=True)
            else:  # the ledger holds it, its record does not (yet): nothing to answer from
                batch.refuse(i, IdempotencyKeyInUse("this payment is being recorded; try again shortly"))
            continue
        failing = next(
            (r.code for r in mine if r.code not in (ResultCode.OK, ResultCode.LINKED_EVENT_FAILED)), first
        )
        if failing is ResultCode.EXISTS_WITH_DIFFERENT_FIELDS:
            batch.refuse(
                i,
                IdempotencyKeyReused(f"this Idempotency-Key was used for a different {item.order.flow.what}"),
            )
            continue
        currency = item.request.currency
        declined.append((item, decision, error_for(ledger_finding(failing), currency, reveal=decision.own)))
    return kept, declined


def _records(
    ctx: IdentityContext,
    conn: Connection,
    batch: Batch,
    approved: Sequence[tuple[Staged, Approve]],
    declined: Sequence[tuple[Staged, Approve, QianbaoError]],
    books_of: Mapping[str, Books],
    now: int,
) -> list[OutboxEvent]:
    """The records of the paid and the declined orders, per flow; the hooks; the answers."""
    written: list[tuple[Staged, Any]] = []
    for item, decision in approved:
        record = item.order.flow.record(item, decision, now, None)
        written.append((item, record))
    refused: list[tuple[Staged, QianbaoError, Any]] = []
    for item, decision, error in declined:
        record = item.order.flow.record(item, decision, now, error)
        written.append((item, record))
        refused.append((item, error, record))
    events: list[OutboxEvent] = []
    by_flow: dict[int, list[tuple[Staged, Any]]] = {}
    for item, record in written:
        by_flow.setdefault(id(item.order.flow), []).append((item, record))
    for group in by_flow.values():
        events += group[0][0].order.flow.write(ctx, conn, group)
    for item, record in written[: len(approved)]:
        if item.order.hook is not None:
            item.order.hook(conn, record)  # raising fails the batch: the order is then tried alone
        _answer_record(
            conn, batch, batch.index(item), record, replayed=False, seen=item.order.flow.seen(item)
        )
    for item, error, record in refused:
        i = batch.index(item)
        answered = item.order.flow.declined(item, error, record, books_of[item.request.currency])
        batch.results[i] = answered
        if item.order.http is not None:
            batch.bind(i, *item.order.http.render_error(answered), sealed=False)
    return events


__all__ = ["pipeline", "process", "submit", "submit_async"]

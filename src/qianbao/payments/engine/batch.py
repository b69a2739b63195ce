"""One attempt at a batch of the payment pipeline: what each order is answered, and its
Idempotency-Key side: the claims (replays, reused and busy keys, a key repeated in the batch) and the
answers bound to the keys before the batch's COMMIT (engine/pipeline.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection

from qianbao.errors import IdempotencyKeyInUse, IdempotencyKeyReused, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.payments.engine.orders import Answered, Done, NeedsStepUp, Order, Outcome, Staged
from qianbao.store.idempotency import (
    ABANDONED_AFTER_US,
    UNBOUND_CODES,
    Answer,
    KeyClaim,
    KeyId,
    StoredKey,
    claim_keys,
    release_keys,
    seal,
    store_answers,
    take_over,
    unseal,
)

Result = Outcome | BaseException


class Batch:
    """One attempt's state: what each order is answered, and what the batch writes."""

    def __init__(self, orders: Sequence[Order]) -> None:
        self.orders = orders
        self.results: list[Result | None] = [None] * len(orders)
        self.unbound: list[KeyId] = []
        self.answers: list[tuple[Answer, bool]] = []  # and whether to seal it
        self.followers: dict[int, int] = {}  # a repeated key in the batch: index → the first's index
        self._at = {id(order): i for i, order in enumerate(orders)}

    def index(self, staged: Staged) -> int:
        return self._at[id(staged.order)]

    def refuse(self, i: int, error: QianbaoError) -> None:
        """Refused before anything was tried: unbound keys are freed, bound ones keep the problem."""
        self.results[i] = error
        http = self.orders[i].http
        if http is None:
            return
        if error.code in UNBOUND_CODES:
            self.unbound.append(http.claim.id)
        else:
            self.bind(i, *http.render_error(error), sealed=False)

    def bind(self, i: int, status: int, payload: dict[str, Any], *, sealed: bool) -> None:
        http = self.orders[i].http
        assert http is not None  # noqa: S101 - only HTTP orders are bound
        self.answers.append((Answer(http.claim.scope, http.claim.key, status, payload), sealed))


def claim(ctx: IdentityContext, conn: Connection, batch: Batch, now: int) -> None:
    """Claim every HTTP key of the batch at once; answer replays, reused and busy keys."""
    firsts: dict[KeyId, int] = {}
    claims: list[KeyClaim] = []
    for i, order in enumerate(batch.orders):
        if order.http is None:
            continue
        key_id = order.http.claim.id
        if key_id in firsts:  # the same key twice in one batch: the later ones follow the first
            batch.followers[i] = firsts[key_id]
            continue
        firsts[key_id] = i
        claims.append(order.http.claim)
    stored = claim_keys(conn, claims, now)
    for key_id, row in stored.items():
        i = firsts[key_id]
        answer = stored_answer(ctx, conn, batch.orders[i], row, now)
        if answer is not None:  # else: an abandoned claim, taken over: the order runs
            batch.results[i] = answer
    # A repeat of a key that was stored already is answered from the stored row, by its own body.
    for i, j in list(batch.followers.items()):
        found = next((row for key_id, row in stored.items() if firsts[key_id] == j), None)
        if found is None:
            continue
        del batch.followers[i]
        if found.in_progress:
            batch.results[i] = IdempotencyKeyInUse(
                "a request with this Idempotency-Key is still being processed"
            )
        else:
            batch.results[i] = stored_answer(ctx, conn, batch.orders[i], found, now)


def stored_answer(
    ctx: IdentityContext, conn: Connection, order: Order, row: StoredKey, now: int
) -> Result | None:
    """The answer for a key found claimed already (None: it was abandoned, and is now this order's)."""
    http = order.http
    assert http is not None  # noqa: S101 - only HTTP orders have claims
    if row.fingerprint != http.claim.fingerprint:
        return IdempotencyKeyReused("this Idempotency-Key was used with a different request")
    if not row.in_progress:
        return Answered(row.status, unseal(ctx.keys, row.response))
    # Claimed by a request outside the pipeline that is still running, unless it was abandoned.
    if now - row.created_at < ABANDONED_AFTER_US:
        return IdempotencyKeyInUse("a request with this Idempotency-Key is still being processed")
    if take_over(conn, http.claim.id, row.created_at, now):
        return None
    return IdempotencyKeyInUse("a request with this Idempotency-Key is still being processed")


def follow(batch: Batch, i: int, j: int) -> Result:
    """A repeat of an earlier order's key in the same batch: the same answer, as a replay would give."""
    first, mine = batch.orders[j], batch.orders[i]
    assert first.http is not None and mine.http is not None  # noqa: S101 - followers are HTTP orders
    if first.http.claim.fingerprint != mine.http.claim.fingerprint:
        return IdempotencyKeyReused("this Idempotency-Key was used with a different request")
    result = batch.results[j]
    if isinstance(result, NeedsStepUp) or (isinstance(result, QianbaoError) and result.code in UNBOUND_CODES):
        return IdempotencyKeyInUse("a request with this Idempotency-Key is still being processed")
    if isinstance(result, Done) and result.answer is not None:
        return Answered(*result.answer)
    if isinstance(result, QianbaoError):
        return Answered(*mine.http.render_error(result))
    return result if result is not None else RuntimeError("an order was not answered")


def store(ctx: IdentityContext, conn: Connection, batch: Batch) -> None:
    """The answers, bound to their keys before the batch's COMMIT (sealed: they hold personal data)."""
    store_answers(
        conn, [replace(a, payload=seal(ctx.keys, a.payload)) if sealed else a for a, sealed in batch.answers]
    )
    release_keys(conn, batch.unbound)

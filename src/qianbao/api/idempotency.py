"""`Idempotency-Key` for POSTs that create something (API.md, Conventions).

The first request with a key claims it (a row marked in progress), runs, and stores its status and body.
Replays with the same body get the stored answer; with a different body, 409 `idempotency_key_reused`;
while the first is still running, 409 `idempotency_key_in_use`. Refusals before execution
(`unauthenticated`, `forbidden`, `validation_error`, `rate_limited`, `step_up_required`…) release the key
so a retry runs anew; business outcomes (success, or a decline such as `insufficient_funds`) are bound.
Money operations additionally derive their ledger transfer ids from the key, so even a crash between the
ledger commit and the stored answer cannot pay twice.

Answers that carry a secret (an API key's `secret`) or personal data are stored *sealed*: encrypted with
the key ring (`sealed=True`), and opened again for a replay. Records live 48 hours (housekeeping), so key
rotation need not re-encrypt them: retired data keys stay readable.

A secret is shown once, to the caller that proved itself for it (`shown_once`). Keys are scoped to the
user, not to the session, so without this any other session of the same user (a new, untrusted device
that never passed the step-up) could replay the create and read the secret. The stored answer therefore
remembers who ran the work: the session (or, for an API key, the key itself), as a keyed digest. That
caller's replay gets the secret again, so a retry after a lost response does not lose it; any other
caller's replay gets the same status and object with the secret fields `null`. Not a problem: the object
exists and is bound to the key, and a client told "failed" would create a second one; with the id it can
rotate or revoke instead.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, update

from qianbao import invalid
from qianbao.api.problems import problem
from qianbao.clock import Clock
from qianbao.errors import IdempotencyKeyInUse, IdempotencyKeyReused, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind
from qianbao.payments.engine.orders import Answered, Done, HttpKey, Order, Render
from qianbao.payments.engine.service import submit_order_async
from qianbao.security.keyring import KeyRing
from qianbao.store.database import Database
from qianbao.store.idempotency import (
    ABANDONED_AFTER_US,
    BY_KEY,
    IN_PROGRESS,
    MAX_KEY_LENGTH,
    SEAL_CONTEXT,
    SEALED,
    STORE,
    UNBOUND_CODES,
    KeyClaim,
    claim_statement,
)
from qianbao.store.idempotency_tables import idempotency_keys

SHOWN_TO = "shown_to"  # beside SEALED: the keyed digest of the caller a shown-once secret belongs to
SHOWN_TO_INDEX = "idempotency.shown_to"


# For the OpenAPI description of a shown-once field.
SHOWN_ONCE_NOTE = (
    "shown once: null when another session (or API key) replays the request with the same "
    "Idempotency-Key; only the caller whose request created it sees it again"
)


@dataclass(frozen=True, slots=True)
class ShownOnce:
    """The fields of an answer that only `caller` (who ran the work) sees again on a replay."""

    fields: tuple[str, ...]
    caller: str | None


def shown_once(principal: Principal, *fields: str) -> ShownOnce:
    """Secret `fields` shown to this caller only: a session (the one that met the step-up: challenges are
    bound to their session), or an API key. A principal with neither is nobody: its replays never show
    the secret."""
    if principal.kind is PrincipalKind.API_KEY:
        caller: str | None = principal.scope
    else:
        caller = None if principal.session_id is None else f"session:{principal.session_id}"
    return ShownOnce(fields, caller)


def request_fingerprint(keys: KeyRing, method: str, path: str, body: bytes) -> str:
    """Same request = same method, path and JSON body (whitespace and key order do not matter).

    Keyed (the blind-index HMAC): a plain hash of a body holding a phone number could be reversed by
    trying every number, from a database dump."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
    except (ValueError, UnicodeDecodeError):
        canonical = body.decode("latin-1")
    return keys.digest("idempotency", f"{method} {path}\n{canonical}")


def run_idempotent(
    ctx: IdentityContext,
    request: Request,
    *,
    scope: str,
    key: str | None,
    body: bytes,
    work: Callable[[], tuple[int, dict[str, Any]]],
    sealed: bool = False,
    once: ShownOnce | None = None,
) -> JSONResponse:
    """Run `work` (returning status and JSON body) at most once per (scope, key). With `sealed`, the
    stored answer is encrypted (it holds a secret or personal data). With `once` (implies `sealed`), its
    secret fields are replayed only to the caller that ran the work (see the module's docstring)."""
    db, clock = ctx.db, ctx.clock
    sealed_with = ctx.keys if sealed or once is not None else None
    if key is None:
        status, payload = work()
        return JSONResponse(payload, status_code=status)
    _check_key(key)
    fingerprint = request_fingerprint(ctx.keys, request.method, request.url.path, body)
    stored = _claim(db, clock, scope, key, fingerprint)
    if stored is not None:
        status, payload = stored
        if sealed_with is not None and isinstance(payload, dict) and SEALED in payload:
            shown_to = payload.get(SHOWN_TO)
            payload = json.loads(sealed_with.decrypt(payload[SEALED], context=SEAL_CONTEXT))
            if once is not None and not _same_caller(ctx, once, shown_to):
                payload = {name: None if name in once.fields else v for name, v in payload.items()}
        if status >= 400:
            return JSONResponse(payload, status_code=status, media_type="application/problem+json")
        return JSONResponse(payload, status_code=status)
    try:
        status, payload = work()
    except QianbaoError as exc:
        if exc.code in UNBOUND_CODES:
            _release(db, scope, key)
            raise
        response = problem(request, exc.code, exc.detail, user_text=exc.user_text, **exc.extra)
        _store(db, scope, key, response.status_code, json.loads(bytes(response.body)))
        return response
    except BaseException:
        _release(db, scope, key)
        raise
    stored_payload = payload
    if sealed_with is not None:
        stored_payload = {SEALED: sealed_with.encrypt(json.dumps(payload), context=SEAL_CONTEXT)}
        if once is not None and once.caller is not None:
            stored_payload[SHOWN_TO] = ctx.keys.digest(SHOWN_TO_INDEX, once.caller)
    _store(db, scope, key, status, stored_payload)
    return JSONResponse(payload, status_code=status)


def pipeline_key(
    ctx: IdentityContext,
    request: Request,
    *,
    scope: str,
    key: str | None,
    body: bytes,
    render: Render,
    sealed: bool = True,
) -> HttpKey | None:
    """The Idempotency-Key of a payment for the payment pipeline, which claims it and stores its answer
    in the payment's own batch transaction (`render`: a record's answer). None without a key."""
    if key is None:
        return None
    _check_key(key)

    def render_error(error: QianbaoError) -> tuple[int, dict[str, Any]]:
        response = problem(request, error.code, error.detail, user_text=error.user_text, **error.extra)
        return response.status_code, json.loads(bytes(response.body))

    fingerprint = request_fingerprint(ctx.keys, request.method, request.url.path, body)
    return HttpKey(KeyClaim(scope, key, fingerprint), sealed, render, render_error)


def pipeline_response(outcome: Done | Answered, render: Render) -> JSONResponse:
    """A payment's answer: as stored with its key (a replay, or a bound decline), or of its record."""
    if isinstance(outcome, Answered):
        if outcome.problem:
            return JSONResponse(
                outcome.payload, status_code=outcome.status, media_type="application/problem+json"
            )
        return JSONResponse(outcome.payload, status_code=outcome.status)
    status, payload = outcome.answer if outcome.answer is not None else render(outcome.record, None, None)
    return JSONResponse(payload, status_code=status)


async def answer_order(ctx: IdentityContext, order: Order, render: Render) -> JSONResponse:
    """Submit an order to the payment pipeline and answer it. With a key the answer was rendered in the
    batch; without one, a `render` that reads the database (the wallet, the merchant, the request) runs
    on a thread, after the batch, never on the event loop."""
    outcome = await submit_order_async(ctx, order)
    if isinstance(outcome, Done) and outcome.answer is None:
        return await anyio.to_thread.run_sync(pipeline_response, outcome, render)
    return pipeline_response(outcome, render)


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise invalid.because(
            "idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            params={"max": MAX_KEY_LENGTH},
        )


def _same_caller(ctx: IdentityContext, once: ShownOnce, shown_to: object) -> bool:
    """Is the replaying caller the one the secret was shown to? An answer stored without a caller (before
    this rule, or for nobody) shows its secret to no one."""
    if once.caller is None or not isinstance(shown_to, str):
        return False
    return hmac.compare_digest(ctx.keys.digest(SHOWN_TO_INDEX, once.caller), shown_to)


def _claim(db: Database, clock: Clock, scope: str, key: str, fingerprint: str) -> tuple[int, Any] | None:
    now = clock.now_us()
    for _ in range(3):
        # The usual case, a new key, is one statement: claim it unless a row exists (then read that row).
        with db.write() as conn:
            claimed = conn.execute(
                claim_statement(conn.dialect.name),
                {"scope": scope, "key": key, "request_hash": fingerprint, "created_at": now},
            ).first()
        if claimed is not None:
            return None
        with db.read() as conn:
            row = conn.execute(BY_KEY, {"scope": scope, "key": key}).first()
        if row is None:
            continue  # released meanwhile (a refusal before execution): claim it again
        if row.request_hash != fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
        if row.status_code != IN_PROGRESS:
            return int(row.status_code), row.response
        if now - row.created_at < ABANDONED_AFTER_US:
            raise IdempotencyKeyInUse("a request with this Idempotency-Key is still being processed")
        with db.write() as conn:
            taken = conn.execute(
                update(idempotency_keys)
                .where(
                    idempotency_keys.c.scope == scope,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.created_at == row.created_at,
                )
                .values(created_at=now)
            )
        if taken.rowcount == 1:
            return None
    raise IdempotencyKeyInUse("a request with this Idempotency-Key is still being processed")


def _store(db: Database, scope: str, key: str, status: int, payload: dict[str, Any]) -> None:
    with db.write() as conn:
        conn.execute(STORE, {"w_scope": scope, "w_key": key, "status_code": status, "response": payload})


def _release(db: Database, scope: str, key: str) -> None:
    with db.write() as conn:
        conn.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.scope == scope,
                idempotency_keys.c.key == key,
                idempotency_keys.c.status_code == IN_PROGRESS,
            )
        )

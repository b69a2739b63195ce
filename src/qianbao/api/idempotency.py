"""`Idempotency-Key` for POSTs that create something (API.md, Conventions).

The first request with a key claims it (a row marked in progress), runs, and stores its status and body.
Replays with the same body get the stored answer; with a different body, 409 `idempotency_key_reused`;
while the first is still running, 409 `idempotency_key_in_use`. Refusals before execution
(`unauthenticated`, `forbidden`, `validation_error`, `rate_limited`, `step_up_required`…) release the key
so a retry runs anew; business outcomes (success, or a decline such as `insufficient_funds`) are bound.
Money operations additionally derive their ledger transfer ids from the key, so even a crash between the
ledger commit and the stored answer cannot pay twice.

Answers that carry a secret (an API key's `secret`) are stored *sealed*: encrypted with the key ring like
personal data (`sealed=True`), and opened again for a replay. Records live 48 hours (housekeeping), so
key rotation need not re-encrypt them: retired data keys stay readable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import Executable, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from qianbao import invalid
from qianbao.api.problems import problem
from qianbao.clock import Clock
from qianbao.errors import Conflict, IdempotencyKeyReused, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.security.keyring import KeyRing
from qianbao.store.database import Database
from qianbao.store.idempotency_tables import idempotency_keys

IN_PROGRESS = 0
SEALED = "sealed"
SEAL_CONTEXT = "idempotency_keys.response"
# A claim this old was abandoned by a crashed worker; money paths are safe to re-run (ledger ids).
ABANDONED_AFTER_US = 60_000_000
MAX_KEY_LENGTH = 255
# Codes that mean "refused before anything was attempted": not bound to the key.
UNBOUND_CODES = frozenset(
    {
        "unauthenticated",
        "forbidden",
        "validation_error",
        "rate_limited",
        "step_up_required",
        "service_unavailable",
        "internal_error",
        "not_found",
        "idempotency_key_in_use",
        "challenge_invalid",
        "verification_failed",
        "weak_password",
        "weak_pin",
        "signature_invalid",
        "signature_expired",
        "signature_malformed",
    }
)


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


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
) -> JSONResponse:
    """Run `work` (returning status and JSON body) at most once per (scope, key). With `sealed`, the
    stored answer is encrypted (it holds a secret or personal data)."""
    db, clock = ctx.db, ctx.clock
    sealed_with = ctx.keys if sealed else None
    if key is None:
        status, payload = work()
        return JSONResponse(payload, status_code=status)
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise invalid.because(
            "idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            params={"max": MAX_KEY_LENGTH},
        )
    fingerprint = request_fingerprint(ctx.keys, request.method, request.url.path, body)
    stored = _claim(db, clock, scope, key, fingerprint)
    if stored is not None:
        status, payload = stored
        if sealed_with is not None and isinstance(payload, dict) and SEALED in payload:
            payload = json.loads(sealed_with.decrypt(payload[SEALED], context=SEAL_CONTEXT))
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
    _store(db, scope, key, status, stored_payload)
    return JSONResponse(payload, status_code=status)


def _claim(db: Database, clock: Clock, scope: str, key: str, fingerprint: str) -> tuple[int, Any] | None:
    now = clock.now_us()
    for _ in range(3):
        # The usual case, a new key, is one statement: claim it unless a row exists (then read that row).
        with db.write() as conn:
            claimed = conn.execute(
                _claim_statement(conn.dialect.name),
                {"scope": scope, "key": key, "request_hash": fingerprint, "created_at": now},
            ).first()
        if claimed is not None:
            return None
        with db.read() as conn:
            row = conn.execute(_BY_KEY, {"scope": scope, "key": key}).first()
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


_BY_KEY = select(idempotency_keys).where(
    idempotency_keys.c.scope == bindparam("scope"), idempotency_keys.c.key == bindparam("key")
)


@cache
def _claim_statement(dialect: str) -> Executable:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: a row back means the key is ours. Built once per dialect
    (every idempotent POST runs it)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(idempotency_keys)
        .values(
            scope=bindparam("scope"),
            key=bindparam("key"),
            request_hash=bindparam("request_hash"),
            status_code=IN_PROGRESS,
            response={},
            created_at=bindparam("created_at"),
        )
        .on_conflict_do_nothing(index_elements=[idempotency_keys.c.scope, idempotency_keys.c.key])
        .returning(idempotency_keys.c.created_at)
    )


_STORE = (
    update(idempotency_keys)
    .where(idempotency_keys.c.scope == bindparam("w_scope"), idempotency_keys.c.key == bindparam("w_key"))
    .values(status_code=bindparam("status_code"), response=bindparam("response"))
)


def _store(db: Database, scope: str, key: str, status: int, payload: dict[str, Any]) -> None:
    with db.write() as conn:
        conn.execute(_STORE, {"w_scope": scope, "w_key": key, "status_code": status, "response": payload})


def _release(db: Database, scope: str, key: str) -> None:
    with db.write() as conn:
        conn.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.scope == scope,
                idempotency_keys.c.key == key,
                idempotency_keys.c.status_code == IN_PROGRESS,
            )
        )

"""Idempotency-Key records, set-based: claim many keys at once, store many answers at once.

A key is claimed by inserting its row marked in progress (`IN_PROGRESS`); the answer then replaces
the mark. Two ways use this:

* the payment pipeline claims every key of a batch in ONE statement inside the batch's transaction
  and stores the answers before the same COMMIT, so the in-progress mark is never visible to anyone:
  a concurrent claim of the same key (another process) waits on the primary key until the batch
  commits, then finds the answer; a crash leaves nothing;
* `api.idempotency.run_idempotent` (the other POSTs) claims, runs and stores in separate
  transactions: its mark is visible while the work runs (`idempotency_key_in_use`) and a claim older
  than `ABANDONED_AFTER_US` was left by a crashed worker and may be taken over.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Executable, bindparam, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from qianbao.store.idempotency_tables import idempotency_keys

if TYPE_CHECKING:
    from qianbao.security.keyring import KeyRing

IN_PROGRESS = 0
MAX_KEY_LENGTH = 255
# A visible claim this old was abandoned by a crashed worker; money paths are safe to re-run (ledger ids).
ABANDONED_AFTER_US = 60_000_000
SEALED = "sealed"
SEAL_CONTEXT = "idempotency_keys.response"
# Codes that mean "refused before anything was attempted": not bound to the key, so a retry runs anew.
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

KeyId = tuple[str, str]  # (scope, key)


@dataclass(frozen=True, slots=True)
class KeyClaim:
    scope: str
    key: str
    fingerprint: str  # the keyed digest of the request (api.idempotency.request_fingerprint)

    @property
    def id(self) -> KeyId:
        return (self.scope, self.key)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key's row found already there when claiming."""

    fingerprint: str
    status: int  # IN_PROGRESS while a run_idempotent request runs
    response: Any
    created_at: int

    @property
    def in_progress(self) -> bool:
        return self.status == IN_PROGRESS


@dataclass(frozen=True, slots=True)
class Answer:
    scope: str
    key: str
    status: int
    payload: Mapping[str, Any]


@cache
def claim_statement(dialect: str) -> Executable:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: a row back means the key is ours. Built once per dialect;
    executed with a list of parameter sets it claims many keys (SQLAlchemy sends one multi-row INSERT)."""
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
        .returning(idempotency_keys.c.scope, idempotency_keys.c.key)
    )


BY_KEY = select(idempotency_keys).where(
    idempotency_keys.c.scope == bindparam("scope"), idempotency_keys.c.key == bindparam("key")
)

STORE = (
    update(idempotency_keys)
    .where(idempotency_keys.c.scope == bindparam("w_scope"), idempotency_keys.c.key == bindparam("w_key"))
    .values(status_code=bindparam("status_code"), response=bindparam("response"))
)


def claim_keys(conn: Connection, claims: Sequence[KeyClaim], now_us: int) -> dict[KeyId, StoredKey]:
    """Claim every key in `claims` (distinct) in the caller's transaction: two statements for any number
    of keys. Returns the rows that were there already (their keys are not claimed). Keys are inserted in
    sorted order, so two batches claiming overlapping keys wait on each other in one order, never in a
    cycle."""
    if not claims:
        return {}
    ordered = sorted(claims, key=lambda c: c.id)
    params = [
        {"scope": c.scope, "key": c.key, "request_hash": c.fingerprint, "created_at": now_us} for c in ordered
    ]
    claimed = {(r.scope, r.key) for r in conn.execute(claim_statement(conn.dialect.name), params)}
    taken = [c.id for c in ordered if c.id not in claimed]
    if not taken:
        return {}
    rows = conn.execute(
        select(idempotency_keys).where(tuple_(idempotency_keys.c.scope, idempotency_keys.c.key).in_(taken))
    )
    return {
        (r.scope, r.key): StoredKey(r.request_hash, int(r.status_code), r.response, int(r.created_at))
        for r in rows
    }


def store_answers(conn: Connection, answers: Sequence[Answer]) -> None:
    """Bind answers to their claimed keys (one executemany)."""
    if answers:
        conn.execute(
            STORE,
            [
                {"w_scope": a.scope, "w_key": a.key, "status_code": a.status, "response": dict(a.payload)}
                for a in answers
            ],
        )


def release_keys(conn: Connection, keys: Sequence[KeyId]) -> None:
    """Free claims whose request was refused before anything was attempted (a retry runs anew)."""
    if keys:
        conn.execute(
            delete(idempotency_keys).where(
                tuple_(idempotency_keys.c.scope, idempotency_keys.c.key).in_(list(keys)),
                idempotency_keys.c.status_code == IN_PROGRESS,
            )
        )


def take_over(conn: Connection, key_id: KeyId, claimed_at: int, now_us: int) -> bool:
    """Take a visible claim abandoned by a crashed worker (only if nobody took it meanwhile)."""
    taken = conn.execute(
        update(idempotency_keys)
        .where(
            idempotency_keys.c.scope == key_id[0],
            idempotency_keys.c.key == key_id[1],
            idempotency_keys.c.created_at == claimed_at,
        )
        .values(created_at=now_us)
    )
    return taken.rowcount == 1


def seal(keys: KeyRing, payload: Mapping[str, Any]) -> dict[str, Any]:
    """An answer holding personal data, encrypted for storage."""
    return {SEALED: keys.encrypt(json.dumps(payload), context=SEAL_CONTEXT)}


def unseal(keys: KeyRing, payload: Any) -> Any:
    """A stored answer as it was given (opened if it was sealed)."""
    if isinstance(payload, dict) and SEALED in payload:
        return json.loads(keys.decrypt(payload[SEALED], context=SEAL_CONTEXT))
    return payload

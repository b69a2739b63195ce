"""API keys for merchants and partners: scoped, owned by a user, shown once, used to sign requests.

A key is an id (`key_…`, public: it travels in the `Qianbao-Key` header) and a secret (`qbk_` + 32 random
bytes, URL-safe base64), shown once when the key is created. Requests are signed with HMAC-SHA256 as
`qianbao.security.request_signing` describes: the canonical request binds the method, path, raw query,
timestamp, nonce and the body's SHA-256, and the timestamp must be within 5 minutes of the server's clock.

Why the secret is stored encrypted as well as hashed: HMAC is symmetric, so to check a signature the server
must compute the same MAC and needs the secret itself. A hash cannot be the HMAC key (if the client signed
with the hash instead, the hash would *be* the secret, and storing it would store the secret in clear). So
the secret is kept AES-GCM-encrypted under the data key (`secret_cipher`, like personal data; key rotation
re-encrypts it) and decrypted only to verify a signature. `secret_hash` (SHA-256) is unique and lets a
leaked secret (found by secret scanning, pasted in a ticket) be matched to its key without decrypting any.

Replays: inside the window the (key, nonce) pair is remembered in `api_nonces`; a second request with the
same pair is refused (`signature_replayed`). A nonce must be kept as long as its timestamp could still be
accepted: a timestamp up to 5 minutes in the future stays valid until 5 minutes after that, so rows are
purged (now and then, by the requests themselves) only once they are twice the window old.

Rotation: the new key has the same name and scopes; the old one keeps working for
`settings.api_key_overlap_s` (its `expires_at`), then stops. `replaced_by` links them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from qianbao import invalid
from qianbao.errors import Conflict, NotFound, Unauthenticated
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.errors import SignatureReplayed
from qianbao.identity.model import Operation, Principal, PrincipalKind, RequestInfo, StepUpFacts
from qianbao.identity.tables import api_keys, api_nonces, users
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.request_signing import (
    REPLAY_WINDOW_S,
    SignatureInvalid,
    parse_signature_headers,
    verify_request_signature,
)

SCOPES = ("read", "payments:write", "refunds:write", "webhooks:manage")
SECRET_PREFIX = "qbk_"  # noqa: S105 - a public prefix, not a secret
SECRET_CONTEXT = context("api_keys", "secret_cipher")
MAX_NAME = 64
MAX_ACTIVE_KEYS = 20
# Like sessions: `last_used_at` is refreshed at most once a minute, not on every request.
TOUCH_INTERVAL_US = 60_000_000
NONCE_RETENTION_US = 2 * REPLAY_WINDOW_S * 1_000_000
# One request in this many also deletes nonces past their retention (no sweeper needed).
PURGE_ONE_IN = 64
_KEY_ID = re.compile(r"key_[0-9a-z]{26}")


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    id: str
    owner_user_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None
    replaced_by: str | None

    def status(self, now_us: int) -> str:
        """active, expiring (rotated, still in its overlap), expired or revoked."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            return "expired" if self.expires_at <= now_us else "expiring"
        return "active"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKeyView
    secret: str  # shown once


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def clean_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME or not name.isprintable():
        raise invalid.text_length("name", MAX_NAME, printable=True)
    return name.strip()


def clean_scopes(scopes: object) -> tuple[str, ...]:
    if not isinstance(scopes, list | tuple) or not scopes:
        raise invalid.only_from("scopes", SCOPES, f"scopes must be a non-empty list from {', '.join(SCOPES)}")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise invalid.only_from(
            "scopes",
            SCOPES,
            f"unknown scope(s); allowed: {', '.join(SCOPES)}",
            unknown=[str(s) for s in unknown],
        )
    return tuple(s for s in SCOPES if s in scopes)  # canonical order, no duplicates


def _view(row: Any) -> ApiKeyView:
    return ApiKeyView(
        id=row.id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        replaced_by=row.replaced_by,
    )


def _actor(principal: Principal, info: RequestInfo) -> audit.Actor:
    return audit.Actor(
        principal.kind.value,
        principal.id,
        ip=info.ip,
        device_id=principal.device_id,
        session_id=principal.session_id,
    )


def _owner(principal: Principal) -> str:
    if principal.kind is not PrincipalKind.USER or principal.user_id is None:
        raise invalid.needs_user()
    return principal.user_id


def _active_count(conn: Connection, user_id: str, now: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(api_keys)
            .where(
                api_keys.c.owner_user_id == user_id,
                api_keys.c.revoked_at.is_(None),
                or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
            )
        ).scalar_one()
    )


def _step_up(
    ctx: IdentityContext, principal: Principal, params: Mapping[str, Any], header: str | None
) -> stepup.StepUpPass | None:
    facts = StepUpFacts(Operation.API_KEY_CREATE, device_trusted=principal.device_trusted)
    return stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.API_KEY_CREATE,
        params=params,
        reasons=ctx.step_up_policy.reasons(facts),
        step_up_header=header,
    )


def _insert_key(
    ctx: IdentityContext, conn: Connection, owner: str, name: str, scopes: Sequence[str], now: int
) -> CreatedKey:
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    values = {
        "id": key_id,
        "owner_user_id": owner,
        "name": name,
        "scopes": list(scopes),
        "secret_hash": secret_hash(secret),
        "secret_cipher": ctx.keys.encrypt(secret, context=SECRET_CONTEXT),
        "created_at": now,
        "expires_at": None,
        "revoked_at": None,
        "last_used_at": None,
        "replaced_by": None,
    }
    conn.execute(insert(api_keys).values(**values))
    view = ApiKeyView(key_id, owner, name, tuple(scopes), now, None, None, None, None)
    return CreatedKey(view, secret)


def create_key(
    ctx: IdentityContext,
    principal: Principal,
    *,
    name: object,
    scopes: object,
    info: RequestInfo,
    step_up_header: str | None,
) -> CreatedKey:
    """A new key for the signed-in user. A security change: it needs a fresh step-up proof."""
    owner = _owner(principal)
    clean = clean_name(name)
    wanted = clean_scopes(scopes)
    with ctx.db.read() as conn:
        if _active_count(conn, owner, ctx.now()) >= MAX_ACTIVE_KEYS:
            raise Conflict(f"at most {MAX_ACTIVE_KEYS} API keys can be active: revoke one first")
    proof = _step_up(ctx, principal, {"name": clean, "scopes": list(wanted)}, step_up_header)
    now = ctx.now()
    with ctx.uow() as uow:
        stepup.consume(ctx, uow.conn, proof)
        created = _insert_key(ctx, uow.conn, owner, clean, wanted, now)
        audit.record(
            uow.conn,
            now,
            "api_key.created",
            _actor(principal, info),
            subject_user_id=owner,
            details={"key_id": created.key.id, "name": clean, "scopes": list(wanted)},
        )
        uow.commit()
    return created


def list_keys(
    ctx: IdentityContext, principal: Principal, *, limit: int = 20, cursor: str | None = None
) -> tuple[list[ApiKeyView], str | None]:
    """The user's keys (never their secrets), newest first; the cursor is the last key id of a page."""
    owner = _owner(principal)
    query = select(api_keys).where(api_keys.c.owner_user_id == owner).order_by(api_keys.c.id.desc())
    if cursor:
        if not _KEY_ID.fullmatch(cursor):
            raise invalid.cursor()
        query = query.where(api_keys.c.id < cursor)
    with ctx.db.read() as conn:
        rows = conn.execute(query.limit(limit + 1)).all()
    keys = [_view(r) for r in rows[:limit]]
    return keys, keys[-1].id if len(rows) > limit and keys else None


def _own_key(conn: Connection, owner: str, key_id: str) -> Any:
    if not _KEY_ID.fullmatch(key_id):
        raise NotFound("no such API key")
    row = conn.execute(
        select(api_keys).where(api_keys.c.id == key_id, api_keys.c.owner_user_id == owner)
    ).first()
    if row is None:
        raise NotFound("no such API key")
    return row


def revoke_key(ctx: IdentityContext, principal: Principal, key_id: str, info: RequestInfo) -> None:
    """Revoke one of one's keys at once (404 for anyone else's). Revoking twice is a no-op."""
    owner = _owner(principal)
    now = ctx.now()
    with ctx.db.write() as conn:
        row = _own_key(conn, owner, key_id)
        if row.revoked_at is not None:
            return
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now))
        audit.record(
            conn,
            now,
            "api_key.revoked",
            _actor(principal, info),
            subject_user_id=owner,
            details={"key_id": key_id, "name": row.name},
        )


def rotate_key(
    ctx: IdentityContext, principal: Principal, key_id: str, info: RequestInfo, step_up_header: str | None
) -> CreatedKey:
    """A new key with the same name and scopes; the old one expires after the overlap period.

    Issuing a secret is a security change like creating a key, so rotation needs a step-up too."""
    owner = _owner(principal)
    now = ctx.now()
    with ctx.db.read() as conn:
        row = _own_key(conn, owner, key_id)
    if row.revoked_at is not None or row.replaced_by is not None:
        raise Conflict("this API key was revoked or already rotated")
    if row.expires_at is not None and row.expires_at <= now:
        raise Conflict("this API key has expired")
    proof = _step_up(ctx, principal, {"rotate": key_id}, step_up_header)
    now = ctx.now()
    overlap_end = now + ctx.settings.api_key_overlap_s * 1_000_000
    expires = overlap_end if row.expires_at is None else min(row.expires_at, overlap_end)
    with ctx.uow() as uow:
        stepup.consume(ctx, uow.conn, proof)
        created = _insert_key(ctx, uow.conn, owner, row.name, tuple(row.scopes), now)
        # Conditional: two concurrent rotations of one key cannot both succeed.
        done = uow.conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None), api_keys.c.replaced_by.is_(None))
            .values(expires_at=expires, replaced_by=created.key.id)
        )
        if done.rowcount != 1:
            raise Conflict("this API key was revoked or already rotated")
        audit.record(
            uow.conn,
            now,
            "api_key.rotated",
            _actor(principal, info),
            subject_user_id=owner,
            details={"key_id": key_id, "new_key_id": created.key.id, "old_expires_at_us": expires},
        )
        uow.commit()
    return created


def authenticate_signed_request(
    ctx: IdentityContext, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
) -> Principal | None:
    """The API key principal of a signed request; None when the request carries no signature headers.

    Order matters: the signature is checked before anything is written, so an unsigned or forged request
    costs one read; only authentic requests count against the key's rate limit and store their nonce."""
    signed = parse_signature_headers(headers)
    if signed is None:
        return None
    now = ctx.now()
    with ctx.db.read() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.id == signed.key_id)).first()
        owner_status = (
            None
            if row is None
            else conn.execute(select(users.c.status).where(users.c.id == row.owner_user_id)).scalar()
        )
    if row is None:
        raise SignatureInvalid("signature_invalid", "unknown API key, or the signature does not match")
    secret = ctx.keys.decrypt(row.secret_cipher, context=SECRET_CONTEXT)
    verify_request_signature(
        secret, signed, method=method, path=path, query=query, body=body, now_s=now / 1_000_000
    )
    # Past the signature: the caller holds the secret, so telling them why the key stopped is safe.
    if row.revoked_at is not None:
        raise Unauthenticated("this API key was revoked", reason="api_key_revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthenticated("this API key has expired (it was rotated)", reason="api_key_expired")
    if owner_status is None or owner_status == "closed":
        raise Unauthenticated("the account that owns this API key is closed", reason="owner_closed")
    ctx.limiter.hit("api_key_request", row.id)
    if not _remember_nonce(ctx, row.id, signed.nonce, now, touch=_due(row.last_used_at, now)):
        raise SignatureReplayed("this request (key and nonce) was already received: sign it with a new nonce")
    return Principal(
        kind=PrincipalKind.API_KEY,
        id=row.id,
        user_id=row.owner_user_id,
        scopes=frozenset(row.scopes),
        transport="hmac",
    )


def _due(last_used_at: int | None, now: int) -> bool:
    return last_used_at is None or now - last_used_at >= TOUCH_INTERVAL_US


def _remember_nonce(ctx: IdentityContext, key_id: str, nonce: str, now: int, *, touch: bool) -> bool:
    """Store the nonce; False if this key already used it (a replay)."""
    with ctx.db.write() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT DO NOTHING.
        inserted = conn.execute(
            dialect.insert(api_nonces)
            .values(key_id=key_id, nonce=nonce, seen_at=now)
            .on_conflict_do_nothing(index_elements=["key_id", "nonce"])
            .returning(api_nonces.c.nonce)
        ).first()
        if inserted is None:
            return False
        if touch:
            conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    or_(
                        api_keys.c.last_used_at.is_(None),
                        api_keys.c.last_used_at <= now - TOUCH_INTERVAL_US,
                    ),
                )
                .values(last_used_at=now)
            )
        if secrets.randbelow(PURGE_ONE_IN) == 0:
            purge_nonces(conn, now)
    return True


def purge_nonces(conn: Connection, now: int) -> int:
    """Forget nonces whose requests can no longer be replayed (older than twice the window)."""
    return int(
        conn.execute(delete(api_nonces).where(api_nonces.c.seen_at < now - NONCE_RETENTION_US)).rowcount
    )

"""Webhook endpoints: a user's URLs that receive signed deliveries of the events about them.

An endpoint is owned by one user (a merchant's owner, a partner developer) and managed from their session
or with an API key holding `webhooks:manage`. Its signing secret (`whsec_` + 32 random bytes) is shown
once, when the endpoint is created or its secret rotated; it is stored encrypted with the key ring
(`secret_cipher`, rotated with the other personal data) because signing needs the secret itself.
Rotation can keep the previous secret signing for a while (`previous_secret_valid_s`), so a receiver can
switch without dropping deliveries.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from qianbao import invalid
from qianbao.config import Settings
from qianbao.errors import Conflict, NotFound
from qianbao.events.model import filter_is_known, url_problem
from qianbao.events.tables import webhook_endpoints
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, RequestInfo
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.keyring import KeyRing

SECRET_PREFIX = "whsec_"  # noqa: S105 - a public prefix, not a secret
SECRET_CONTEXT = context("webhook_endpoints", "secret_cipher")
PREVIOUS_SECRET_CONTEXT = context("webhook_endpoints", "previous_secret_cipher")
MAX_ENDPOINTS = 16
MAX_FILTERS = 64
MAX_DESCRIPTION = 256
MAX_PREVIOUS_VALID_S = 7 * 24 * 3600
ENDPOINT_ID = re.compile(r"whe_[0-9a-z]{26}")


@dataclass(frozen=True, slots=True)
class EndpointView:
    id: str
    owner_user_id: str
    url: str
    description: str | None
    events: tuple[str, ...]
    enabled: bool
    created_at: int
    updated_at: int
    previous_secret_expires_at: int | None


@dataclass(frozen=True, slots=True)
class EndpointWithSecret:
    endpoint: EndpointView
    secret: str  # shown once


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def owner_of(principal: Principal) -> str:
    if principal.user_id is None:
        raise NotFound("no such webhook endpoint")
    return principal.user_id


def loopback_allowed(settings: Settings) -> bool:
    """Loopback receivers are for a developer's own machine: sandbox only, and only when asked for."""
    return settings.is_sandbox and settings.webhooks_allow_loopback


def clean_url(url: object, settings: Settings) -> str:
    if not isinstance(url, str):
        raise invalid.not_text("url")
    problem = url_problem(url, production=not settings.is_sandbox, allow_loopback=loopback_allowed(settings))
    if problem is not None:
        raise invalid.because("webhook_url", problem, field="url")
    return url


def clean_events(events: object) -> tuple[str, ...]:
    if not isinstance(events, list | tuple) or not events or len(events) > MAX_FILTERS:
        raise invalid.because(
            "event_types", f'events must be a list of 1 to {MAX_FILTERS} event types or "*"', field="events"
        )
    unknown = [e for e in events if not isinstance(e, str) or not filter_is_known(e)]
    if unknown:
        raise invalid.because(
            "event_types",
            'unknown event type(s): use the types of docs/webhooks.md, a family ("payment.*") or "*"',
            field="events",
            unknown=[str(e)[:128] for e in unknown[:10]],
        )
    return tuple(dict.fromkeys(str(e) for e in events))


def clean_description(description: object) -> str | None:
    if description is None:
        return None
    if (
        not isinstance(description, str)
        or len(description) > MAX_DESCRIPTION
        or not description.isprintable()
    ):
        raise invalid.too_long("description", MAX_DESCRIPTION, printable=True)
    return description.strip() or None


def view(row: Any) -> EndpointView:
    return EndpointView(
        id=row.id,
        owner_user_id=row.owner_user_id,
        url=row.url,
        description=row.description,
        events=tuple(row.events),
        enabled=bool(row.enabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
        previous_secret_expires_at=row.previous_secret_expires_at,
    )


def signing_secrets(keys: KeyRing, row: Any, now_us: int) -> tuple[str, ...]:
    """The secrets a delivery is signed with now: the current one, and the previous one until it expires."""
    current = keys.decrypt(row.secret_cipher, context=SECRET_CONTEXT)
    if row.previous_secret_cipher is not None and (row.previous_secret_expires_at or 0) > now_us:
        return current, keys.decrypt(row.previous_secret_cipher, context=PREVIOUS_SECRET_CONTEXT)
    return (current,)


def _actor(principal: Principal, info: RequestInfo) -> audit.Actor:
    return audit.Actor(
        principal.kind.value,
        principal.id,
        ip=info.ip,
        device_id=principal.device_id,
        session_id=principal.session_id,
    )


def insert_endpoint(
    conn: Connection,
    keys: KeyRing,
    *,
    owner: str,
    url: str,
    events: tuple[str, ...],
    description: str | None,
    now: int,
    enabled: bool = True,
) -> EndpointWithSecret:
    secret = new_secret()
    endpoint = EndpointView(new_id("whe"), owner, url, description, events, enabled, now, now, None)
    conn.execute(
        insert(webhook_endpoints).values(
            id=endpoint.id,
            owner_user_id=owner,
            url=url,
            description=description,
            events=list(events),
            enabled=enabled,
            secret_cipher=keys.encrypt(secret, context=SECRET_CONTEXT),
            previous_secret_cipher=None,
            previous_secret_expires_at=None,
            created_at=now,
            updated_at=now,
        )
    )
    return EndpointWithSecret(endpoint, secret)


def create_endpoint(
    ctx: IdentityContext,
    principal: Principal,
    *,
    url: object,
    events: object,
    description: object,
    info: RequestInfo,
) -> EndpointWithSecret:
    owner = owner_of(principal)
    clean = clean_url(url, ctx.settings)
    filters = clean_events(events)
    text = clean_description(description)
    with ctx.db.read() as conn:
        count = conn.execute(
            select(func.count())
            .select_from(webhook_endpoints)
            .where(webhook_endpoints.c.owner_user_id == owner)
        ).scalar_one()
    if count >= MAX_ENDPOINTS:
        raise Conflict(f"at most {MAX_ENDPOINTS} webhook endpoints per user: delete one first")
    now = ctx.now()
    with ctx.uow() as uow:
        created = insert_endpoint(
            uow.conn, ctx.keys, owner=owner, url=clean, events=filters, description=text, now=now
        )
        audit.record(
            uow.conn,
            now,
            "webhook_endpoint.created",
            _actor(principal, info),
            subject_user_id=owner,
            details={"endpoint_id": created.endpoint.id, "events": list(filters)},
        )
        uow.commit()
    return created


def own_endpoint_row(conn: Connection, owner: str, endpoint_id: str) -> Any:
    """The caller's endpoint, or 404 (someone else's endpoint does not exist for them)."""
    if not ENDPOINT_ID.fullmatch(endpoint_id):
        raise NotFound("no such webhook endpoint")
    row = conn.execute(
        select(webhook_endpoints).where(
            webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.owner_user_id == owner
        )
    ).first()
    if row is None:
        raise NotFound("no such webhook endpoint")
    return row


def get_endpoint(ctx: IdentityContext, principal: Principal, endpoint_id: str) -> EndpointView:
    with ctx.db.read() as conn:
        return view(own_endpoint_row(conn, owner_of(principal), endpoint_id))


def list_endpoints(
    ctx: IdentityContext, principal: Principal, *, limit: int, cursor: str | None
) -> tuple[list[EndpointView], str | None]:
    """The caller's endpoints, newest first; the cursor is the last id of a page."""
    query = (
        select(webhook_endpoints)
        .where(webhook_endpoints.c.owner_user_id == owner_of(principal))
        .order_by(webhook_endpoints.c.id.desc())
    )
    if cursor:
        if not ENDPOINT_ID.fullmatch(cursor):
            raise invalid.cursor()
        query = query.where(webhook_endpoints.c.id < cursor)
    with ctx.db.read() as conn:
        rows = conn.execute(query.limit(limit + 1)).all()
    found = [view(r) for r in rows[:limit]]
    return found, found[-1].id if len(rows) > limit and found else None


def update_endpoint(
    ctx: IdentityContext,
    principal: Principal,
    endpoint_id: str,
    changes: Mapping[str, Any],
    info: RequestInfo,
) -> EndpointView:
    """Change `url`, `events`, `enabled` and/or `description` (only the keys present in `changes`)."""
    owner = owner_of(principal)
    values: dict[str, Any] = {}
    if "url" in changes:
        values["url"] = clean_url(changes["url"], ctx.settings)
    if "events" in changes:
        values["events"] = list(clean_events(changes["events"]))
    if "enabled" in changes:
        if not isinstance(changes["enabled"], bool):
            raise invalid.because("not_boolean", "enabled must be true or false", field="enabled")
        values["enabled"] = changes["enabled"]
    if "description" in changes:
        values["description"] = clean_description(changes["description"])
    now = ctx.now()
    with ctx.uow() as uow:
        own_endpoint_row(uow.conn, owner, endpoint_id)
        if values:
            uow.conn.execute(
                update(webhook_endpoints)
                .where(webhook_endpoints.c.id == endpoint_id)
                .values(**values, updated_at=now)
            )
            audit.record(
                uow.conn,
                now,
                "webhook_endpoint.updated",
                _actor(principal, info),
                subject_user_id=owner,
                details={"endpoint_id": endpoint_id, "changed": sorted(values)},
            )
        row = own_endpoint_row(uow.conn, owner, endpoint_id)
        uow.commit()
    return view(row)


def delete_endpoint(ctx: IdentityContext, principal: Principal, endpoint_id: str, info: RequestInfo) -> None:
    """Delete the endpoint with its delivery log (the foreign keys cascade); nothing more is sent to it."""
    owner = owner_of(principal)
    now = ctx.now()
    with ctx.uow() as uow:
        own_endpoint_row(uow.conn, owner, endpoint_id)
        uow.conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))
        audit.record(
            uow.conn,
            now,
            "webhook_endpoint.deleted",
            _actor(principal, info),
            subject_user_id=owner,
            details={"endpoint_id": endpoint_id},
        )
        uow.commit()


def rotate_secret(
    ctx: IdentityContext,
    principal: Principal,
    endpoint_id: str,
    *,
    previous_valid_s: object,
    info: RequestInfo,
) -> EndpointWithSecret:
    """A new signing secret; the old one keeps signing (alongside) for `previous_valid_s` seconds."""
    owner = owner_of(principal)
    if (
        not isinstance(previous_valid_s, int)
        or isinstance(previous_valid_s, bool)
        or not 0 <= previous_valid_s <= MAX_PREVIOUS_VALID_S
    ):
        raise invalid.seconds_range("previous_secret_valid_s", 0, MAX_PREVIOUS_VALID_S)
    secret = new_secret()
    now = ctx.now()
    with ctx.uow() as uow:
        row = own_endpoint_row(uow.conn, owner, endpoint_id)
        previous: dict[str, Any] = {"previous_secret_cipher": None, "previous_secret_expires_at": None}
        if previous_valid_s > 0:
            old = ctx.keys.decrypt(row.secret_cipher, context=SECRET_CONTEXT)
            previous = {
                "previous_secret_cipher": ctx.keys.encrypt(old, context=PREVIOUS_SECRET_CONTEXT),
                "previous_secret_expires_at": now + previous_valid_s * 1_000_000,
            }
        uow.conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(
                secret_cipher=ctx.keys.encrypt(secret, context=SECRET_CONTEXT), updated_at=now, **previous
            )
        )
        audit.record(
            uow.conn,
            now,
            "webhook_endpoint.secret_rotated",
            _actor(principal, info),
            subject_user_id=owner,
            details={"endpoint_id": endpoint_id, "previous_secret_valid_s": previous_valid_s},
        )
        row = own_endpoint_row(uow.conn, owner, endpoint_id)
        uow.commit()
    return EndpointWithSecret(view(row), secret)

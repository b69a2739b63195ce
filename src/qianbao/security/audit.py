"""The security audit log: who did what, from where, with what outcome. Append-only in the database.

Details carry ids and masked values only; never a phone number, name, ID number or secret in clear.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from qianbao.ids import new_id
from qianbao.security.tables import audit_events


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: `kind` is user, operator, api_key, system or anonymous."""

    kind: str
    id: str | None = None
    ip: str | None = None
    device_id: str | None = None
    session_id: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls("system")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str
    seq: int
    at: int
    event: str
    outcome: str
    actor_kind: str
    actor_id: str | None
    subject_user_id: str | None
    ip: str | None
    device_id: str | None
    session_id: str | None
    details: dict[str, Any]


def record(
    conn: Connection,
    at_us: int,
    event: str,
    actor: Actor,
    *,
    subject_user_id: str | None = None,
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
) -> str:
    event_id = new_id("aud")
    conn.execute(
        insert(audit_events).values(
            id=event_id,
            at=at_us,
            event=event,
            outcome=outcome,
            actor_kind=actor.kind,
            actor_id=actor.id,
            subject_user_id=subject_user_id,
            ip=actor.ip,
            device_id=actor.device_id,
            session_id=actor.session_id,
            details=dict(details or {}),
        )
    )
    return event_id


def list_events(
    conn: Connection,
    *,
    subject_user_id: str | None = None,
    event: str | None = None,
    actor_id: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    before_seq: int | None = None,
    limit: int = 20,
    exclude_events: Collection[str] = (),
    exclude_prefixes: Collection[str] = (),
) -> list[AuditEvent]:
    """Newest first; `before_seq` is the cursor (the seq of the last row of the previous page)."""
    query = select(audit_events).order_by(audit_events.c.seq.desc()).limit(limit)
    if subject_user_id is not None:
        query = query.where(audit_events.c.subject_user_id == subject_user_id)
    if event is not None:
        query = query.where(audit_events.c.event == event)
    if actor_id is not None:
        query = query.where(audit_events.c.actor_id == actor_id)
    if since_us is not None:
        query = query.where(audit_events.c.at >= since_us)
    if until_us is not None:
        query = query.where(audit_events.c.at < until_us)
    if before_seq is not None:
        query = query.where(audit_events.c.seq < before_seq)
    if exclude_events:
        query = query.where(audit_events.c.event.not_in(list(exclude_events)))
    for prefix in exclude_prefixes:
        query = query.where(audit_events.c.event.not_like(f"{prefix}%"))
    return [
        AuditEvent(
            id=r.id,
            seq=r.seq,
            at=r.at,
            event=r.event,
            outcome=r.outcome,
            actor_kind=r.actor_kind,
            actor_id=r.actor_id,
            subject_user_id=r.subject_user_id,
            ip=r.ip,
            device_id=r.device_id,
            session_id=r.session_id,
            details=dict(r.details or {}),
        )
        for r in conn.execute(query)
    ]


# What users see of their own security events. Operators' internal work (data reveals, approvals) is not
# shown, and where an operator acted (a freeze, a KYC decision) the customer sees that it happened but
# not who did it or the internal notes: telling a customer about an investigation can tip them off.
HIDDEN_FROM_USERS = frozenset({"pii.revealed"})
HIDDEN_PREFIXES_FROM_USERS = ("approval.",)


def as_seen_by_user(event: AuditEvent) -> AuditEvent:
    if event.actor_kind != "operator":
        return event
    return AuditEvent(
        id=event.id,
        seq=event.seq,
        at=event.at,
        event=event.event,
        outcome=event.outcome,
        actor_kind="operator",
        actor_id=None,
        subject_user_id=event.subject_user_id,
        ip=None,
        device_id=None,
        session_id=None,
        details={},
    )

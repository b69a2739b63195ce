"""The event feed: `GET /v1/events` (poll the events about you) and `GET /v1/events/{id}`.

For a user session, or an API key with scope `read` or `webhooks:manage` (acting for its owner)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from qianbao.api.deps import Identity, current_principal
from qianbao.api.pages import page_params
from qianbao.clock import rfc3339
from qianbao.errors import Forbidden
from qianbao.events import feed
from qianbao.identity.model import Principal, PrincipalKind

router = APIRouter(tags=["events"])
FEED_SCOPES = frozenset({"read", "webhooks:manage"})


def feed_reader(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.user_id is None:
        raise Forbidden("this endpoint is for users and their API keys")
    if principal.kind is PrincipalKind.USER:
        return principal
    if principal.kind is PrincipalKind.API_KEY and principal.scopes & FEED_SCOPES:
        return principal
    raise Forbidden("this endpoint needs a user session or an API key with scope 'read' or 'webhooks:manage'")


Reader = Annotated[Principal, Depends(feed_reader)]


class EventOut(BaseModel):
    id: str = Field(description="stable: the same id in webhook deliveries (Qianbao-Event-Id)")
    type: str
    created_at: str
    data: dict[str, Any]


class EventList(BaseModel):
    data: list[EventOut]
    next_cursor: str | None


def event_json(e: feed.FeedEvent) -> dict[str, Any]:
    return {"id": e.id, "type": e.type, "created_at": rfc3339(e.created_at), "data": dict(e.data)}


@router.get("/v1/events", response_model=EventList)
def list_events(
    principal: Reader,
    ctx: Identity,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    type: Annotated[str | None, Query(max_length=128, description="only events of this type")] = None,  # noqa: A002
) -> dict[str, Any]:
    """The events about you (as payer, payee, merchant owner, wallet owner…), newest first."""
    assert principal.user_id is not None  # noqa: S101 - feed_reader guarantees it
    found, next_cursor = feed.list_events(
        ctx, principal.user_id, limit=limit, before_seq=page_params(cursor), event_type=type
    )
    return {"data": [event_json(e) for e in found], "next_cursor": next_cursor}


@router.get("/v1/events/{event_id}", response_model=EventOut)
def get_event(event_id: str, principal: Reader, ctx: Identity) -> dict[str, Any]:
    """One event about you, as in the feed and in webhook deliveries (anyone else's: 404)."""
    assert principal.user_id is not None  # noqa: S101 - feed_reader guarantees it
    return event_json(feed.get_event(ctx, principal.user_id, event_id))

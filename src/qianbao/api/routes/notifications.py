"""In-app notifications: `GET /v1/notifications` (newest first, text in the caller's language) and
`POST /v1/notifications/read`. For the signed-in user only (they are messages to a person)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

from qianbao.api import request_errors
from qianbao.api.deps import CurrentUser, Identity
from qianbao.api.pages import page_params
from qianbao.api.problems import language
from qianbao.clock import rfc3339
from qianbao.events import notifications

router = APIRouter(tags=["notifications"])


class ReadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[StrictStr] | None = Field(default=None, max_length=notifications.MAX_IDS)
    all: StrictBool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReadRequest:
        if (self.ids is None) == (self.all is None) or self.all is False:
            raise request_errors.exactly_one_of("ids", "all")
        return self


class NotificationOut(BaseModel):
    id: str
    type: str = Field(description="transfer_sent, transfer_received, payment_paid, payment_received, …")
    title: str
    body: str = Field(description="rendered in zh-CN or en by Accept-Language")
    event_id: str
    data: dict[str, Any] = Field(description="the event's ids and amounts")
    read: bool
    read_at: str | None
    created_at: str


class NotificationList(BaseModel):
    data: list[NotificationOut]
    next_cursor: str | None
    unread_count: int


class ReadOut(BaseModel):
    updated: int
    unread_count: int


def notification_json(n: notifications.NotificationView, lang: str) -> dict[str, Any]:
    title, body = notifications.render(n.kind, n.data, lang, n.names)
    return {
        "id": n.id,
        "type": n.kind,
        "title": title,
        "body": body,
        "event_id": n.event_id,
        "data": dict(n.data),
        "read": n.read_at is not None,
        "read_at": None if n.read_at is None else rfc3339(n.read_at),
        "created_at": rfc3339(n.created_at),
    }


@router.get("/v1/notifications", response_model=NotificationList)
def list_notifications(
    request: Request,
    principal: CurrentUser,
    ctx: Identity,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    unread: Annotated[bool, Query(description="only unread ones")] = False,
) -> dict[str, Any]:
    """Your notifications, newest first: money sent and received, payments, refunds, budget and goal
    alerts, money requests."""
    assert principal.user_id is not None  # noqa: S101 - CurrentUser guarantees it
    lang = language(request)
    found, next_cursor, unread_count = notifications.list_notifications(
        ctx,
        principal.user_id,
        limit=limit,
        before_seq=page_params(cursor),
        unread_only=unread,
        language=lang,
    )
    return {
        "data": [notification_json(n, lang) for n in found],
        "next_cursor": next_cursor,
        "unread_count": unread_count,
    }


@router.post("/v1/notifications/read", response_model=ReadOut)
def mark_notifications_read(body: ReadRequest, principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """Mark `ids` (yours; others are ignored) or `all` your notifications read."""
    assert principal.user_id is not None  # noqa: S101 - CurrentUser guarantees it
    updated = notifications.mark_read(ctx, principal.user_id, None if body.all else body.ids)
    _, _, unread_count = notifications.list_notifications(ctx, principal.user_id, limit=1, before_seq=None)
    return {"updated": updated, "unread_count": unread_count}

"""Sandbox-only routes (absent in production): the messages the system "sent", and test money."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from qianbao import invalid
from qianbao.api.deps import Identity
from qianbao.clock import rfc3339
from qianbao.errors import InvalidInput
from qianbao.identity.phones import normalise_phone
from qianbao.notify.service import EMAIL, SMS

router = APIRouter(tags=["sandbox"])


@router.get("/v1/sandbox/messages")
def sandbox_messages(
    ctx: Identity,
    to: Annotated[str, Query(min_length=1, max_length=254)],
    limit: int = Query(50, ge=1, le=100),
) -> dict[str, Any]:
    """SMS and e-mails sent to a phone number or e-mail address, newest first."""
    if "@" in to:
        channel, address = EMAIL, to.strip().lower()
    else:
        try:
            channel, address = SMS, normalise_phone(to)
        except InvalidInput as exc:
            raise invalid.invalid("to", "to must be a phone number or an e-mail address") from exc
    with ctx.db.read() as conn:
        sent = ctx.notifier.sent_to(conn, address, channel=channel, limit=limit)
    return {
        "data": [
            {"to": m.to, "text": m.text, "code": m.code, "sent_at": rfc3339(m.sent_at_us)} for m in sent
        ],
        "next_cursor": None,
    }

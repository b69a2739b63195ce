"""Cursor pagination helpers (API.md: `{"data": [...], "next_cursor": ...}`, `?limit=` 1..100)."""

from __future__ import annotations

from qianbao import invalid


def page_params(cursor: str | None) -> int | None:
    """Our cursors are opaque to clients but are a sequence number underneath."""
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit() or len(cursor) > 19:
        raise invalid.cursor()
    return int(cursor)

"""Injectable time: services and the ledger ask a `Clock`, tests pass a `FixedClock`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now_us(self) -> int:
        """Microseconds since the Unix epoch, UTC."""
        ...


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1_000


class FixedClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, start_us: int = 1_767_225_600_000_000) -> None:  # 2026-01-01T00:00:00Z
        self._now = start_us

    def now_us(self) -> int:
        return self._now

    def advance(self, seconds: float = 0, *, microseconds: int = 0) -> None:
        self._now += int(seconds * 1_000_000) + microseconds

    def set(self, when: datetime) -> None:
        self._now = to_us(when)


def to_us(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC datetime")
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def rfc3339(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")

"""Prefixed, sortable, random identifiers (`acc_…`, `trf_…`, `evt_…`).

The body is 26 Crockford base32 characters: 48 bits of millisecond time then 80 random bits (ULID
layout), so ids sort by creation time and never collide across processes.
"""

from __future__ import annotations

import secrets
import time
from typing import NewType

AccountId = NewType("AccountId", str)
TransferId = NewType("TransferId", str)
EventId = NewType("EventId", str)

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"

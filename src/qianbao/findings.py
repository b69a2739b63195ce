"""A finding: what a rule has to say about a request, as data.

Rules (pure functions over loaded state, GUIDE §2) return a `Finding` or None; they never raise. Only a
service turns a finding into an error (`qianbao.payments.engine.declines` for every money movement), so
the code, the HTTP status and the message of each refusal are decided in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Finding:
    """`code` is the API's error code; `data` what the error will carry (limits, room, dates…)."""

    code: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

"""The qianbao error tree.

Every error a caller can cause is a `QianbaoError` with a stable snake_case `code`; the API maps the
class (never the message) to an HTTP status in one table, `qianbao.api.problems.STATUS_BY_CODE`.

    QianbaoError                      code                      meaning
    ├── InvalidInput                  validation_error          bad input; nothing was changed
    ├── NotFound                      not_found                 no such object (or not yours)
    ├── Conflict                      conflict                  the request clashes with current state
    │   └── IdempotencyKeyReused      idempotency_key_reused    same key, different request
    ├── LedgerRejected                <the ledger result code>  the ledger refused a transfer
    └── ServiceUnavailable            service_unavailable       a dependency (database…) is down

Money-kernel errors (`qianbao.money.MoneyError` and subclasses) are programming errors when they reach
the boundary unconverted; input parsing turns them into `InvalidInput`.
"""

from __future__ import annotations

from typing import Any


class QianbaoError(Exception):
    code: str = "internal_error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(QianbaoError):
    code = "validation_error"


class NotFound(QianbaoError):
    code = "not_found"


class Conflict(QianbaoError):
    code = "conflict"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class LedgerRejected(QianbaoError):
    """A transfer was refused by the ledger; `code` is the ledger's result code."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


class ServiceUnavailable(QianbaoError):
    code = "service_unavailable"

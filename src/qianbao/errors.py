"""The qianbao error tree.

Every error a caller can cause is a `QianbaoError` with a stable snake_case `code`; the API maps the
class (never the message) to an HTTP status in one registry, `qianbao.error_codes` (with its default next
step and gettext message ids; `qianbao.api.problems.STATUS_BY_CODE` is built from it).

    QianbaoError                      code                      meaning
    ├── InvalidInput                  validation_error          bad input; nothing was changed
    │   └── WeakCredential            weak_password / weak_pin  a password or PIN the policy refuses
    ├── Unauthenticated               unauthenticated           no valid credentials (401)
    │   └── StepUpRequired            step_up_required          fresh proof needed; carries challenge_id
    ├── Forbidden                     forbidden                 authenticated, but not allowed (403)
    ├── RateLimited                   rate_limited              too many attempts; carries retry_after
    ├── Locked                        <pin_locked …>            a credential is locked for a while (423)
    ├── LimitExceeded                 limit_exceeded_single …   a KYC limit declined a payment (422)
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


class WeakCredential(InvalidInput):
    """A password or PIN the policy refuses; `reasons` lists why (stable codes)."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


class Unauthenticated(QianbaoError):
    code = "unauthenticated"


class StepUpRequired(Unauthenticated):
    """The operation needs fresh proof: `extra` carries `challenge_id`, `methods` and `reasons`."""

    code = "step_up_required"


class Forbidden(QianbaoError):
    code = "forbidden"


class RateLimited(QianbaoError):
    """Too many attempts; `retry_after` (seconds) becomes the Retry-After header."""

    code = "rate_limited"

    def __init__(self, detail: str, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class Locked(QianbaoError):
    """A credential or object is locked for a while (`pin_locked`, `account_locked`…)."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


class LimitExceeded(QianbaoError):
    """A KYC tier limit declined a payment; `extra` carries the limit and the remaining allowance."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


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

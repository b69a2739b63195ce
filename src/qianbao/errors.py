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

`detail` is technical English for integrators. What a person reads (`user_message`) comes from the
gettext catalogs: the code's own message, or, when the error carries a `UserText`, a more specific one
(`error.<code>.<variant>`, e.g. which field is wrong and how). `qianbao.invalid` builds the `InvalidInput`
of each kind of bad input with its text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class UserText:
    """A specific user message: catalog entry `error.<code>.<variant>` filled with `params`.

    The variants and their parameters are registered in `qianbao.error_codes.MESSAGE_VARIANTS` (build
    one with `qianbao.error_codes.user_text`). A `field` parameter is a JSON path, shown by its label;
    when absent it is taken from the error's `field` extra."""

    code: str
    variant: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def msgid(self) -> str:
        return f"error.{self.code}.{self.variant}"


class QianbaoError(Exception):
    code: str = "internal_error"

    def __init__(self, detail: str, *, user_text: UserText | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.user_text = user_text
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


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


class LedgerRejected(QianbaoError):
    """A transfer was refused by the ledger; `code` is the ledger's result code."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


class ServiceUnavailable(QianbaoError):
    code = "service_unavailable"

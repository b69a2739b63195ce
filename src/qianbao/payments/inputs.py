"""Payment input rules shared by transfers and sandbox funding: the amount, the memo, the caller, and the
ledger transfer id derived from an Idempotency-Key.

Kept apart from the use cases so that `transfers`, `funding` and the HTTP schemas (MAX_PAYMENT) apply the
same rules without importing each other.
"""

from __future__ import annotations

import hashlib
import unicodedata

from qianbao import invalid
from qianbao.identity.model import Principal
from qianbao.ids import new_id
from qianbao.money import UnknownCurrencyError, currency

MAX_PAYMENT = 10**15
MAX_MEMO_LENGTH = 140


def check_amount(amount: object, currency_code: object) -> None:
    """A payment amount: whole minor units, 1 to 10^15, in a known currency (422 validation_error)."""
    if type(amount) is not int or not 0 < amount <= MAX_PAYMENT:
        raise invalid.amount_range("amount", 1, MAX_PAYMENT)
    try:
        currency(currency_code)
    except (UnknownCurrencyError, TypeError) as exc:
        raise invalid.unknown_currency("currency", currency_code) from exc


def clean_memo(memo: str | None) -> str | None:
    if memo is None:
        return None
    if not isinstance(memo, str) or len(memo) > MAX_MEMO_LENGTH:
        raise invalid.too_long("memo", MAX_MEMO_LENGTH)
    cleaned = unicodedata.normalize("NFC", memo.strip())
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise invalid.control_characters("memo")
    return cleaned or None


def derived_id(prefix: str, scope: str, key: str) -> str:
    """A ledger transfer id bound to (caller scope, Idempotency-Key): the same key can never pay twice."""
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    return f"{prefix}:{digest}"


def ledger_id_for(prefix: str, scope: str, key: str | None, fresh: str) -> str:
    """A money movement's ledger transfer id: derived from (caller scope, Idempotency-Key) when there is
    a key, else a new id (`fresh`: its id prefix)."""
    return derived_id(prefix, scope, key) if key else f"{prefix}:{new_id(fresh)}"


def require_user_id(principal: Principal) -> str:
    if principal.user_id is None:
        raise invalid.needs_user()
    return principal.user_id

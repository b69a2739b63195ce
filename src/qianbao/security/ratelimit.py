"""Named rate limits (OTP sends, password guesses, recipient look-ups…) over the `limits` library.

Callers name a rule ("otp_send_phone") and pass identifiers (a phone number, an IP, a user id); the rule's
limits ("1/minute;5/hour;10/day") live in one table, `DEFAULT_RULES`, which deployments may extend or
override. Every limit is a moving window (`limits.MovingWindowRateLimiter`): no burst at window edges,
which matters for guessing attacks on OTPs and passwords.

Why the keys look the way they do: identifiers are often personal data (phone numbers, IPs). They are
hashed with SHA-256 (or HMAC-SHA256 when an `identifier_key` is given) before they reach the storage, so
Redis keys and dumps never hold them in clear. The hash input is length-prefixed, so ("a:b",) and
("a", "b") are different keys. Note that a bare SHA-256 of a phone number can be reversed by trying every
number; production should pass `identifier_key` (a secret) so the keys are a keyed blind index.

Why storage failures raise `ServiceUnavailable`: these limits are the brakes on SMS pumping, credential
stuffing and enumeration. If Redis is down, failing open would silently remove them, so every storage
error becomes `ServiceUnavailable` (HTTP 503) and the protected operation is refused. Put connect and read
timeouts in the URI (`redis://host:6379/0?socket_timeout=0.5&socket_connect_timeout=0.5`) so an
unresponsive Redis fails fast instead of hanging requests.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Mapping
from types import TracebackType

from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from qianbao.errors import RateLimited, ServiceUnavailable

DEFAULT_RULES: dict[str, str] = {
    "passkey_options_ip": "60/minute;600/hour",  # unauthenticated passkey sign-in ceremonies per IP
    "otp_send_phone": "1/minute;5/hour;10/day",  # sign-up codes (or notices) per phone number
    "otp_send_ip": "20/hour",  # sign-up codes per IP
    # Every other SMS purpose has its own quota (identity/sms_quota.py): asking a stranger's number for
    # sign-up codes must not use up that person's step-up or recovery codes.
    "password_reset_send_phone": "1/minute;5/hour;10/day",
    "password_reset_send_ip": "20/hour",
    "recovery_send_phone": "1/minute;5/hour;10/day",  # account-recovery codes (or notices) per new number
    "recovery_send_ip": "20/hour",
    "phone_change_send_phone": "1/minute;5/hour;10/day",  # codes to the new number of a phone change
    "phone_change_send_ip": "20/hour",
    "step_up_sms_phone": "1/minute;5/hour;10/day",  # step-up codes per number (the account's own)
    "otp_verify": "10/hour",  # code guesses per phone and purpose
    "password_account": "10/15 minutes",  # failed sign-ins per account
    "password_ip": "50/15 minutes",  # failed sign-ins per IP
    "recovery_id": "5/hour;10/day",  # account-recovery attempts per ID number
    "recovery_ip": "20/hour",  # account-recovery attempts per IP
    "recipient_lookup": "30/hour;100/day",  # phone look-ups per user (against enumeration)
    "money_request_create": "10/hour;50/day",  # money requests sent per user (against request spam)
    # Step-up proof attempts per user. The daily cap bounds TOTP guessing at sign-in, where each correct
    # password would otherwise open a fresh challenge: 50 guesses a day at ~3e-6 each.
    "challenge_verify": "10/10 minutes;50/day",
    "challenge_create": "30/10 minutes;300/day",  # step-up challenges opened per user (audit rows too)
    "api_key_request": "600/minute",
    # QR pictures read per user (POST /v1/qr-codes/decode). Apps read codes with the camera on the phone;
    # an upload is a photo or screenshot from the album, a few a minute even with retries. Each costs up
    # to a second of CPU: 300 an hour is at most a twelfth of a core, however one account loops.
    "qr_decode": "30/minute;300/hour",
    # Wrong payment codes per merchant are not here: they are counted in the database, in the transaction
    # that tries each code (payments/payment_code_guard.py), so concurrent guesses cannot overshoot.
}

# Rule names and the prefix become parts of a '/'-separated storage key: keep them to a safe alphabet.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _as_tuple(
    exceptions: type[Exception] | tuple[type[Exception], ...],
) -> tuple[type[Exception], ...]:
    return exceptions if isinstance(exceptions, tuple) else (exceptions,)


class RateLimiter:
    """Named, multi-limit rate limits; one instance per process, shared by the request handlers."""

    def __init__(
        self,
        storage_uri: str = "memory://",
        rules: Mapping[str, str] | None = None,
        *,
        key_prefix: str = "qianbao",
        identifier_key: bytes | None = None,
    ) -> None:
        if not _NAME.fullmatch(key_prefix):
            raise ValueError(f"key_prefix must match {_NAME.pattern}: {key_prefix!r}")
        merged = {**DEFAULT_RULES, **(rules or {})}
        self._rules: dict[str, list[RateLimitItem]] = {}
        for name, spec in merged.items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"rule name must match {_NAME.pattern}: {name!r}")
            self._rules[name] = parse_many(spec)  # ValueError on a bad limit string
        self._key_prefix = key_prefix
        self._identifier_key = identifier_key

        # wrap_exceptions makes the storage's wrapped methods raise limits' StorageError; the moving-window
        # methods are not wrapped, so the backend's own exceptions are caught as well.
        storage = storage_from_string(storage_uri, wrap_exceptions=True)
        if not isinstance(storage, Storage):
            raise ValueError("async storages are not supported; use a synchronous storage URI")
        self._storage: Storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        # MemoryStorage's "base exception" is ValueError, which would only mean a bug here, never an outage.
        self._storage_errors: tuple[type[Exception], ...] = (
            (StorageError,)
            if isinstance(storage, MemoryStorage)
            else (StorageError, *_as_tuple(storage.base_exceptions))
        )

    @property
    def storage_kind(self) -> str:
        """The storage backend: "memory", "redis", "memcached", "mongodb"…"""
        schemes = type(self._storage).STORAGE_SCHEME
        return schemes[0] if schemes else type(self._storage).__name__

    @property
    def rules(self) -> Mapping[str, tuple[RateLimitItem, ...]]:
        """The effective rules (defaults merged with overrides), parsed."""
        return {name: tuple(items) for name, items in self._rules.items()}

    def hit(self, rule: str, *identifiers: str, cost: int = 1) -> None:
        """Count `cost` attempts against every limit of `rule`, or raise `RateLimited` and count nothing.

        Two concurrent callers can both pass the check and then race on the individual limits; the loser
        is refused, and limits it already took stay counted (the error is on the strict side).
        """
        items = self._items(rule)
        if cost < 1:
            raise ValueError(f"cost must be >= 1, got {cost}")
        if cost > min(item.amount for item in items):
            raise ValueError(f"cost {cost} can never fit in rule {rule!r}")
        key = self._key(rule, identifiers)
        try:
            blocked = [item for item in items if not self._limiter.test(item, *key, cost=cost)]
            if not blocked:
                for item in items:
                    if not self._limiter.hit(item, *key, cost=cost):
                        blocked = [item]
                        break
            if not blocked:
                return
            retry_after = self._retry_after(blocked, key)
        except self._storage_errors as exc:
            raise self._unavailable(rule) from exc
        raise RateLimited(
            f"rate limit {rule!r} reached ({'; '.join(str(item) for item in blocked)})",
            retry_after=retry_after,
            rule=rule,
        )

    def check(self, rule: str, *identifiers: str) -> bool:
        """Would a hit of cost 1 pass now? Counts nothing."""
        items = self._items(rule)
        key = self._key(rule, identifiers)
        try:
            return all(self._limiter.test(item, *key) for item in items)
        except self._storage_errors as exc:
            raise self._unavailable(rule) from exc

    def retry_after(self, rule: str, *identifiers: str) -> int:
        """Seconds until a hit of cost 1 could pass (at least 1 when limited), 0 when not limited."""
        items = self._items(rule)
        key = self._key(rule, identifiers)
        try:
            blocked = [item for item in items if not self._limiter.test(item, *key)]
            return self._retry_after(blocked, key) if blocked else 0
        except self._storage_errors as exc:
            raise self._unavailable(rule) from exc

    def reset(self, rule: str, *identifiers: str) -> None:
        """Forget every attempt counted for these identifiers (e.g. failed passwords after a success)."""
        items = self._items(rule)
        key = self._key(rule, identifiers)
        try:
            for item in items:
                self._limiter.clear(item, *key)
        except self._storage_errors as exc:
            raise self._unavailable(rule) from exc

    def close(self) -> None:
        """Release the storage's connections (a Redis pool) or its expiry timer (memory)."""
        if isinstance(self._storage, MemoryStorage):
            self._storage.timer.cancel()
            return
        client = getattr(self._storage, "storage", None)
        close = getattr(client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _items(self, rule: str) -> list[RateLimitItem]:
        try:
            return self._rules[rule]
        except KeyError:
            raise KeyError(f"unknown rate-limit rule {rule!r}") from None

    def _key(self, rule: str, identifiers: tuple[str, ...]) -> tuple[str, str, str]:
        """The identifiers `limits` sees: prefix, rule, and a digest of the caller's identifiers."""
        encoded = b"".join(
            len(part).to_bytes(4, "big") + part for part in (ident.encode() for ident in identifiers)
        )
        if self._identifier_key is None:
            digest = hashlib.sha256(encoded).hexdigest()
        else:
            digest = hmac.new(self._identifier_key, encoded, hashlib.sha256).hexdigest()
        return (self._key_prefix, rule, digest)

    def _retry_after(self, blocked: list[RateLimitItem], key: tuple[str, str, str]) -> int:
        # The moving window frees a slot when its oldest entry ages out: that is the window's reset time.
        now = time.time()
        waits = [self._limiter.get_window_stats(item, *key).reset_time - now for item in blocked]
        return max(1, math.ceil(max(waits)))

    def _unavailable(self, rule: str) -> ServiceUnavailable:
        # Never put the storage URI in the message: it may carry a password.
        return ServiceUnavailable(
            f"rate-limit storage ({self.storage_kind}) is unavailable; refusing rather than failing open",
            rule=rule,
        )

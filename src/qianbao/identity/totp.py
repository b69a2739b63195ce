"""Second factor: TOTP (RFC 6238) enrolment and verification, and one-time recovery codes.

The one-time-password arithmetic is pyotp's (HOTP/TOTP is easy to get subtly wrong); this module adds
what the wallet needs around it: explicit time (tests and the clock abstraction pass `at_s`), replay
protection by returning the matched time step for the caller to store, a QR code for enrolment, and
recovery codes that are stored only as hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Final

import pyotp
import segno

__all__ = [
    "RECOVERY_CODE_ALPHABET",
    "RECOVERY_CODE_COUNT",
    "TOTP_DIGITS",
    "TOTP_PERIOD_S",
    "hash_recovery_code",
    "new_recovery_codes",
    "new_totp_secret",
    "normalize_recovery_code",
    "provisioning_qr_svg",
    "provisioning_uri",
    "totp_code",
    "verify_totp",
]

TOTP_PERIOD_S: Final = 30
TOTP_DIGITS: Final = 6
_SECRET_BASE32_CHARS: Final = 32  # 32 × 5 bits = 160 bits, the secret length RFC 4226 recommends

_DIGESTS: Final[Mapping[str, Callable[..., Any]]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret of 160 bits (from the OS CSPRNG, via pyotp)."""
    return pyotp.random_base32(_SECRET_BASE32_CHARS)


def provisioning_uri(secret: str, *, account_name: str, issuer: str = "qianbao") -> str:
    """The otpauth:// URI that authenticator apps import (usually shown as a QR code)."""
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S)
    return totp.provisioning_uri(name=account_name, issuer_name=issuer)


def provisioning_qr_svg(uri: str) -> str:
    """The URI as an inline SVG QR code (no XML declaration), ready to embed in an HTML page."""
    return segno.make(uri, error="m", micro=False).svg_inline(scale=4)


def _time_step(at_s: float, period: int) -> int:
    if not math.isfinite(at_s) or at_s < 0:
        raise ValueError(f"at_s must be a finite, non-negative Unix time, got {at_s!r}")
    return int(at_s) // period


def _totp(secret: str, *, digits: int, digest: str, period: int) -> pyotp.TOTP:
    try:
        digest_function = _DIGESTS[digest]
    except KeyError:
        raise ValueError(f"unsupported digest {digest!r}; expected one of {sorted(_DIGESTS)}") from None
    return pyotp.TOTP(secret, digits=digits, digest=digest_function, interval=period)


def totp_code(secret: str, at_s: float, *, digits: int = 6, digest: str = "sha1", period: int = 30) -> str:
    """The TOTP code for Unix time `at_s` (seconds). Raises ValueError for bad parameters or times."""
    # Step arithmetic is ours (integer, time-zone free, same as verify_totp); the HOTP value is pyotp's.
    totp = _totp(secret, digits=digits, digest=digest, period=period)
    return totp.generate_otp(_time_step(at_s, period))


def verify_totp(
    secret: str, code: str, *, at_s: float, last_used_step: int | None, window: int = 1
) -> int | None:
    """The time step that `code` matches, or None.

    Steps from `window` periods before to `window` periods after `at_s` are accepted (clock drift, typing
    time). A step <= `last_used_step` is refused, so a code cannot be replayed; store the returned step as
    the new `last_used_step`. A code that is not exactly TOTP_DIGITS ASCII digits gives None, never an error.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    now_step = _time_step(at_s, TOTP_PERIOD_S)
    if len(code) != TOTP_DIGITS or not (code.isascii() and code.isdigit()):
        return None
    totp = _totp(secret, digits=TOTP_DIGITS, digest="sha1", period=TOTP_PERIOD_S)
    matched: int | None = None
    for step in range(max(0, now_step - window), now_step + window + 1):
        # Compare every candidate (no early exit) in constant time; keep the latest acceptable step.
        if hmac.compare_digest(totp.generate_otp(step), code) and (
            last_used_step is None or step > last_used_step
        ):
            matched = step
    return matched


# --- recovery codes ------------------------------------------------------------------------------------

RECOVERY_CODE_COUNT: Final = 10
# Lower-case letters and digits without the look-alikes 0/o, 1/i/l: 31 symbols, ~4.95 bits each.
RECOVERY_CODE_ALPHABET: Final = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_CODE_LENGTH: Final = 10
_RECOVERY_GROUP: Final = 5


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """`count` distinct codes like "k7m2p-x9qrt": 10 random symbols (~49.5 bits), shown in two groups."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    codes: list[str] = []
    while len(codes) < count:
        raw = "".join(secrets.choice(RECOVERY_CODE_ALPHABET) for _ in range(_RECOVERY_CODE_LENGTH))
        code = f"{raw[:_RECOVERY_GROUP]}-{raw[_RECOVERY_GROUP:]}"
        if code not in codes:  # a repeat is astronomically unlikely, but the set must be distinct
            codes.append(code)
    return codes


def normalize_recovery_code(text: str) -> str:
    """What the user typed, without spaces or dashes, lower-cased ("K7M2P X9QRT" → "k7m2px9qrt")."""
    return "".join(c for c in text.lower() if c != "-" and not c.isspace())


def hash_recovery_code(code: str) -> str:
    """Hex SHA-256 of the normalized code, the form in which recovery codes are stored.

    A fast hash is deliberate: each code carries ~49.5 bits of entropy and online guessing is rate limited,
    so argon2's cost would only slow down logins. Caveat for the threat model: against a stolen database
    the hash is unsalted and fast, so one GPU sweep of the 2^49.5 space (hours to days) recovers every
    user's codes at once. They replace only the second factor (the argon2id password still stands); if
    that is not enough, key the hash with a server secret (HMAC) as the blind indexes do.
    """
    return hashlib.sha256(normalize_recovery_code(code).encode("utf-8")).hexdigest()

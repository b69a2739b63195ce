"""Credential primitives: argon2id hashing and the password and payment-PIN policies.

Pure code without I/O, so that services (registration, login, PIN change) share one definition of "a
good secret" and one hashing configuration. The policies are rules in the sense of the guide: they return
stable reason codes (data) and leave it to the services to turn them into errors and user-facing text.
"""

from __future__ import annotations

import calendar
import itertools
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from functools import cache, cached_property
from typing import Any, Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

__all__ = [
    "COMMON_PINS",
    "PASSWORD_MAX_LENGTH",
    "PASSWORD_MIN_LENGTH",
    "PIN_LENGTH",
    "SecretHasher",
    "password_problems",
    "pin_problems",
]


def _encode_secret(secret: str) -> bytes:
    # "surrogatepass" keeps the encoding injective and total: a lone surrogate (which json.loads happily
    # produces from "\ud800") would otherwise make hash/verify raise UnicodeEncodeError deep in a login.
    return secret.encode("utf-8", "surrogatepass")


class SecretHasher:
    """argon2id via argon2-cffi's PasswordHasher, for passwords and payment PINs."""

    def __init__(self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 2) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )

    @classmethod
    def for_tests(cls) -> SecretHasher:
        """The cheapest parameters argon2 accepts, so that test suites stay fast. Never use in production."""
        return cls(time_cost=1, memory_cost=8, parallelism=1)

    def hash(self, secret: str) -> str:
        """A salted argon2id hash in the standard encoded form ("$argon2id$v=19$m=…")."""
        return self._hasher.hash(_encode_secret(secret))

    def verify(self, hashed: str, secret: str) -> bool:
        """True if `secret` matches `hashed`; False on a mismatch or an unparseable hash (never raises)."""
        try:
            return self._hasher.verify(hashed.encode("ascii"), _encode_secret(secret))
        except (VerificationError, InvalidHashError, UnicodeEncodeError):
            # VerificationError covers VerifyMismatchError; a non-ASCII "hash" cannot be an argon2 hash.
            return False

    def needs_rehash(self, hashed: str) -> bool:
        """True if `hashed` was not made with this hasher's parameters (an unparseable hash counts too)."""
        try:
            return self._hasher.check_needs_rehash(hashed)
        except InvalidHashError:
            return True

    def dummy_verify(self, secret: str) -> None:
        """Spend the time of a real verify, for unknown users, so response times do not reveal who exists."""
        self.verify(self._dummy_hash, secret)

    @cached_property
    def _dummy_hash(self) -> str:
        # Same parameters as real hashes, hence the same verify cost; made lazily so that constructing a
        # hasher (e.g. only to call needs_rehash) costs nothing.
        return self.hash(secrets.token_urlsafe(24))


# --- passwords ---------------------------------------------------------------------------------------

PASSWORD_MIN_LENGTH: Final = 8
PASSWORD_MAX_LENGTH: Final = 128

# zxcvbn's run time grows quickly with length (and it refuses more than 72 characters by default); the
# first 72 characters are analysed. zxcvbn rates a prefix no stronger than the whole, so this errs, if
# at all, on the strict side.
_ZXCVBN_MAX_CHARS: Final = 72
_COMMON_PASSWORD_COUNT: Final = 10_000
_COMMON_PASSWORDS: Final[frozenset[str]] = frozenset(
    p.casefold() for p in FREQUENCY_LISTS["passwords"][:_COMMON_PASSWORD_COUNT]
)
# Below this length zxcvbn must rate a password "safely unguessable" (3); long passphrases need only 2.
_LONG_PASSWORD_LENGTH: Final = 16
# zxcvbn keeps the user inputs of the current call in a module-level dict, so concurrent calls from a
# thread pool would see each other's inputs.
_ZXCVBN_LOCK: Final = threading.Lock()

_PHONE_WINDOW: Final = 6
_MIN_NAME_LATIN: Final = 4  # shorter Latin fragments ("li", "wei") occur in too many ordinary words
_MIN_NAME_OTHER: Final = 2  # a two-character Chinese given name is distinctive
_NON_WORD: Final = re.compile(r"[\W_]+")
_ASCII_DIGITS: Final = frozenset("0123456789")


def password_problems(password: str, *, personal: Sequence[str] = ()) -> list[str]:
    """Reasons to refuse `password`, as stable codes; an empty list means acceptable.

    Codes, in this order: ``invalid_characters`` (NUL, other control characters, lone surrogates),
    ``too_short``, ``too_long``, ``too_common``, ``too_weak``, ``contains_personal_info``. `personal`
    holds the user's own data (phone number, name, e-mail…); it is also given to zxcvbn as user inputs.
    A password longer than PASSWORD_MAX_LENGTH is not run through zxcvbn, so it is only reported as
    ``too_long`` (plus the cheap checks).
    """
    problems: list[str] = []
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in password):
        problems.append("invalid_characters")
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append("too_short")
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append("too_long")
    else:
        problems.extend(_strength_problems(password, personal))
    if _contains_personal_info(password, personal):
        problems.append("contains_personal_info")
    return problems


def _strength_problems(password: str, personal: Sequence[str]) -> list[str]:
    if not password:
        return ["too_weak"]  # zxcvbn itself fails on the empty string
    analysed = password[:_ZXCVBN_MAX_CHARS]
    with _ZXCVBN_LOCK:
        result: dict[str, Any] = zxcvbn(analysed, user_inputs=_zxcvbn_inputs(personal))
    problems: list[str] = []
    if password.casefold() in _COMMON_PASSWORDS or (
        analysed == password and _is_single_password_match(result["sequence"], len(password))
    ):
        problems.append("too_common")
    min_score = 3 if len(password) < _LONG_PASSWORD_LENGTH else 2
    if int(result["score"]) < min_score:
        problems.append("too_weak")
    return problems


def _is_single_password_match(sequence: list[dict[str, object]], length: int) -> bool:
    # The whole password is one entry of zxcvbn's password dictionary (possibly l33t-spoken or reversed).
    if len(sequence) != 1:
        return False
    match = sequence[0]
    return (
        match["pattern"] == "dictionary"
        and match["dictionary_name"] == "passwords"
        and match["i"] == 0
        and match["j"] == length - 1
    )


def _zxcvbn_inputs(personal: Sequence[str]) -> list[str]:
    inputs = list(personal)
    for item in personal:
        inputs.extend(_name_fragments(item))
        digits = _ascii_digits(item)
        if digits and digits != item:
            inputs.append(digits)
    return inputs


def _contains_personal_info(password: str, personal: Sequence[str]) -> bool:
    # Compare on letters and digits only, so "138-0013-8000" and "Zhang Wei" are found however spelled.
    squeezed = _NON_WORD.sub("", password.casefold())
    for item in personal:
        digits = _ascii_digits(item)
        # Any six consecutive digits of the phone number; the country code ("86") is a harmless extra.
        for start in range(len(digits) - _PHONE_WINDOW + 1):
            if digits[start : start + _PHONE_WINDOW] in squeezed:
                return True
        if any(fragment in squeezed for fragment in _name_fragments(item)):
            return True
    return False


def _name_fragments(item: str) -> list[str]:
    """The whole name without separators and its words, skipping all-digit parts and too-short ones."""
    folded = item.casefold()
    candidates = [_NON_WORD.sub("", folded), *_NON_WORD.split(folded)]
    fragments: list[str] = []
    for candidate in candidates:
        if not candidate or candidate.isdigit() or candidate in fragments:
            continue
        minimum = _MIN_NAME_LATIN if candidate.isascii() else _MIN_NAME_OTHER
        if len(candidate) >= minimum:
            fragments.append(candidate)
    return fragments


def _ascii_digits(text: str) -> str:
    return "".join(c for c in text if c in _ASCII_DIGITS)


# --- payment PINs --------------------------------------------------------------------------------------

PIN_LENGTH: Final = 6

# Most-used six-digit PINs in China and elsewhere: "love" numbers (520 = 我爱你, 1314 = 一生一世), lucky
# numbers (6, 8, 168 = 一路发, 518 = 我要发), keypad lines and diagonals, mirrored and stepped sequences.
# Repeated-digit and straight sequences are caught by their own rules and need not be listed.
COMMON_PINS: Final[frozenset[str]] = frozenset(
    """
    123123 520520 521521 520131 168168 518518 666888 888666 147258 258369 159357 741852 147369 123321
    112233 123654 789456 456123 654123 101010 202020 131420 201314 521314 520134 131452 147852 123789
    987321 321654 789123 369258 852963 963852 357159 159753 357951 258258 369369 147147 456456 789789
    321321 654654 123000 100200 112358 314159 142857 246810 135790 102030 010203 123412 121314 168888
    518888 668888 888999 999888 741963 963741 135246
    """.split()
)

_DIGITS: Final = "0123456789"
# Bit i of a PIN's flags stands for reason _PIN_REASONS[i]; the order is the order pin_problems reports.
_PIN_REASONS: Final = ("repeated", "sequential", "common", "date_like")


def _repeated_pins() -> Iterator[str]:
    """Every PIN made of at most two distinct digits (some twice; 2,800 distinct). Pairs cover aaaaaa too."""
    for a, b in itertools.combinations(_DIGITS, 2):
        for digits in itertools.product((a, b), repeat=PIN_LENGTH):
            yield "".join(digits)


def _sequential_pins() -> Iterator[str]:
    """Ascending or descending runs, wrapping 9→0 (890123, 109876): 20 PINs."""
    for start in range(10):
        for step in (1, -1):
            yield "".join(_DIGITS[(start + step * i) % 10] for i in range(PIN_LENGTH))


def _date_like_pins() -> Iterator[str]:
    """Birthdays as YYMMDD, MMDDYY, DDMMYY (valid for 19YY or 20YY) and 19YYMM / 20YYMM."""
    for yy in range(100):
        year = f"{yy:02d}"
        # Feb 29 exists for some 19YY/20YY exactly when YY is divisible by 4 (2000 was a leap year).
        leap = yy % 4 == 0
        for month in range(1, 13):
            mm = f"{month:02d}"
            for day in range(1, calendar.monthrange(2000 if leap else 2001, month)[1] + 1):
                dd = f"{day:02d}"
                yield year + mm + dd
                yield mm + dd + year
                yield dd + mm + year
            yield "19" + year + mm
            yield "20" + year + mm


@cache
def _pin_flags() -> bytes:
    """One byte of reason flags per PIN 000000…999999.

    Enumerating the refused PINs once (about 0.2 s and 1 MB, on first use) turns every later check into
    one index, which keeps pin_problems fast enough to audit all 10^6 PINs in a unit test.
    """
    table = bytearray(10**PIN_LENGTH)
    sources = (_repeated_pins(), _sequential_pins(), COMMON_PINS, _date_like_pins())
    for bit, pins in enumerate(sources):
        for pin in pins:
            table[int(pin)] |= 1 << bit
    return bytes(table)


_REASONS_BY_FLAGS: Final = tuple(
    tuple(reason for bit, reason in enumerate(_PIN_REASONS) if flags & (1 << bit))
    for flags in range(1 << len(_PIN_REASONS))
)


def pin_problems(pin: str, *, phone: str | None = None) -> list[str]:
    """Reasons to refuse a six-digit payment PIN, as stable codes; an empty list means acceptable.

    ``not_six_digits`` (then nothing else is checked), and otherwise, in this order: ``repeated`` (at most
    two distinct digits), ``sequential`` (ascending or descending, wrapping 9→0), ``common``,
    ``date_like`` (a birthday as YYMMDD, MMDDYY, DDMMYY or 19YYMM/20YYMM), ``from_phone`` (consecutive
    digits of `phone`). Takes about a microsecond, so all 10^6 PINs can be audited in a test.
    """
    if len(pin) != PIN_LENGTH or not (pin.isascii() and pin.isdigit()):
        return ["not_six_digits"]
    problems = list(_REASONS_BY_FLAGS[_pin_flags()[int(pin)]])
    if phone is not None and pin in _ascii_digits(phone):
        problems.append("from_phone")
    return problems

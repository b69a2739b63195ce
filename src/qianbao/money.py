"""Money: exact amounts in integer minor units.

Rules (see GUIDE.md section 3):

- An amount is an ``int`` count of the currency's minor unit (fen for CNY, yen for JPY, fils for BHD)
  plus an upper-case ISO 4217 code. Exponents come from the ``iso4217`` package; currencies without a
  minor unit (XAU, XDR, ...) cannot be held.
- Arithmetic never mixes currencies (``CurrencyMismatchError``) and never touches floats (``TypeError``).
  Multiplication is by ``int`` only; splitting goes through :func:`allocate`, whose parts sum back exactly.
- ``Decimal`` appears only at the edges (display, parsing, fees and FX rates), always with an explicit
  rounding mode; conversions are exact whatever the ambient decimal context is.
"""

from __future__ import annotations

import decimal
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from iso4217 import Currency

__all__ = [
    "CurrencyInfo",
    "CurrencyMismatchError",
    "Money",
    "MoneyError",
    "MoneyParseError",
    "UnknownCurrencyError",
    "allocate",
    "currency",
    "format_money",
    "parse_money",
    "split_evenly",
]


class MoneyError(Exception):
    """Base class for money errors."""


class CurrencyMismatchError(MoneyError):
    """Two amounts of different currencies were combined or compared."""


class UnknownCurrencyError(MoneyError):
    """Not an ISO 4217 code, or a code without a minor unit (XAU, XDR, ...)."""


class MoneyParseError(MoneyError):
    """Text could not be read as an exact amount."""


@dataclass(frozen=True, slots=True)
class CurrencyInfo:
    code: str
    numeric: int
    exponent: int


@functools.lru_cache(maxsize=256)  # only successful lookups are cached: fewer than 180 codes
def currency(code: str) -> CurrencyInfo:
    """Look up an upper-case ISO 4217 code; raise ``UnknownCurrencyError`` if it is unusable."""
    if not isinstance(code, str):
        raise TypeError(f"currency code must be a str, not {type(code).__name__}")
    try:
        entry = Currency(code)
    except ValueError:
        raise UnknownCurrencyError(f"unknown currency code {code!r}") from None
    if entry.exponent is None:
        raise UnknownCurrencyError(f"currency {code!r} has no minor unit")
    return CurrencyInfo(code=entry.code, numeric=entry.number, exponent=entry.exponent)


# Money's field and several parameters are named `currency`; methods use this alias to avoid shadowing.
_info = currency

_ROUNDING_MODES = frozenset(getattr(decimal, name) for name in dir(decimal) if name.startswith("ROUND_"))


# "1E+999999999" would otherwise build a billion-digit int; no real amount is anywhere near this.
_MAX_SCALE = 1000


def _round_scaled(coefficient: int, exponent: int, rounding: str) -> int:
    """Round ``coefficient * 10**exponent`` to an int with ``rounding``, exactly."""
    if rounding not in _ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}")
    if exponent > _MAX_SCALE:
        raise ValueError(f"amount out of range: 1E+{exponent} minor units")
    # Built from a tuple, the Decimal is exact; to_integral_value ignores the context's precision,
    # so no digits are silently lost to the default 28-digit context.
    sign, digits, _ = Decimal(coefficient).as_tuple()
    return int(Decimal((sign, digits, exponent)).to_integral_value(rounding=rounding))


def _split_decimal(value: Decimal) -> tuple[int, int]:
    """Return ``(coefficient, exponent)`` with ``value == coefficient * 10**exponent``."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # NaN and infinities carry a letter here
        raise ValueError(f"amount must be finite, not {value}")
    coefficient = int("".join(map(str, digits)))
    return (-coefficient if sign else coefficient), exponent


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: ``minor`` units of ``currency`` (``Money(1234, "CNY")`` is ¥12.34)."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass; True fen is a bug, not an amount.
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise TypeError(f"minor must be an int, not {type(self.minor).__name__}")
        _info(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def from_decimal(cls, value: Decimal | str, currency: str, rounding: str = ROUND_HALF_EVEN) -> Money:
        """Convert a major-unit amount (``Decimal("12.345")``) rounding with ``rounding``."""
        # int is refused too: 1234 could mean yuan or fen, so the caller must say which.
        if isinstance(value, str):
            try:
                value = Decimal(value)
            except decimal.InvalidOperation:
                raise MoneyParseError(f"not a decimal number: {value!r}") from None
        elif not isinstance(value, Decimal):
            raise TypeError(f"value must be a Decimal or str, not {type(value).__name__}")
        coefficient, exponent = _split_decimal(value)
        return cls(_round_scaled(coefficient, exponent + _info(currency).exponent, rounding), currency)

    def to_decimal(self) -> Decimal:
        """The exact major-unit value, with the currency's number of places (``Decimal("12.34")``)."""
        sign, digits, _ = Decimal(self.minor).as_tuple()
        return Decimal((sign, digits, -_info(self.currency).exponent))

    def apply_rate(self, rate: Decimal, rounding: str, *, currency: str | None = None) -> Money:
        """Multiply by a Decimal ``rate`` (fee, FX) and round with ``rounding``.

        With ``currency`` the result is in that currency (an FX conversion: ``rate`` is target units per
        source unit, in major units); otherwise it stays in this one.
        """
        if not isinstance(rate, Decimal):
            raise TypeError(f"rate must be a Decimal, not {type(rate).__name__}")
        target = self.currency if currency is None else currency
        coefficient, exponent = _split_decimal(rate)
        shift = exponent - _info(self.currency).exponent + _info(target).exponent
        return Money(_round_scaled(self.minor * coefficient, shift, rounding), target)

    @property
    def is_zero(self) -> bool:
        return self.minor == 0

    @property
    def is_positive(self) -> bool:
        return self.minor > 0

    @property
    def is_negative(self) -> bool:
        return self.minor < 0

    def __bool__(self) -> bool:
        return self.minor != 0

    def __str__(self) -> str:
        return format_money(self, "code")

    def _same_currency(self, other: Money, action: str) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"cannot {action} {self.currency} and {other.currency}")

    # Binary operators return NotImplemented for non-Money operands so Python raises TypeError.
    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "add")
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "subtract")
        return Money(self.minor - other.minor, self.currency)

    def __mul__(self, other: int) -> Money:
        if not isinstance(other, int) or isinstance(other, bool):
            return NotImplemented
        return Money(self.minor * other, self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __pos__(self) -> Money:
        return self

    def __abs__(self) -> Money:
        return Money(abs(self.minor), self.currency)

    # Equality (from the dataclass) is False across currencies; ordering them is an error.
    # total_ordering derives <=, >, >= from this, so they raise the same way.
    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.minor < other.minor


def allocate(total: Money, ratios: Sequence[int]) -> list[Money]:
    """Split ``total`` pro rata to ``ratios`` so the parts sum exactly to ``total``.

    Largest remainder: every part gets the floor of its exact share, then the leftover minor units go
    one each to the largest fractional remainders (ties: lower index). Each part is within one minor
    unit of its exact share. A negative total is split as its absolute value, then negated.
    """
    for r in ratios:
        if not isinstance(r, int) or isinstance(r, bool):
            raise TypeError(f"ratios must be ints, not {type(r).__name__}")
        if r < 0:
            raise ValueError(f"ratios must be non-negative, got {r}")
    weight = sum(ratios)
    if weight <= 0:
        raise ValueError("ratios must have a positive sum")
    amount = abs(total.minor)
    shares = [divmod(amount * r, weight) for r in ratios]
    parts = [floor for floor, _ in shares]
    leftover = amount - sum(parts)
    # leftover < number of non-zero remainders, so zero-ratio parts never receive a unit.
    for i in sorted(range(len(shares)), key=lambda i: (-shares[i][1], i))[:leftover]:
        parts[i] += 1
    sign = -1 if total.minor < 0 else 1
    return [Money(sign * p, total.currency) for p in parts]


def split_evenly(total: Money, n: int) -> list[Money]:
    """Split ``total`` into ``n`` parts differing by at most one minor unit (earlier parts larger)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    return allocate(total, [1] * n)


# Display symbols; currencies not listed are shown in code style.
_SYMBOLS = {"CNY": "¥", "JPY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "HKD": "HK$"}
# Symbols read by parse_money and the currencies each may stand for (the first is the default).
_SYMBOL_CURRENCIES = {
    "¥": ("CNY", "JPY"),
    "￥": ("CNY", "JPY"),
    "$": ("USD",),
    "US$": ("USD",),
    "€": ("EUR",),
    "£": ("GBP",),
    "HK$": ("HKD",),
}
_SYMBOL_ALTERNATIVES = "|".join(re.escape(s) for s in sorted(_SYMBOL_CURRENCIES, key=len, reverse=True))
# [0-9] rather than \d, which would also accept non-ASCII digits.
_MONEY_RE = re.compile(
    rf"(?P<sign1>[+-]?)\s*(?:(?P<symbol>{_SYMBOL_ALTERNATIVES})|(?P<prefix>[A-Za-z]{{3}}))?\s*"
    r"(?P<sign2>[+-]?)\s*(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<frac>[0-9]+))?"
    r"(?:\s*(?P<suffix>[A-Za-z]{3}))?"
)


def format_money(m: Money, style: Literal["symbol", "code"] = "symbol") -> str:
    """``"¥1,234.50"`` (symbol style, grouped) or ``"1234.50 CNY"`` (code style, exact, parseable)."""
    if style not in ("symbol", "code"):
        raise ValueError(f"unknown style {style!r}")
    exponent = _info(m.currency).exponent
    whole, frac = divmod(abs(m.minor), 10**exponent)
    sign = "-" if m.minor < 0 else ""
    places = f".{frac:0{exponent}d}" if exponent else ""
    symbol = _SYMBOLS.get(m.currency)
    if style == "code" or symbol is None:
        return f"{sign}{whole}{places} {m.currency}"
    return f"{sign}{symbol}{whole:,}{places}"


def parse_money(text: str, default_currency: str | None = None) -> Money:
    """Read ``"12.34 CNY"``, ``"CNY 12.34"``, ``"¥1,234.50"``, ``"-5 USD"`` or a bare number exactly.

    ``default_currency`` applies to bare numbers, and picks JPY for ``¥`` when it is JPY.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    if default_currency is not None:
        _info(default_currency)  # a bad default is a programming error, not bad input
    if not text.strip():
        raise MoneyParseError("empty amount")
    match = _MONEY_RE.fullmatch(text.strip())
    if match is None:
        raise MoneyParseError(f"cannot read {text!r} as an amount (expected e.g. '12.34 CNY' or '¥12.34')")
    if match["sign1"] and match["sign2"]:
        raise MoneyParseError(f"more than one sign in {text!r}")
    if match["prefix"] and match["suffix"]:
        raise MoneyParseError(f"more than one currency code in {text!r}")
    code = (match["prefix"] or match["suffix"] or "").upper() or None
    if match["symbol"]:
        allowed = _SYMBOL_CURRENCIES[match["symbol"]]
        if code is None:
            code = default_currency if default_currency in allowed else allowed[0]
        elif code not in allowed:
            raise MoneyParseError(f"symbol {match['symbol']} does not match currency {code} in {text!r}")
    code = code or default_currency
    if code is None:
        raise MoneyParseError(f"no currency in {text!r} and no default currency")
    try:
        exponent = _info(code).exponent
    except UnknownCurrencyError as exc:
        raise MoneyParseError(f"{exc} in {text!r}") from None
    frac = match["frac"] or ""
    if len(frac) > exponent:
        raise MoneyParseError(f"{text!r} has {len(frac)} decimal places; {code} allows {exponent}")
    try:
        minor = int(match["whole"].replace(",", "")) * 10**exponent + int(frac.ljust(exponent, "0") or "0")
    except ValueError:  # more digits than int() will convert
        raise MoneyParseError(f"amount too long in {text!r}") from None
    return Money(-minor if "-" in (match["sign1"], match["sign2"]) else minor, code)

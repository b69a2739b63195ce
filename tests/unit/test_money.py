"""Tests for qianbao.money: integer minor units, exact edges, largest-remainder allocation."""

from __future__ import annotations

import dataclasses
import decimal
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iso4217 import Currency

from qianbao.money import (
    CurrencyInfo,
    CurrencyMismatchError,
    Money,
    MoneyError,
    MoneyParseError,
    UnknownCurrencyError,
    allocate,
    currency,
    format_money,
    parse_money,
    split_evenly,
)

USABLE = sorted(c.code for c in Currency if c.exponent is not None)
BY_EXPONENT = {e: [c for c in USABLE if currency(c).exponent == e] for e in (0, 2, 3)}
ROUNDTRIP_CODES = BY_EXPONENT[0] + BY_EXPONENT[2] + BY_EXPONENT[3]


def cny(minor: int) -> Money:
    return Money(minor, "CNY")


def usd(minor: int) -> Money:
    return Money(minor, "USD")


# --- currencies ---------------------------------------------------------------------------------


def test_currency_lookup() -> None:
    assert currency("CNY") == CurrencyInfo(code="CNY", numeric=156, exponent=2)
    assert currency("JPY").exponent == 0
    assert currency("BHD").exponent == 3
    assert currency("USD").numeric == 840


def test_currency_lookup_is_cached() -> None:
    assert currency("EUR") is currency("EUR")


@pytest.mark.parametrize("code", ["ZZZ", "cny", "", "CNYX", "XAU", "XDR", "XXX"])
def test_unknown_or_unusable_currency(code: str) -> None:
    with pytest.raises(UnknownCurrencyError):
        currency(code)


def test_error_hierarchy() -> None:
    for exc in (CurrencyMismatchError, UnknownCurrencyError, MoneyParseError):
        assert issubclass(exc, MoneyError)
    assert issubclass(MoneyError, Exception)


# --- construction -------------------------------------------------------------------------------


def test_construct() -> None:
    m = Money(1234, "CNY")
    assert (m.minor, m.currency) == (1234, "CNY")
    assert Money.zero("JPY") == Money(0, "JPY")


@pytest.mark.parametrize("minor", [12.34, 12.0, Decimal("12"), True, False, "12", None])
def test_minor_must_be_int(minor: Any) -> None:
    with pytest.raises(TypeError):
        Money(minor, "CNY")


@pytest.mark.parametrize("code", ["ZZZ", "cny", "XAU"])
def test_currency_must_be_known(code: str) -> None:
    with pytest.raises(UnknownCurrencyError):
        Money(1, code)


def test_currency_must_be_str() -> None:
    with pytest.raises(TypeError):
        Money(1, 156)  # type: ignore[arg-type]


def test_frozen_and_hashable() -> None:
    m = cny(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.minor = 2  # type: ignore[misc]
    assert len({cny(1), cny(1), usd(1)}) == 2


# --- arithmetic ---------------------------------------------------------------------------------


def test_add_sub_same_currency() -> None:
    assert cny(150) + cny(50) == cny(200)
    assert cny(150) - cny(200) == cny(-50)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_mixing_currencies_raises(op: str) -> None:
    with pytest.raises(CurrencyMismatchError, match="CNY and USD"):
        if op == "add":
            cny(1) + usd(1)
        else:
            cny(1) - usd(1)


@pytest.mark.parametrize("other", [1, 1.5, Decimal("1"), 0, "1", None])
def test_adding_non_money_raises_type_error(other: Any) -> None:
    m: Any = cny(100)
    with pytest.raises(TypeError):
        m + other
    with pytest.raises(TypeError):
        other + m
    with pytest.raises(TypeError):
        m - other
    with pytest.raises(TypeError):
        other - m


def test_sum_needs_explicit_start() -> None:
    assert sum([cny(1), cny(2)], Money.zero("CNY")) == cny(3)


def test_unary() -> None:
    assert -cny(5) == cny(-5)
    assert +cny(5) == cny(5)
    assert abs(cny(-5)) == cny(5)
    assert abs(cny(5)) == cny(5)


def test_multiply_by_int_only() -> None:
    assert cny(25) * 4 == cny(100)
    assert 3 * cny(-2) == cny(-6)


@pytest.mark.parametrize("factor", [1.5, 2.0, Decimal("2"), True, cny(2)])
def test_multiply_by_non_int_raises(factor: Any) -> None:
    m: Any = cny(2)
    with pytest.raises(TypeError):
        m * factor
    with pytest.raises(TypeError):
        factor * m


def test_division_is_not_supported() -> None:
    m: Any = cny(10)
    with pytest.raises(TypeError):
        m / 2
    with pytest.raises(TypeError):
        m // 2


def test_comparisons() -> None:
    assert cny(1) < cny(2)
    assert cny(2) <= cny(2)
    assert cny(3) > cny(2)
    assert cny(2) >= cny(2)
    assert not cny(2) < cny(2)
    assert max(cny(1), cny(3), cny(2)) == cny(3)


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
def test_comparing_currencies_raises(op: str) -> None:
    a, b = cny(1), usd(1)
    with pytest.raises(CurrencyMismatchError):
        _compare(a, b, op)
    with pytest.raises(TypeError):
        _compare(a, 1, op)


def _compare(a: Any, b: Any, op: str) -> bool:
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def test_equality_across_currencies_is_false_not_error() -> None:
    assert cny(1) != usd(1)
    one: Any = 1
    assert cny(1) != one


def test_bool_and_sign_properties() -> None:
    assert not Money.zero("CNY")
    assert cny(1) and cny(-1)
    assert cny(0).is_zero and not cny(0).is_positive and not cny(0).is_negative
    assert cny(5).is_positive and not cny(5).is_zero
    assert cny(-5).is_negative and not cny(-5).is_positive


# --- allocation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "ratios", "expected"),
    [
        (100, [1, 1, 1], [34, 33, 33]),
        (10, [1, 1, 1], [4, 3, 3]),
        (100, [3, 7], [30, 70]),
        (1, [1, 3], [0, 1]),  # the largest remainder wins over the lower index
        (5, [3, 3, 4], [2, 1, 2]),  # equal remainders: lower index first
        (2, [1, 1, 1], [1, 1, 0]),
        (7, [0, 1, 0, 1], [0, 4, 0, 3]),  # zero ratios get nothing
        (0, [1, 2], [0, 0]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (-1, [1, 3], [0, -1]),
        (99, [5], [99]),
    ],
)
def test_allocate_examples(total: int, ratios: list[int], expected: list[int]) -> None:
    assert allocate(cny(total), ratios) == [cny(x) for x in expected]


@pytest.mark.parametrize("ratios", [[], [0], [0, 0], [1, -1], [-1, 2]])
def test_allocate_rejects_bad_ratios(ratios: list[int]) -> None:
    with pytest.raises(ValueError, match="ratio"):
        allocate(cny(100), ratios)


@pytest.mark.parametrize("ratios", [[1.5, 1], [True, 1], [Decimal(1)]])
def test_allocate_rejects_non_int_ratios(ratios: list[Any]) -> None:
    with pytest.raises(TypeError):
        allocate(cny(100), ratios)


def test_split_evenly() -> None:
    assert split_evenly(cny(100), 3) == [cny(34), cny(33), cny(33)]
    assert split_evenly(Money(5, "JPY"), 5) == [Money(1, "JPY")] * 5
    assert split_evenly(cny(-1), 2) == [cny(-1), cny(0)]


@pytest.mark.parametrize(
    ("n", "exc"), [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_split_evenly_rejects_bad_n(n: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        split_evenly(cny(100), n)


@given(
    total=st.integers(min_value=-(10**15), max_value=10**15),
    ratios=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=20).filter(any),
)
def test_allocate_properties(total: int, ratios: list[int]) -> None:
    parts = allocate(cny(total), ratios)
    assert len(parts) == len(ratios)
    assert sum(p.minor for p in parts) == total
    assert all(p.currency == "CNY" for p in parts)
    weight = sum(ratios)
    for part, ratio in zip(parts, ratios, strict=True):
        assert abs(part.minor - Fraction(total * ratio, weight)) < 1


@given(total=st.integers(min_value=-(10**12), max_value=10**12), n=st.integers(min_value=1, max_value=50))
def test_split_evenly_properties(total: int, n: int) -> None:
    parts = [p.minor for p in split_evenly(cny(total), n)]
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1


# --- decimal edges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code", "rounding", "expected"),
    [
        ("12.34", "CNY", ROUND_HALF_EVEN, 1234),
        (Decimal("12.34"), "CNY", ROUND_HALF_EVEN, 1234),
        ("12.345", "CNY", ROUND_HALF_EVEN, 1234),
        ("12.335", "CNY", ROUND_HALF_EVEN, 1234),
        ("12.345", "CNY", ROUND_HALF_UP, 1235),
        ("12.341", "CNY", ROUND_UP, 1235),
        ("12.349", "CNY", ROUND_DOWN, 1234),
        ("-12.341", "CNY", ROUND_FLOOR, -1235),
        ("-12.349", "CNY", ROUND_CEILING, -1234),
        ("1234.5", "JPY", ROUND_HALF_EVEN, 1234),
        ("1.2345", "BHD", ROUND_HALF_UP, 1235),
        ("5", "CNY", ROUND_HALF_EVEN, 500),
        ("1E+3", "JPY", ROUND_HALF_EVEN, 1000),
        ("-0.004", "CNY", ROUND_HALF_EVEN, 0),
    ],
)
def test_from_decimal(value: Decimal | str, code: str, rounding: str, expected: int) -> None:
    assert Money.from_decimal(value, code, rounding) == Money(expected, code)


def test_from_decimal_default_rounding_is_half_even() -> None:
    assert Money.from_decimal("0.125", "CNY") == cny(12)
    assert Money.from_decimal("0.135", "CNY") == cny(14)


def test_from_decimal_is_exact_beyond_context_precision() -> None:
    big = "9" * 40 + ".99"
    assert Money.from_decimal(big, "CNY").minor == int("9" * 40 + "99")
    with decimal.localcontext() as ctx:
        ctx.prec = 5
        assert Money.from_decimal(Decimal("123456789.125"), "CNY").minor == 12345678912


@pytest.mark.parametrize("value", [12.34, 12, True, None])
def test_from_decimal_rejects_non_decimal(value: Any) -> None:
    with pytest.raises(TypeError):
        Money.from_decimal(value, "CNY")


@pytest.mark.parametrize("value", ["NaN", "Infinity", Decimal("-Infinity"), "1E+999999999"])
def test_from_decimal_rejects_non_finite_or_huge(value: Decimal | str) -> None:
    with pytest.raises(ValueError):
        Money.from_decimal(value, "CNY")


def test_from_decimal_bad_string_and_bad_rounding() -> None:
    with pytest.raises(MoneyParseError):
        Money.from_decimal("twelve", "CNY")
    with pytest.raises(ValueError, match="rounding"):
        Money.from_decimal("1.005", "CNY", "ROUND_SOMETIMES")
    with pytest.raises(UnknownCurrencyError):
        Money.from_decimal("1", "XAU")


@pytest.mark.parametrize(
    ("money", "expected"),
    [
        (cny(1234), "12.34"),
        (cny(-5), "-0.05"),
        (cny(0), "0.00"),
        (Money(1234, "JPY"), "1234"),
        (Money(1234, "BHD"), "1.234"),
        (cny(10**40), "1" + "0" * 38 + ".00"),
    ],
)
def test_to_decimal_is_exact(money: Money, expected: str) -> None:
    d = money.to_decimal()
    assert isinstance(d, Decimal)
    assert str(d) == expected
    assert d == Decimal(expected)


@pytest.mark.parametrize(
    ("minor", "rate", "rounding", "expected"),
    [
        (1000, "0.006", ROUND_HALF_UP, 6),
        (1234, "0.006", ROUND_HALF_UP, 7),  # 7.404
        (1234, "0.006", ROUND_UP, 8),
        (1234, "0.006", ROUND_DOWN, 7),
        (250, "0.01", ROUND_HALF_EVEN, 2),  # 2.5 -> 2
        (350, "0.01", ROUND_HALF_EVEN, 4),  # 3.5 -> 4
        (-1234, "0.006", ROUND_FLOOR, -8),
        (100, "1", ROUND_HALF_EVEN, 100),
        (100, "2.5", ROUND_HALF_EVEN, 250),
    ],
)
def test_apply_rate(minor: int, rate: str, rounding: str, expected: int) -> None:
    assert cny(minor).apply_rate(Decimal(rate), rounding) == cny(expected)


def test_apply_rate_into_another_currency() -> None:
    # 100.00 CNY at 21.5 JPY per CNY, and 1000 JPY at 0.0465 CNY per JPY.
    assert cny(10000).apply_rate(Decimal("21.5"), ROUND_HALF_EVEN, currency="JPY") == Money(2150, "JPY")
    assert Money(1000, "JPY").apply_rate(Decimal("0.0465"), ROUND_HALF_UP, currency="CNY") == cny(4650)
    assert Money(1000, "JPY").apply_rate(Decimal("0.00465"), ROUND_HALF_UP, currency="CNY") == cny(465)
    assert cny(100).apply_rate(Decimal("0.1234"), ROUND_DOWN, currency="BHD") == Money(123, "BHD")


@pytest.mark.parametrize(("rate", "exc"), [(0.006, TypeError), (2, TypeError), (Decimal("NaN"), ValueError)])
def test_apply_rate_rejects_bad_rates(rate: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        cny(100).apply_rate(rate, ROUND_HALF_EVEN)


def test_apply_rate_requires_valid_rounding() -> None:
    with pytest.raises(ValueError, match="rounding"):
        cny(100).apply_rate(Decimal("0.5"), "nearest")


@given(code=st.sampled_from(USABLE), minor=st.integers())
def test_decimal_round_trip(code: str, minor: int) -> None:
    m = Money(minor, code)
    assert Money.from_decimal(m.to_decimal(), code) == m
    assert Money.from_decimal(str(m.to_decimal()), code, ROUND_DOWN) == m


# --- formatting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "expected"),
    [
        (cny(1234), "¥12.34"),
        (cny(-1234), "-¥12.34"),
        (cny(123456789), "¥1,234,567.89"),
        (cny(5), "¥0.05"),
        (cny(0), "¥0.00"),
        (Money(123456, "JPY"), "¥123,456"),
        (Money(1234, "JPY"), "¥1,234"),
        (usd(199), "$1.99"),
        (Money(100000, "EUR"), "€1,000.00"),
        (Money(-1, "GBP"), "-£0.01"),
        (Money(123456, "HKD"), "HK$1,234.56"),
        (Money(1234567, "BHD"), "1234.567 BHD"),  # no symbol: code style
        (Money(5, "KRW"), "5 KRW"),
    ],
)
def test_format_symbol(money: Money, expected: str) -> None:
    assert format_money(money) == expected
    assert format_money(money, "symbol") == expected


@pytest.mark.parametrize(
    ("money", "expected"),
    [
        (cny(1234), "12.34 CNY"),
        (cny(-1234), "-12.34 CNY"),
        (cny(123456789), "1234567.89 CNY"),
        (cny(-5), "-0.05 CNY"),
        (Money(1234, "JPY"), "1234 JPY"),
        (Money(-1, "BHD"), "-0.001 BHD"),
        (Money(12345, "CLF"), "1.2345 CLF"),
    ],
)
def test_format_code(money: Money, expected: str) -> None:
    assert format_money(money, "code") == expected
    assert str(money) == expected


def test_format_rejects_unknown_style() -> None:
    with pytest.raises(ValueError, match="style"):
        format_money(cny(1), "fancy")  # type: ignore[arg-type]


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("12.34 CNY", None, cny(1234)),
        ("CNY 12.34", None, cny(1234)),
        ("¥12.34", None, cny(1234)),
        ("￥12.34", None, cny(1234)),
        ("¥12", "JPY", Money(12, "JPY")),
        ("¥12.34", "USD", cny(1234)),
        ("¥1,234 JPY", None, Money(1234, "JPY")),
        ("-5 USD", None, usd(-500)),
        ("+5 USD", None, usd(500)),
        ("USD -5", None, usd(-500)),
        ("-¥12.34", None, cny(-1234)),
        ("¥-12.34", None, cny(-1234)),
        ("1,234.50 CNY", None, cny(123450)),
        ("¥1,234,567.89", None, cny(123456789)),
        ("12 JPY", None, Money(12, "JPY")),
        ("12.3 CNY", None, cny(1230)),
        ("12.34", "CNY", cny(1234)),
        ("7", "BHD", Money(7000, "BHD")),
        ("12.34 USD", "CNY", usd(1234)),  # an explicit code beats the default
        ("  12.34   cny ", None, cny(1234)),
        ("12.34CNY", None, cny(1234)),
        ("$1.99", None, usd(199)),
        ("US$1.99", None, usd(199)),
        ("€10", None, Money(1000, "EUR")),
        ("£0.01", None, Money(1, "GBP")),
        ("HK$1,000.5", None, Money(100050, "HKD")),
        ("1.234 BHD", None, Money(1234, "BHD")),
        ("-0.00 CNY", None, cny(0)),
        ("9" * 40 + ".99 CNY", None, cny(int("9" * 40 + "99"))),
    ],
)
def test_parse(text: str, default: str | None, expected: Money) -> None:
    assert parse_money(text, default) == expected


@pytest.mark.parametrize(
    ("text", "default", "message"),
    [
        ("12.345 CNY", None, "3 decimal places; CNY allows 2"),
        ("12.5 JPY", None, "JPY allows 0"),
        ("1.2345 BHD", None, "BHD allows 3"),
        ("12.345", "CNY", "CNY allows 2"),
        ("", None, "empty"),
        ("   ", "CNY", "empty"),
        ("abc", None, "cannot read"),
        ("twelve CNY", None, "cannot read"),
        ("12.34.56 CNY", None, "cannot read"),
        ("1,23 CNY", None, "cannot read"),
        ("1234,567 CNY", None, "cannot read"),
        ("12. CNY", None, "cannot read"),
        ("1e3 CNY", None, "cannot read"),
        ("\u0661\u0662 CNY", None, "cannot read"),  # Arabic-Indic digits
        ("12 ZZZ", None, "unknown currency"),
        ("12 XAU", None, "no minor unit"),
        ("12.34", None, "no default currency"),
        ("--5 CNY", None, "more than one sign"),
        ("5- CNY", None, "cannot read"),
        ("-CNY -5", None, "more than one sign"),
        ("CNY 5 USD", None, "more than one currency"),
        ("$5 CNY", None, "does not match"),
        ("¥5 USD", None, "does not match"),
        ("1" * 5000 + " CNY", None, "too long"),
    ],
)
def test_parse_errors(text: str, default: str | None, message: str) -> None:
    with pytest.raises(MoneyParseError, match=message):
        parse_money(text, default)


def test_parse_bad_arguments() -> None:
    with pytest.raises(UnknownCurrencyError):
        parse_money("12", "ZZZ")
    with pytest.raises(TypeError):
        parse_money(12.34)  # type: ignore[arg-type]


@given(code=st.sampled_from(ROUNDTRIP_CODES), minor=st.integers(min_value=-(10**30), max_value=10**30))
def test_code_style_round_trip(code: str, minor: int) -> None:
    m = Money(minor, code)
    assert parse_money(format_money(m, "code")) == m
    assert parse_money(str(m)) == m


@pytest.mark.parametrize("exponent", [0, 2, 3])
def test_round_trip_covers_each_exponent(exponent: int) -> None:
    assert BY_EXPONENT[exponent]
    for code in BY_EXPONENT[exponent]:
        m = Money(-(10 ** (exponent + 3)) - 7, code)
        assert parse_money(format_money(m, "code")) == m


@given(
    code=st.sampled_from(["CNY", "USD", "EUR", "GBP", "HKD", "JPY"]),
    minor=st.integers(min_value=-(10**15), max_value=10**15),
)
def test_symbol_style_round_trip(code: str, minor: int) -> None:
    m = Money(minor, code)
    # ¥ alone means CNY, so JPY needs it as the default.
    assert parse_money(format_money(m, "symbol"), default_currency=code) == m


@given(
    code=st.sampled_from(USABLE),
    a=st.integers(min_value=-(10**18), max_value=10**18),
    b=st.integers(min_value=-(10**18), max_value=10**18),
)
def test_add_sub_inverse(code: str, a: int, b: int) -> None:
    x, y = Money(a, code), Money(b, code)
    assert (x + y) - y == x
    assert (x - y) + y == x
    assert x + y == y + x
    assert x - x == Money.zero(code)
    assert x + (-x) == Money.zero(code)

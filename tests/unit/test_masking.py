"""Tests for qianbao.security.masking: exact display forms, and totality on any input."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qianbao.security.masking import (
    FULLY_MASKED,
    mask_account_number,
    mask_email,
    mask_id_number,
    mask_name,
    mask_name_for_payee,
    mask_phone,
)

MASKERS: list[Callable[[str], str]] = [
    mask_phone,
    mask_name,
    mask_name_for_payee,
    mask_id_number,
    mask_email,
    mask_account_number,
]

ODD_INPUTS = ["", " ", "x", "*", "\x00", "@", "+", "++", "-", "----", "\u3000", "😀", "\n\t", "a" * 10_000]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+8613800138000", "138****8000"),
        ("+86 138-0013-8000", "138****8000"),
        ("+8619912345678", "199****5678"),
        ("+447911123456", "+44 79******56"),
        ("+14155552671", "+1 41******71"),
        ("+861012345678", "+86 10******78"),  # a Beijing landline is not a mobile: generic form
        ("+3906698", "+39 *****"),  # national number shorter than 6 digits: all stars
        ("13800138000", "*********00"),  # no country code: unparsable, all but the last 2 hidden
        ("+9991234567", "*********67"),  # unknown country code
        ("12345", FULLY_MASKED),
        ("+86", FULLY_MASKED),
        ("", FULLY_MASKED),
        ("  ", FULLY_MASKED),
        ("abc", FULLY_MASKED),
        ("not a phone", "*********ne"),
    ],
)
def test_mask_phone(value: str, expected: str) -> None:
    assert mask_phone(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("张三", "张*"),
        ("王小明", "王**"),
        ("欧阳娜娜", "欧***"),
        ("Alice Wang", "A**** W***"),
        ("  Alice   Wang ", "A**** W***"),
        ("阿卜杜拉·买买提", "阿*******"),
        ("Madonna", "M******"),
        ("A B", "* *"),
        ("张", "*"),
        ("x", "*"),
        ("", FULLY_MASKED),
        ("   ", FULLY_MASKED),
        ("\u3000", FULLY_MASKED),
    ],
)
def test_mask_name(value: str, expected: str) -> None:
    assert mask_name(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("李四", "*四"),
        ("王小明", "**明"),
        ("欧阳娜娜", "***娜"),
        ("Madonna", "******a"),
        ("Alice Wang", "***** W***"),
        ("Mary Ann Lee", "**** *** L**"),
        ("Wang A", "**** *"),
        ("李", "*"),
        ("", FULLY_MASKED),
        (" \t", FULLY_MASKED),
    ],
)
def test_mask_name_for_payee(value: str, expected: str) -> None:
    assert mask_name_for_payee(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("110101199003074514", "1101**********4514"),
        ("11010119900307451X", "1101**********451X"),
        ("110101 19900307 4514", "1101**********4514"),
        ("E12345678", "E1*****78"),  # a passport number
        ("12345678", "12****78"),
        ("1234567", FULLY_MASKED),
        ("1", FULLY_MASKED),
        ("", FULLY_MASKED),
        ("--", FULLY_MASKED),
    ],
)
def test_mask_id_number(value: str, expected: str) -> None:
    assert mask_id_number(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice@example.com", "a****@example.com"),
        ("  bob@example.org ", "b**@example.org"),
        ("a@example.com", "*@example.com"),
        ('"a@b"@example.com', '"****@example.com'),  # quoted local part: split at the last @
        ("user@localhost", "u***@localhost"),
        ("alice", FULLY_MASKED),
        ("@example.com", FULLY_MASKED),
        ("alice@", FULLY_MASKED),
        ("@", FULLY_MASKED),
        ("ali ce@example.com", FULLY_MASKED),
        ("", FULLY_MASKED),
    ],
)
def test_mask_email(value: str, expected: str) -> None:
    assert mask_email(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("6222021234561234", "**** 1234"),
        ("6222 0212 3456 1234 567", "**** 4567"),
        ("6222-0212-3456-9876", "**** 9876"),
        ("GB29 NWBK 6016 1331 9268 19", "**** 6819"),
        ("12345678", "**** 5678"),
        ("1234567", FULLY_MASKED),
        ("1234", FULLY_MASKED),
        ("", FULLY_MASKED),
        ("6222/0212/3456/1234", FULLY_MASKED),
        ("--------", FULLY_MASKED),
    ],
)
def test_mask_account_number(value: str, expected: str) -> None:
    assert mask_account_number(value) == expected


@pytest.mark.parametrize("mask", MASKERS, ids=lambda mask: mask.__name__)
@pytest.mark.parametrize("value", ODD_INPUTS)
def test_odd_inputs_are_masked_without_raising(mask: Callable[[str], str], value: str) -> None:
    masked = mask(value)
    assert isinstance(masked, str)
    assert "*" in masked
    if len(value.strip()) > 1:
        assert masked != value


@pytest.mark.parametrize("mask", MASKERS, ids=lambda mask: mask.__name__)
@given(value=st.text())
def test_every_mask_is_total_and_hides_something(mask: Callable[[str], str], value: str) -> None:
    masked = mask(value)
    assert "*" in masked
    if value.strip() and "*" not in value:
        assert masked != value


@given(subscriber=st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_chinese_mobiles_keep_exactly_the_first_three_and_last_four(subscriber: str) -> None:
    masked = mask_phone("+86" + subscriber)
    assert re.fullmatch(r"1[3-9][0-9]\*{4}[0-9]{4}", masked)
    assert masked == subscriber[:3] + "****" + subscriber[-4:]


@given(name=st.text(alphabet=st.characters(categories=["Lo"]), min_size=2, max_size=6))
def test_chinese_style_names_keep_one_character_and_their_length(name: str) -> None:
    assert mask_name(name) == name[0] + "*" * (len(name) - 1)
    assert mask_name_for_payee(name) == "*" * (len(name) - 1) + name[-1]


@given(digits=st.from_regex(r"[0-9]{8,30}", fullmatch=True))
def test_account_numbers_show_only_the_last_four_digits(digits: str) -> None:
    masked = mask_account_number(digits)
    assert masked == "**** " + digits[-4:]

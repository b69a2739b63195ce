"""Tests for qianbao.identity.credentials: argon2id hashing, the password policy, the payment-PIN policy."""

from __future__ import annotations

import datetime
from collections import Counter
from itertools import chain
from typing import Any

import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qianbao.identity.credentials import (
    COMMON_PINS,
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    SecretHasher,
    password_problems,
    pin_problems,
)

PASSWORD_CODES = {
    "invalid_characters",
    "too_short",
    "too_long",
    "too_common",
    "too_weak",
    "contains_personal_info",
}
PIN_CODES = {"not_six_digits", "repeated", "sequential", "common", "date_like", "from_phone"}
PHONE = "+8613800138000"


@pytest.fixture
def hasher() -> SecretHasher:
    return SecretHasher.for_tests()


@pytest.fixture(scope="module")
def default_hash() -> str:
    # The only hash with production parameters in the suite (about half a second).
    return SecretHasher().hash("wallet secret")


# --- SecretHasher -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", ["correct horse battery staple", "钱包密码-安全", "384729", "", "lone \ud800 half"]
)
def test_hash_then_verify_round_trips(hasher: SecretHasher, secret: str) -> None:
    hashed = hasher.hash(secret)

    assert hashed.startswith("$argon2id$")
    assert hasher.verify(hashed, secret)
    assert not hasher.verify(hashed, secret + "x")


def test_hashes_are_salted(hasher: SecretHasher) -> None:
    assert hasher.hash("same secret") != hasher.hash("same secret")


def test_verify_is_exact(hasher: SecretHasher) -> None:
    hashed = hasher.hash("Blue-Lantern")

    assert not hasher.verify(hashed, "blue-lantern")
    assert not hasher.verify(hashed, "Blue-Lantern ")
    assert not hasher.verify(hashed, "")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=8,t=1,p=1$garbage$garbage",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA\u00e9",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
    ],
)
def test_verify_of_an_invalid_hash_is_false(hasher: SecretHasher, garbage: str) -> None:
    assert hasher.verify(garbage, "secret") is False


def test_verify_of_a_foreign_argon2_type_still_works(hasher: SecretHasher) -> None:
    # Hashes made by other argon2 variants (e.g. imported users) verify; needs_rehash moves them on.
    argon2i = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I).hash("secret")

    assert hasher.verify(argon2i, "secret")
    assert hasher.needs_rehash(argon2i)


def test_default_parameters_are_the_documented_ones(default_hash: str) -> None:
    params = extract_parameters(default_hash)

    assert (params.type, params.time_cost, params.memory_cost, params.parallelism) == (Type.ID, 3, 65536, 2)
    assert (params.hash_len, params.salt_len) == (32, 16)


def test_needs_rehash(hasher: SecretHasher, default_hash: str) -> None:
    cheap_hash = hasher.hash("wallet secret")

    assert SecretHasher().needs_rehash(cheap_hash)
    assert not hasher.needs_rehash(cheap_hash)
    assert not SecretHasher().needs_rehash(default_hash)
    assert hasher.needs_rehash(default_hash)
    assert SecretHasher(time_cost=1, memory_cost=16, parallelism=1).needs_rehash(cheap_hash)


@pytest.mark.parametrize("garbage", ["", "not a hash", "$argon2id$v=19$m=8,t=1,p=1$garbage"])
def test_needs_rehash_of_an_invalid_hash_is_true(hasher: SecretHasher, garbage: str) -> None:
    assert hasher.needs_rehash(garbage)


def test_dummy_verify_runs_a_real_verify_with_the_same_parameters(
    hasher: SecretHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    real_verify = PasswordHasher.verify

    def recording_verify(self: PasswordHasher, hashed: str | bytes, password: str | bytes) -> Any:
        verified.append(hashed.decode() if isinstance(hashed, bytes) else hashed)
        return real_verify(self, hashed, password)

    monkeypatch.setattr(PasswordHasher, "verify", recording_verify)

    hasher.dummy_verify("whatever the user typed")
    hasher.dummy_verify("\ud800 odd input")

    assert len(verified) == 2
    assert extract_parameters(verified[0]) == extract_parameters(hasher.hash("x"))


# --- password policy ----------------------------------------------------------------------------------

GOOD_PASSWORDS = [
    "correct horse battery staple",
    "钱包-Blue-Lantern-42",
    "Tr0ub4dor&3-staple-92",
    "blue lantern two",
    "1q2w3e4r5t6y7u8i",  # zxcvbn score 2, acceptable at 16 characters
    "dragon-dragon-dragon",  # score 2, long enough
    "长城-月光-茶杯-钥匙-42",
    "x" * 13 + "Qz7#pLm2vR9!wKd4" * 7 + "abc",  # exactly PASSWORD_MAX_LENGTH, zxcvbn sees the first 72 only
]


@pytest.mark.parametrize("password", GOOD_PASSWORDS)
def test_good_passwords_pass(password: str) -> None:
    assert password_problems(password) == []
    assert password_problems(password, personal=(PHONE, "Zhang Wei", "王小明")) == []


def test_good_password_list_covers_the_length_limit() -> None:
    assert max(len(p) for p in GOOD_PASSWORDS) == PASSWORD_MAX_LENGTH


@pytest.mark.parametrize(
    ("password", "personal", "expected"),
    [
        # length
        ("aB3$x", (), ["too_short", "too_weak"]),
        ("Qz7#pLm", (), ["too_short", "too_weak"]),
        ("Qz7#pLm2vR9!wKd4" * 8 + "y", (), ["too_long"]),
        # in the top 10,000 of zxcvbn's password list (which zxcvbn itself reads as a name, not a password)
        ("michael3", (), ["too_common", "too_weak"]),
        ("MICHAEL3", (), ["too_common", "too_weak"]),
        # found as a whole in zxcvbn's password dictionary, but beyond the top 10,000
        ("wmegrfux", (), ["too_common", "too_weak"]),
        ("08154711", (), ["too_common", "too_weak"]),
        ("qazwsxedcrfvtgb", (), ["too_common", "too_weak"]),
        # weak but not a listed password
        ("Password123!", (), ["too_weak"]),
        ("abcdefgh12", (), ["too_weak"]),
        ("Tr0ub4dour&3", (), ["too_weak"]),  # score 2 is not enough below 16 characters
        ("1q2w3e4r5t6y7u8", (), ["too_weak"]),  # score 2 at 15 characters
        ("passwordpassword", (), ["too_weak"]),  # score 0 is not enough even when long
        # personal information
        ("Xq9#mz-138001-Lk", (PHONE,), ["contains_personal_info"]),
        ("Xq9#mz 138 0013 Lk", ("+86 138-0013-8000",), ["contains_personal_info"]),
        ("ZhangWei!Blue-Lantern", ("Zhang Wei",), ["contains_personal_info"]),
        ("Blue-Lantern-ZHANG-88", ("Zhang Wei",), ["contains_personal_info"]),
        ("王小明-Blue-Lantern-42", ("王小明",), ["contains_personal_info"]),
        # control characters
        ("correct horse\x00battery staple", (), ["invalid_characters"]),
        ("correct horse\tbattery staple", (), ["invalid_characters"]),
        ("correct horse\nbattery staple", (), ["invalid_characters"]),
        ("correct horse\x7fbattery staple", (), ["invalid_characters"]),
        ("correct horse\x85battery staple", (), ["invalid_characters"]),
        ("correct horse\ud800battery staple", (), ["invalid_characters"]),
        # several at once
        ("\x00" * 200, (), ["invalid_characters", "too_long"]),
        ("138001", (PHONE,), ["too_short", "too_weak", "contains_personal_info"]),
    ],
)
def test_password_problems(password: str, personal: tuple[str, ...], expected: list[str]) -> None:
    assert password_problems(password, personal=personal) == expected


@pytest.mark.parametrize(
    ("password", "personal"),
    [
        ("Xq9#mz-13800-Lk", (PHONE,)),  # five digits of the phone number are not enough
        ("Wei-Blue-Lantern-42", ("Zhang Wei",)),  # three-letter name parts are too common to refuse
        ("Xq9#mz-138001-Lk", ("Zhang Wei",)),  # the digits of someone else's phone
    ],
)
def test_personal_info_needs_a_distinctive_match(password: str, personal: tuple[str, ...]) -> None:
    assert password_problems(password, personal=personal) == []


def test_personal_inputs_reach_zxcvbn() -> None:
    # Random-looking, hence strong, until zxcvbn is told it is the user's own input.
    candidate = "Xk4mQp9vLz"
    assert password_problems(candidate) == []
    assert "too_weak" in password_problems(candidate, personal=("xk4mqp9vlz",))


def test_length_limits_are_inclusive() -> None:
    assert "too_short" not in password_problems("Qz7#pLm2")
    assert len("Qz7#pLm2") == PASSWORD_MIN_LENGTH
    assert "too_long" not in password_problems("Qz7#pLm2vR9!wKd4" * 8)
    assert len("Qz7#pLm2vR9!wKd4" * 8) == PASSWORD_MAX_LENGTH


@settings(max_examples=60, deadline=None)
@given(password=st.text(max_size=40), personal=st.lists(st.text(max_size=20), max_size=3))
def test_password_problems_never_raises(password: str, personal: list[str]) -> None:
    problems = password_problems(password, personal=personal)

    assert set(problems) <= PASSWORD_CODES
    assert len(problems) == len(set(problems))


# --- payment PIN policy -------------------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["384729", "502817", "731946", "990229", "290297", "022997", "310499"])
def test_good_pins_pass(pin: str) -> None:
    assert pin_problems(pin) == []
    assert pin_problems(pin, phone=PHONE) == []


@pytest.mark.parametrize(
    ("pin", "expected"),
    [
        # not six ASCII digits
        ("", ["not_six_digits"]),
        ("38472", ["not_six_digits"]),
        ("3847291", ["not_six_digits"]),
        ("38472a", ["not_six_digits"]),
        (" 384729", ["not_six_digits"]),
        ("384729\n", ["not_six_digits"]),
        ("３８４７２９", ["not_six_digits"]),  # full-width digits: str.isdigit() and int() accept them
        ("٣٨٤٧٢٩", ["not_six_digits"]),  # Arabic-Indic digits
        ("-38472", ["not_six_digits"]),
        # at most two distinct digits
        ("555555", ["repeated"]),
        ("777666", ["repeated"]),
        ("989898", ["repeated"]),
        ("121212", ["repeated", "date_like"]),
        ("112211", ["repeated", "date_like"]),
        ("111222", ["repeated", "date_like"]),
        ("101010", ["repeated", "common", "date_like"]),
        # sequential, both directions, wrapping
        ("123456", ["sequential"]),
        ("234567", ["sequential"]),
        ("654321", ["sequential"]),
        ("098765", ["sequential"]),
        ("901234", ["sequential"]),
        ("109876", ["sequential"]),
        ("890123", ["sequential", "date_like"]),
        # common
        ("147258", ["common"]),
        ("258369", ["common"]),
        ("168168", ["common"]),
        ("520520", ["common", "date_like"]),
        # birthdays
        ("990101", ["date_like"]),  # YYMMDD
        ("123199", ["date_like"]),  # MMDDYY
        ("311299", ["date_like"]),  # DDMMYY
        ("199905", ["date_like"]),  # 19YYMM
        ("203011", ["date_like"]),  # 20YYMM
        ("960229", ["date_like"]),  # Feb 29 in a leap year (YYMMDD)
        ("000229", ["date_like"]),  # 2000 was a leap year
        ("290296", ["date_like"]),  # Feb 29 (DDMMYY)
        ("022996", ["date_like"]),  # Feb 29 (MMDDYY)
        # from the phone number
        ("380013", ["from_phone"]),
        ("800138", ["from_phone"]),
    ],
)
def test_pin_problems(pin: str, expected: list[str]) -> None:
    assert pin_problems(pin, phone=PHONE) == expected


@pytest.mark.parametrize(
    "pin",
    ["123123", "520520", "521521", "520131", "168168", "518518", "666888", "888666", "147258", "258369"]
    + ["159357", "741852", "147369", "123321", "112233", "123654", "789456", "456123", "654123", "101010"]
    + ["202020"],
)
def test_pins_named_in_the_brief_are_common(pin: str) -> None:
    assert "common" in pin_problems(pin)


def test_common_pins_are_well_formed() -> None:
    assert all(len(pin) == 6 and pin.isascii() and pin.isdigit() for pin in COMMON_PINS)


def test_from_phone_needs_a_phone_and_ignores_formatting() -> None:
    assert pin_problems("380013") == []
    assert pin_problems("380013", phone="+86 138-0013-8000") == ["from_phone"]
    assert pin_problems("380013", phone="+8613900139000") == []
    assert pin_problems("380013", phone="") == []


def _date_like_oracle(pin: str) -> bool:
    a, b, c = int(pin[0:2]), int(pin[2:4]), int(pin[4:6])

    def is_date(yy: int, month: int, day: int) -> bool:
        for century in (1900, 2000):
            try:
                datetime.date(century + yy, month, day)
            except ValueError:
                continue
            return True
        return False

    return is_date(a, b, c) or is_date(c, a, b) or is_date(c, b, a) or (a in (19, 20) and 1 <= c <= 12)


@settings(max_examples=1000, deadline=None)
@given(number=st.integers(min_value=0, max_value=999_999))
@example(number=960229)
@example(number=990229)
@example(number=290200)
@example(number=310431)
@example(number=201300)
def test_date_like_matches_a_calendar_oracle(number: int) -> None:
    pin = f"{number:06d}"

    assert ("date_like" in pin_problems(pin)) == _date_like_oracle(pin)


def test_share_of_acceptable_pins_exhaustively() -> None:
    """All 10^6 PINs. Budget: under 5 s (about 2.5 s on a loaded 2-core machine); keep pin_problems cheap."""
    every_pin = map("{:06d}".format, range(1_000_000))
    counts = Counter(chain.from_iterable(pin_problems(pin) or ["accepted"] for pin in every_pin))

    assert counts["not_six_digits"] == 0
    assert counts["repeated"] == 10 + 45 * (2**6 - 2)  # one digit, or two digits in a non-uniform pattern
    assert counts["sequential"] == 20
    assert counts["common"] == len(COMMON_PINS)
    assert counts["from_phone"] == 0
    assert 50_000 < counts["date_like"] < 200_000
    assert counts["accepted"] / 1_000_000 > 0.30


@settings(max_examples=300)
@given(pin=st.text(max_size=12), phone=st.none() | st.text(max_size=20))
@example(pin="\ud800" * 6, phone="\ud800")
@example(pin="１２３４５６", phone=None)
def test_pin_problems_never_raises(pin: str, phone: str | None) -> None:
    problems = pin_problems(pin, phone=phone)

    assert set(problems) <= PIN_CODES
    if not (len(pin) == 6 and all(c in "0123456789" for c in pin)):
        assert problems == ["not_six_digits"]

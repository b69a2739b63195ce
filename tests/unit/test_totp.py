"""Tests for qianbao.identity.totp: RFC 6238 codes, verify window and replays, enrolment, recovery codes."""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET  # noqa: S405 - parses only SVG this module generated
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from qianbao.identity.totp import (
    RECOVERY_CODE_ALPHABET,
    RECOVERY_CODE_COUNT,
    TOTP_DIGITS,
    TOTP_PERIOD_S,
    hash_recovery_code,
    new_recovery_codes,
    new_totp_secret,
    normalize_recovery_code,
    provisioning_qr_svg,
    provisioning_uri,
    totp_code,
    verify_totp,
)

# RFC 6238 Appendix B: each digest has its own ASCII seed, of the digest's natural key length.
RFC_SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC_VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]

SECRET = base64.b32encode(RFC_SEEDS["sha1"]).decode()
NOW = 1_700_000_000.0  # inside step 56,666,666 (…000 is 20 s into it)
NOW_STEP = int(NOW) // TOTP_PERIOD_S


def code_at_step(step: int, secret: str = SECRET) -> str:
    return totp_code(secret, step * TOTP_PERIOD_S)


# --- codes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at_s", "digest", "expected"),
    [
        (at_s, digest, code)
        for at_s, *codes in RFC_VECTORS
        for digest, code in zip(("sha1", "sha256", "sha512"), codes, strict=True)
    ],
)
def test_rfc_6238_appendix_b_vectors(at_s: int, digest: str, expected: str) -> None:
    secret = base64.b32encode(RFC_SEEDS[digest]).decode()

    assert totp_code(secret, at_s, digits=8, digest=digest) == expected


def test_default_code_is_six_digits_of_the_same_hotp_value() -> None:
    # RFC 4226 dynamic truncation: a 6-digit code is the 8-digit one modulo 10^6.
    assert totp_code(SECRET, 59) == "287082"
    assert totp_code(SECRET, 59.999) == "287082"
    assert totp_code(SECRET, 60) != "287082"


def test_period_is_a_parameter() -> None:
    # With a 60 s period, t = 119 is step 1, which a 30 s period reaches at t = 30…59.
    assert totp_code(SECRET, 119, period=60) == totp_code(SECRET, 59)


@pytest.mark.parametrize(
    "kwargs",
    [{"digest": "md5"}, {"digest": "SHA-1"}, {"digits": 5}, {"digits": 11}, {"period": 0}],
)
def test_bad_code_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        totp_code(SECRET, 59, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("at_s", [-1.0, float("nan"), float("inf")])
def test_bad_times_are_refused(at_s: float) -> None:
    with pytest.raises(ValueError):
        totp_code(SECRET, at_s)
    with pytest.raises(ValueError):
        verify_totp(SECRET, "123456", at_s=at_s, last_used_step=None)


# --- verification -------------------------------------------------------------------------------------


def test_current_code_verifies_and_returns_its_step() -> None:
    assert verify_totp(SECRET, totp_code(SECRET, NOW), at_s=NOW, last_used_step=None) == NOW_STEP


@pytest.mark.parametrize("offset", [-1, 1])
def test_adjacent_steps_are_accepted_within_the_window(offset: int) -> None:
    code = code_at_step(NOW_STEP + offset)

    assert verify_totp(SECRET, code, at_s=NOW, last_used_step=None) == NOW_STEP + offset


@pytest.mark.parametrize("offset", [-2, 2, -3, 3])
def test_steps_outside_the_window_are_refused(offset: int) -> None:
    code = code_at_step(NOW_STEP + offset)

    assert verify_totp(SECRET, code, at_s=NOW, last_used_step=None) is None
    assert verify_totp(SECRET, code, at_s=NOW, last_used_step=None, window=abs(offset)) == NOW_STEP + offset


def test_window_zero_accepts_only_the_current_step() -> None:
    assert verify_totp(SECRET, code_at_step(NOW_STEP), at_s=NOW, last_used_step=None, window=0) == NOW_STEP
    assert verify_totp(SECRET, code_at_step(NOW_STEP - 1), at_s=NOW, last_used_step=None, window=0) is None


def test_negative_window_is_refused() -> None:
    with pytest.raises(ValueError):
        verify_totp(SECRET, code_at_step(NOW_STEP), at_s=NOW, last_used_step=None, window=-1)


def test_replay_of_the_same_step_is_refused() -> None:
    code = totp_code(SECRET, NOW)
    step = verify_totp(SECRET, code, at_s=NOW, last_used_step=None)
    assert step == NOW_STEP

    assert verify_totp(SECRET, code, at_s=NOW, last_used_step=step) is None
    assert verify_totp(SECRET, code, at_s=NOW + 10, last_used_step=step) is None


def test_older_steps_than_the_last_used_are_refused_newer_accepted() -> None:
    assert verify_totp(SECRET, code_at_step(NOW_STEP - 1), at_s=NOW, last_used_step=NOW_STEP) is None
    assert verify_totp(SECRET, code_at_step(NOW_STEP + 1), at_s=NOW, last_used_step=NOW_STEP) == NOW_STEP + 1
    assert verify_totp(SECRET, code_at_step(NOW_STEP), at_s=NOW, last_used_step=NOW_STEP - 1) == NOW_STEP


def test_window_does_not_reach_before_the_epoch() -> None:
    # At t = 10 s the window would include step -1, which has no code.
    assert verify_totp(SECRET, code_at_step(0), at_s=10, last_used_step=None) == 0


def test_wrong_secret_is_refused() -> None:
    other = base64.b32encode(b"09876543210987654321").decode()

    assert verify_totp(other, totp_code(SECRET, NOW), at_s=NOW, last_used_step=None) is None


GOOD_CODE = totp_code(SECRET, NOW)
FULLWIDTH_CODE = "".join(chr(ord("０") + int(c)) for c in GOOD_CODE)  # int() and str.isdigit() accept these


@pytest.mark.parametrize(
    "code",
    [
        "",
        GOOD_CODE[:-1],
        GOOD_CODE + "0",
        " " + GOOD_CODE,
        GOOD_CODE + "\n",
        GOOD_CODE[:3] + " " + GOOD_CODE[3:],
        GOOD_CODE[:5] + "x",
        "+" + GOOD_CODE[1:],
        FULLWIDTH_CODE,
        GOOD_CODE + "\x00",
        "\ud800" * 6,
        totp_code(SECRET, NOW, digits=8),
    ],
)
def test_malformed_codes_are_refused_without_raising(code: str) -> None:
    assert verify_totp(SECRET, GOOD_CODE, at_s=NOW, last_used_step=None) == NOW_STEP  # the unmangled code
    assert verify_totp(SECRET, code, at_s=NOW, last_used_step=None) is None


@given(code=st.text(max_size=12))
@example(code="１２３４５６")
def test_verify_never_raises_for_arbitrary_codes(code: str) -> None:
    step = verify_totp(SECRET, code, at_s=NOW, last_used_step=None)

    assert step is None or (code.isascii() and len(code) == TOTP_DIGITS)


# --- enrolment ----------------------------------------------------------------------------------------


def test_new_secret_is_160_bits_of_base32() -> None:
    secrets = {new_totp_secret() for _ in range(20)}

    assert len(secrets) == 20
    for secret in secrets:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20
        assert len(totp_code(secret, NOW)) == TOTP_DIGITS


def test_provisioning_uri_names_issuer_account_and_secret() -> None:
    secret = new_totp_secret()
    uri = provisioning_uri(secret, account_name="alice@example.com")
    parts = urlsplit(uri)
    query = parse_qs(parts.query)

    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/qianbao:alice@example.com"
    assert query["secret"] == [secret]
    assert query["issuer"] == ["qianbao"]
    # Authenticator apps assume SHA-1, 6 digits and 30 s when the URI does not say otherwise.
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]


def test_provisioning_uri_with_another_issuer() -> None:
    uri = provisioning_uri(SECRET, account_name="13800138000", issuer="钱包 测试")
    parts = urlsplit(uri)

    assert unquote(parts.path) == "/钱包 测试:13800138000"
    assert parse_qs(parts.query)["issuer"] == ["钱包 测试"]


def test_qr_svg_is_an_svg_document() -> None:
    uri = provisioning_uri(SECRET, account_name="alice@example.com")
    svg = provisioning_qr_svg(uri)

    root = ET.fromstring(svg)  # noqa: S314 - our own output
    assert root.tag == "svg"
    assert not svg.startswith("<?xml")  # inline: embeddable in HTML as is
    # Scale 4 with segno's 4-module quiet zone: (modules + 8) × 4 pixels, at least version 1 (21 modules).
    width = int(root.attrib["width"])
    assert width == int(root.attrib["height"])
    assert width % 4 == 0
    assert width >= (21 + 8) * 4
    assert provisioning_qr_svg(provisioning_uri(SECRET, account_name="bob@example.com")) != svg


# --- recovery codes -----------------------------------------------------------------------------------


def test_recovery_codes_format_and_uniqueness() -> None:
    codes = new_recovery_codes()

    assert len(codes) == RECOVERY_CODE_COUNT == 10
    assert len(set(codes)) == len(codes)
    pattern = re.compile(rf"[{RECOVERY_CODE_ALPHABET}]{{5}}-[{RECOVERY_CODE_ALPHABET}]{{5}}")
    assert all(pattern.fullmatch(code) for code in codes)


def test_recovery_code_alphabet_is_unambiguous_and_fully_used() -> None:
    assert not set("0o1il") & set(RECOVERY_CODE_ALPHABET)
    assert RECOVERY_CODE_ALPHABET == RECOVERY_CODE_ALPHABET.lower()
    assert len(set(RECOVERY_CODE_ALPHABET)) == 31
    # 1,000 codes hold 10,000 symbols; missing any of the 31 by chance has probability ~31 * (30/31)^10000.
    used = set("".join(new_recovery_codes(1000)).replace("-", ""))
    assert used == set(RECOVERY_CODE_ALPHABET)


def test_recovery_codes_are_distinct_even_if_the_generator_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    symbols = iter("a" * 20 + "b" * 10 + "c" * 10)

    def repeating_choice(alphabet: str) -> str:
        return next(symbols)

    monkeypatch.setattr("qianbao.identity.totp.secrets.choice", repeating_choice)

    assert new_recovery_codes(3) == ["aaaaa-aaaaa", "bbbbb-bbbbb", "ccccc-ccccc"]


def test_recovery_code_count_is_a_parameter() -> None:
    assert len(new_recovery_codes(3)) == 3
    with pytest.raises(ValueError):
        new_recovery_codes(0)


@pytest.mark.parametrize(
    ("typed", "normalized"),
    [
        ("k7m2p-x9qrt", "k7m2px9qrt"),
        ("K7M2P-X9QRT", "k7m2px9qrt"),
        ("  k7m2p x9qrt \n", "k7m2px9qrt"),
        ("k7m2px9qrt", "k7m2px9qrt"),
        ("k7-m2p--x9 q\trt", "k7m2px9qrt"),
    ],
)
def test_normalize_recovery_code(typed: str, normalized: str) -> None:
    assert normalize_recovery_code(typed) == normalized


def test_recovery_code_hash_round_trip() -> None:
    codes = new_recovery_codes()
    stored = {hash_recovery_code(code) for code in codes}

    assert len(stored) == len(codes)
    for code in codes:
        typed = code.upper().replace("-", " ")
        assert hash_recovery_code(typed) in stored
    assert hash_recovery_code("aaaaa-aaaaa") not in stored


def test_recovery_code_hash_is_hex_sha256_of_the_normalized_code() -> None:
    expected = hashlib.sha256(b"k7m2px9qrt").hexdigest()

    assert hash_recovery_code("K7M2P-X9QRT") == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)

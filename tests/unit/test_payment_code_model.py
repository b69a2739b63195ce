"""The customer-presented payment code (`qianbao.payments.payment_code_model`): its 18-digit format, the
RFC 4226 HOTP inside it, the time window the server accepts, the binding to the device's secret, and the
decisions that bound guessing (per device and per merchant)."""

from __future__ import annotations

import base64

import pyotp
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from qianbao.payments.payment_code_model import (
    DEVICE_FAILURE_LIMIT,
    LENGTH,
    MERCHANT_FAILURE_LIMITS,
    OTP_DIGITS,
    PREFIX,
    SEQUENCES,
    STEP_SECONDS,
    WINDOW,
    CodeParts,
    DeviceGuesses,
    GuessVerdict,
    blocks_device,
    guess_verdict,
    matching_step,
    merchant_limits_reached,
    one_time_code,
    payment_code,
    split,
    step_at,
)

# RFC 4226 Appendix D: the secret is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
# Its table of HOTP values for counters 0-9: the 31-bit "Decimal" column, and the 6-digit codes.
RFC_DECIMAL = [
    1284755224,
    1094287082,
    137359152,
    1726969429,
    1640338314,
    868254676,
    1918287922,
    82162583,
    673399871,
    645520489,
]
RFC_SIX_DIGITS = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]

# Device secrets as the server makes them (pyotp.random_base32: 160 bits, 32 base32 characters). One
# length only: HMAC pads short keys with zero bytes, so b"k" and b"k\0" are the same key by design.
secrets_ = st.binary(min_size=20, max_size=20).map(lambda b: base64.b32encode(b).decode())
numbers = st.integers(min_value=0, max_value=10**7 - 1).map(lambda n: f"{n:07d}")
seqs = st.integers(min_value=0, max_value=SEQUENCES - 1)
# Any moment from 1970 (past the first hours: HOTP counters are non-negative) to 2100, in seconds,
# fractions included: devices compute from wall-clock time.
moments = st.floats(min_value=7_200, max_value=4_102_444_800, allow_nan=False, allow_infinity=False)


def test_the_rfc_secret_decodes_to_the_rfc_seed() -> None:
    assert RFC_SECRET == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # noqa: S105 - the RFC test key
    assert pyotp.HOTP(RFC_SECRET).byte_secret() == b"12345678901234567890"


def test_pyotp_gives_the_rfc_4226_values() -> None:
    """The library the model builds on, against the RFC's own table."""
    assert [pyotp.HOTP(RFC_SECRET, digits=6).at(c) for c in range(10)] == RFC_SIX_DIGITS
    eight = [pyotp.HOTP(RFC_SECRET, digits=8).at(c) for c in range(10)]
    # 8 digits are the same truncated value modulo 10^8 (RFC 4226 §5.3), zero-padded.
    assert eight == [f"{d % 10**8:08d}" for d in RFC_DECIMAL]
    assert [e[-6:] for e in eight] == RFC_SIX_DIGITS


def test_the_one_time_code_is_rfc_4226_hotp_with_eight_digits() -> None:
    """Step 0 with sequence digit k is counter k: the RFC's vectors come straight out."""
    assert OTP_DIGITS == 8
    assert [one_time_code(RFC_SECRET, 0, k) for k in range(10)] == [f"{d % 10**8:08d}" for d in RFC_DECIMAL]


@given(step=st.integers(min_value=0, max_value=10**9), seq=seqs)
def test_the_counter_is_step_times_ten_plus_the_sequence_digit(step: int, seq: int) -> None:
    expected = pyotp.HOTP(RFC_SECRET, digits=8).at(step * SEQUENCES + seq)
    assert one_time_code(RFC_SECRET, step, seq) == expected


def test_a_full_code_known_answer() -> None:
    # Any moment in the first minute of 1970 is step 0; sequence digit 3 is counter 3.
    assert payment_code(RFC_SECRET, "0012345", 59.9, seq=3) == "28" + "0012345" + "3" + "26969429"
    # 1111111111 s is step 18518518; with sequence digit 7 the counter is 185185187.
    expected = f"{pyotp.HOTP(RFC_SECRET, digits=8).at(185_185_187)}"
    assert payment_code(RFC_SECRET, "9999999", 1_111_111_111, seq=7) == "289999999" + "7" + expected


@given(secret=secrets_, number=numbers, now=moments, seq=seqs)
def test_the_format(secret: str, number: str, now: float, seq: int) -> None:
    code = payment_code(secret, number, now, seq)
    assert len(code) == LENGTH == 18 and code.isascii() and code.isdigit()
    assert code.startswith(PREFIX) and PREFIX == "28"
    assert code[2:9] == number and code[9] == str(seq)
    assert code[10:] == one_time_code(secret, step_at(now), seq)
    assert split(code) == CodeParts(number=number, seq=seq, otp=code[10:])


@pytest.mark.parametrize(
    ("moment", "step"), [(0, 0), (59.999, 0), (60, 1), (119.5, 1), (1_767_225_600, 29_453_760)]
)
def test_a_step_is_a_minute(moment: float, step: int) -> None:
    assert STEP_SECONDS == 60
    assert step_at(moment) == step


@pytest.mark.parametrize("number", ["", "123456", "12345678", "12345a7", "-123456", "123 456"])
def test_a_device_number_is_seven_digits(number: str) -> None:
    with pytest.raises(ValueError):
        payment_code(RFC_SECRET, number, 600.0)


@pytest.mark.parametrize("number", ["１２３４５６７", "١٢٣٤٥٦٧"])
def test_a_device_number_in_other_scripts_digits_is_refused(number: str) -> None:
    with pytest.raises(ValueError):
        payment_code(RFC_SECRET, number, 600.0)


@pytest.mark.parametrize("seq", [-1, SEQUENCES, 42])
def test_the_sequence_digit_is_one_digit(seq: int) -> None:
    with pytest.raises(ValueError):
        one_time_code(RFC_SECRET, 0, seq)


# -- the window -------------------------------------------------------------------------------------


@given(secret=secrets_, number=numbers, now=moments, seq=seqs, offset=st.sampled_from(WINDOW))
def test_codes_from_the_previous_this_and_the_next_minute_match(
    secret: str, number: str, now: float, seq: int, offset: int
) -> None:
    assert WINDOW == (-1, 0, 1)
    step = step_at(now) + offset  # the device's clock is a minute behind, right, or a minute ahead
    parts = split(payment_code(secret, number, step * STEP_SECONDS + 30.5, seq))
    assert parts is not None
    found = matching_step(secret, parts, now)
    # The step the code was made for, unless (one chance in 10^8) a neighbour happens to share its code.
    window_codes = [one_time_code(secret, step_at(now) + o, seq) for o in WINDOW]
    if window_codes.count(parts.otp) == 1:
        assert found == step
    else:
        assert found is not None


@given(secret=secrets_, number=numbers, now=moments, seq=seqs, offset=st.sampled_from([-2, 2, -3, 3, -60]))
def test_codes_from_outside_the_window_do_not_match(
    secret: str, number: str, now: float, seq: int, offset: int
) -> None:
    parts = split(payment_code(secret, number, (step_at(now) + offset) * STEP_SECONDS + 0.25, seq))
    assert parts is not None
    window_codes = {one_time_code(secret, step_at(now) + o, seq) for o in WINDOW}
    assume(parts.otp not in window_codes)  # an HOTP collision, not a window bug
    assert matching_step(secret, parts, now) is None


def test_the_window_edges_with_the_rfc_secret() -> None:
    """Half a minute into step s the codes of s-1, s and s+1 pass; those of s-2 and s+2 do not."""
    now = 1_767_225_630.0
    s = step_at(now)
    for offset in (-2, -1, 0, 1, 2):
        parts = CodeParts("0000001", 4, one_time_code(RFC_SECRET, s + offset, 4))
        assert matching_step(RFC_SECRET, parts, now) == (s + offset if offset in WINDOW else None), offset


@given(secret=secrets_, other=secrets_, number=numbers, now=moments, seq=seqs)
def test_another_devices_secret_never_matches(
    secret: str, other: str, number: str, now: float, seq: int
) -> None:
    assume(secret != other)
    parts = split(payment_code(other, number, now, seq))
    assert parts is not None
    window_codes = {one_time_code(secret, step_at(now) + o, seq) for o in WINDOW}
    assume(parts.otp not in window_codes)  # a 1-in-10^8 HOTP collision between two random secrets
    assert matching_step(secret, parts, now) is None


@given(secret=secrets_, number=numbers, now=moments, seq=seqs, other_seq=seqs)
def test_a_changed_sequence_digit_never_matches(
    secret: str, number: str, now: float, seq: int, other_seq: int
) -> None:
    assume(seq != other_seq)
    code = payment_code(secret, number, now, seq)
    tampered = code[:9] + str(other_seq) + code[10:]
    parts = split(tampered)
    assert parts is not None and parts.seq == other_seq
    window_codes = {one_time_code(secret, step_at(now) + o, other_seq) for o in WINDOW}
    assume(parts.otp not in window_codes)  # the other digit's own code, by a 1-in-10^8 chance
    assert matching_step(secret, parts, now) is None


def test_a_changed_sequence_digit_with_the_rfc_secret() -> None:
    now = 90.0  # step 1: last minute's step 0 holds the RFC's counters 0-9
    for seq in range(SEQUENCES):
        otp = f"{RFC_DECIMAL[seq] % 10**8:08d}"
        for other in range(SEQUENCES):
            found = matching_step(RFC_SECRET, CodeParts("0000001", other, otp), now)
            assert found == (0 if seq == other else None), (seq, other)


# -- splitting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "",
        "28",
        "28123456701234567",  # 17 digits
        "2812345670123456789",  # 19 digits
        "181234567012345678",  # another prefix
        "821234567012345678",
        "28123456701234567x",
        "28 123456701234567",
        " 281234567012345678",
        "281234567012345678\n",
        "28１２３４５６７012345678",  # full-width digits are digits, but not ASCII
        "28١٢٣٤٥٦٧012345678",  # Arabic-Indic digits
        "-28123456701234567",
        "+28123456701234567",
        "2.8123456701234567",
    ],
)
def test_split_refuses_malformed_codes(code: str) -> None:
    assert split(code) is None


@pytest.mark.parametrize("code", [None, 281234567012345678, b"281234567012345678", ["28"], 28.0])
def test_split_refuses_what_is_not_text(code: object) -> None:
    assert split(code) is None  # type: ignore[arg-type]


def test_split_takes_a_code_apart() -> None:
    assert split("280012345312345678") == CodeParts(number="0012345", seq=3, otp="12345678")


@given(text=st.text(max_size=24))
def test_split_accepts_exactly_the_well_formed_codes(text: str) -> None:
    well_formed = len(text) == 18 and text.startswith("28") and all(c in "0123456789" for c in text)
    parts = split(text)
    assert (parts is not None) == well_formed
    if parts is not None:
        assert PREFIX + parts.number + str(parts.seq) + parts.otp == text


# -- guessing --------------------------------------------------------------------------------------


@given(failures=st.integers(min_value=0, max_value=3 * DEVICE_FAILURE_LIMIT), blocked=st.booleans())
def test_a_code_is_tested_only_while_its_device_is_under_the_limit(failures: int, blocked: bool) -> None:
    device = DeviceGuesses(blocked=blocked, failures=failures)
    tested = guess_verdict(device) is GuessVerdict.TEST
    assert tested == (not blocked and failures < DEVICE_FAILURE_LIMIT)
    # The wrong code that reaches the limit blocks the device, once: after it, nothing is tested.
    assert blocks_device(device) == (not blocked and failures + 1 >= DEVICE_FAILURE_LIMIT)
    if tested and blocks_device(device):
        assert failures + 1 == DEVICE_FAILURE_LIMIT
        after = DeviceGuesses(blocked=True, failures=failures + 1)
        assert guess_verdict(after) is GuessVerdict.LIMIT_REACHED and not blocks_device(after)


def test_a_number_nobody_has_is_not_tested() -> None:
    assert guess_verdict(None) is GuessVerdict.NO_DEVICE


def test_a_merchant_reaches_each_of_its_limits() -> None:
    (short, _), (daily, _) = MERCHANT_FAILURE_LIMITS
    assert merchant_limits_reached([short - 1, daily - 1]) == []
    assert merchant_limits_reached([short, short]) == [MERCHANT_FAILURE_LIMITS[0]]
    assert merchant_limits_reached([0, daily]) == [MERCHANT_FAILURE_LIMITS[1]]
    assert merchant_limits_reached([short, daily]) == list(MERCHANT_FAILURE_LIMITS)

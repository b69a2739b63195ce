"""The customer-presented payment code (付款码): 18 digits a device can compute offline. Pure, no I/O.

    28 | NNNNNNN | S | OOOOOOOO
    prefix (2) · device number (7) · sequence digit (1) · one-time code (8)

The one-time code is HOTP (RFC 4226, HMAC-SHA1, 8 digits) over the counter `step × 10 + S`, where `step`
is the Unix time divided by 60: like TOTP, but with ten codes per minute so that a customer can pay twice
in the same minute (the app moves to the next sequence digit after each use, or when "refresh" is
tapped). The server finds the device by its number, recomputes the code for the current step and its
neighbours (`WINDOW`: a code stays valid for about a minute after it is shown, plus clock skew), and
accepts each (device, step, sequence) once. A code computed with another device's secret, or for
another device's number, matches nothing: codes are bound to the device and, through it, to the wallet.

Guessing is bounded twice (`payment_code_guard`): per merchant (`MERCHANT_FAILURE_LIMITS`: a till that
presented many wrong codes is refused *before* its next code is tried) and per device number, whoever
presents the codes, so that many merchants together cannot guess one customer's code:
`DEVICE_FAILURE_LIMIT` wrong codes within `DEVICE_FAILURE_WINDOW_S` block the device until its owner
enables payment codes again (a new secret and a new number). The decisions are the pure functions at the
end (`merchant_limits_reached`, `guess_verdict`, `blocks_device`), over what the guard loaded under its
locks.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import pyotp

PREFIX = "28"
LENGTH = 18
STEP_SECONDS = 60
OTP_DIGITS = 8
SEQUENCES = 10
# Steps accepted around the server's current one: the code shown in the previous minute (up to two
# minutes old in the worst case) and one step ahead for a device clock that runs fast.
WINDOW = (-1, 0, 1)

# Wrong codes one device number may receive, from all merchants together, before the device is blocked.
# A guess (any sequence digit, any 8 digits) matches one of the window's three codes with odds 3e-8, so
# an attacker who learnt a device's number at their till gets at most 10 guesses, ~3e-7, per number; a
# slow attack under the limit gets 9 guesses a month, ~3e-6 a year. Honest failures (a mistyped code, an
# old screenshot) are rare enough that ten in a month mean something is wrong; the owner re-enables
# with step-up, which also draws a new number the guessers do not know. A code already used (a double
# scan) is not a guess: it matched, and does not count.
DEVICE_FAILURE_LIMIT = 10
DEVICE_FAILURE_WINDOW_S = 30 * 24 * 3600

# Wrong codes one merchant (all its tills together) may present, as (count, window in seconds): at most
# 20 guesses per 10 minutes and 100 a day, whichever device numbers they name.
MERCHANT_FAILURE_LIMITS: tuple[tuple[int, int], ...] = ((20, 10 * 60), (100, 24 * 3600))


@dataclass(frozen=True, slots=True)
class CodeParts:
    number: str
    seq: int
    otp: str


def step_at(unix_s: float) -> int:
    return int(unix_s // STEP_SECONDS)


def one_time_code(secret_b32: str, step: int, seq: int) -> str:
    if not 0 <= seq < SEQUENCES:
        raise ValueError("the sequence digit is 0 to 9")
    return pyotp.HOTP(secret_b32, digits=OTP_DIGITS).at(step * SEQUENCES + seq)


def payment_code(secret_b32: str, number: str, unix_s: float, seq: int = 0) -> str:
    """The code a device shows at `unix_s` (what the wallet app computes offline)."""
    if not (len(number) == 7 and number.isascii() and number.isdigit()):
        raise ValueError("the device number is 7 digits")
    return f"{PREFIX}{number}{seq}{one_time_code(secret_b32, step_at(unix_s), seq)}"


def split(code: str) -> CodeParts | None:
    """The parts of a well-formed code, or None (wrong length, not digits, not a qianbao code)."""
    if not (isinstance(code, str) and len(code) == LENGTH and code.isascii() and code.isdigit()):
        return None
    if not code.startswith(PREFIX):
        return None
    return CodeParts(number=code[2:9], seq=int(code[9]), otp=code[10:])


def matching_step(secret_b32: str, parts: CodeParts, unix_s: float) -> int | None:
    """The step (within the window around now) whose code this is, or None. Constant-time comparison."""
    now_step = step_at(unix_s)
    found = None
    for offset in WINDOW:
        step = now_step + offset
        if hmac.compare_digest(one_time_code(secret_b32, step, parts.seq), parts.otp):
            found = step
    return found


def device_failures_since(now_us: int, device_created_us: int) -> int:
    """From when a device's wrong codes count: the window, but never before the device existed (failures
    recorded against its number earlier were guesses at nobody)."""
    return max(now_us - DEVICE_FAILURE_WINDOW_S * 1_000_000, device_created_us)


def device_blocked_by(failures: int) -> bool:
    """Does this many wrong codes in the window block the device?"""
    return failures >= DEVICE_FAILURE_LIMIT


@dataclass(frozen=True, slots=True)
class DeviceGuesses:
    """The device a code names, as loaded under its row lock: is it blocked, and how many wrong codes
    named its number within the window (since it exists)."""

    blocked: bool
    failures: int


class GuessVerdict(Enum):
    TEST = "test"  # the device is under its limit: test the one-time code
    NO_DEVICE = "no_device"  # no active device has the number: a wrong code, answered and recorded as one
    LIMIT_REACHED = "limit_reached"  # the device reached its limit: the code is not tested at all


def guess_verdict(device: DeviceGuesses | None) -> GuessVerdict:
    """May a code naming this device be tested? Never once the device has reached its limit, a right
    code included (telling it apart would test it). Decided under the device's row lock, so concurrent
    codes are decided one after another, each seeing the failures of those before it."""
    if device is None:
        return GuessVerdict.NO_DEVICE
    if device.blocked or device_blocked_by(device.failures):
        return GuessVerdict.LIMIT_REACHED
    return GuessVerdict.TEST


def blocks_device(device: DeviceGuesses) -> bool:
    """Does one more wrong code block the device (it is not blocked yet, and reaches the limit)?"""
    return not device.blocked and device_blocked_by(device.failures + 1)


def merchant_limits_reached(
    failures: Sequence[int], limits: Sequence[tuple[int, int]] = MERCHANT_FAILURE_LIMITS
) -> list[tuple[int, int]]:
    """The limits (count, window) that a merchant's wrong codes within each window (`failures`, one count
    per limit) have reached: any of them refuses its next code, untested."""
    return [limit for limit, count in zip(limits, failures, strict=True) if count >= limit[0]]

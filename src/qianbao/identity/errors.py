"""Identity errors with their own stable codes (see docs/errors.md)."""

from __future__ import annotations

from collections.abc import Sequence

from qianbao.clock import rfc3339
from qianbao.error_codes import user_text
from qianbao.errors import Conflict, InvalidInput, Unauthenticated, WeakCredential
from qianbao.identity.credentials import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH


class VerificationFailed(InvalidInput):
    """A one-time code is wrong, expired, used, or was never sent."""

    code = "verification_failed"


class PhoneTaken(Conflict):
    code = "phone_taken"


class SecondFactorInvalid(InvalidInput):
    code = "second_factor_invalid"


class SecondFactorRequired(InvalidInput):
    """The account has a second factor enrolled and the request did not include one."""

    code = "second_factor_required"


class RecoveryNotPossible(InvalidInput):
    """Self-service account recovery failed; deliberately says nothing about which check failed."""

    code = "recovery_not_possible"


class ChallengeInvalid(InvalidInput):
    """A step-up challenge cannot be used: unknown, expired, failed, used, or for another operation."""

    code = "challenge_invalid"


class SignatureReplayed(Unauthenticated):
    """A signed API request whose (key, nonce) was already seen inside the replay window."""

    code = "signature_replayed"


class KycRejected(InvalidInput):
    """Identity verification declined the details (name and ID number do not match, bank account refused)."""

    code = "kyc_rejected"


class IdNumberInUse(Conflict):
    """The ID number is already verified for another user."""

    code = "id_number_in_use"


class PasskeyAlreadyRegistered(Conflict):
    """The passkey (its credential id) is already registered, to this or another account."""

    code = "passkey_already_registered"


def weak_password(problems: Sequence[str]) -> WeakCredential:
    """`weak_password` for the policy's `problems` (stable codes, in order); the message says the first."""
    first = problems[0]
    params = {"too_short": {"min": PASSWORD_MIN_LENGTH}, "too_long": {"max": PASSWORD_MAX_LENGTH}}.get(
        first, {}
    )
    return WeakCredential(
        "weak_password",
        f"the password is not acceptable: {', '.join(problems)}",
        reasons=list(problems),
        user_text=user_text("weak_password", first, **params),
    )


def weak_pin(problems: Sequence[str]) -> WeakCredential:
    """`weak_pin` for the PIN policy's `problems`; `not_six_digits` says the PIN must be six digits (a
    typing matter: check what was entered, rather than choose a harder PIN)."""
    extra = {"next_step": "check_input"} if problems[0] == "not_six_digits" else {}
    return WeakCredential(
        "weak_pin",
        f"the PIN is too easy to guess: {', '.join(problems)}",
        reasons=list(problems),
        user_text=user_text("weak_pin", problems[0]),
        **extra,
    )


def wrong_proof(
    method: str, *, pin_attempts_left: int | None = None, pin_locked_until: int | None = None
) -> SecondFactorInvalid:
    """A step-up proof that is not correct. For a wrong PIN the message says how many more wrong PINs the
    lock allows (`attempts_left`), or that this one locked it (until `locked_until`, epoch µs)."""
    if pin_attempts_left is None:
        return SecondFactorInvalid(f"the {method} proof is not correct", method=method)
    if pin_locked_until is not None:
        return SecondFactorInvalid(
            "the PIN is not correct, and is now locked after too many wrong attempts",
            method=method,
            attempts_left=0,
            locked_until=rfc3339(pin_locked_until),
            next_step="try_after_unlock",
            user_text=user_text("second_factor_invalid", "wrong_pin_locked"),
        )
    return SecondFactorInvalid(
        f"the PIN is not correct; {pin_attempts_left} more wrong PINs lock it",
        method=method,
        attempts_left=pin_attempts_left,
        user_text=user_text("second_factor_invalid", "wrong_pin", attempts_left=pin_attempts_left),
    )

"""Identity errors with their own stable codes (see docs/errors.md)."""

from __future__ import annotations

from qianbao.errors import Conflict, InvalidInput


class VerificationFailed(InvalidInput):
    """A one-time code is wrong, expired, used, or was never sent."""

    code = "verification_failed"


class PhoneTaken(Conflict):
    code = "phone_taken"


class SecondFactorInvalid(InvalidInput):
    code = "second_factor_invalid"


class ChallengeInvalid(InvalidInput):
    """A step-up challenge cannot be used: unknown, expired, failed, used, or for another operation."""

    code = "challenge_invalid"

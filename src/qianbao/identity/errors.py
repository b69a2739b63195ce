"""Identity errors with their own stable codes (see docs/errors.md)."""

from __future__ import annotations

from qianbao.errors import Conflict, InvalidInput, Unauthenticated


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

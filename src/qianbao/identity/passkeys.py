"""Passkeys (WebAuthn): the registration and sign-in ceremonies, as a thin typed wrapper over py_webauthn.

Why a wrapper: callers get plain data (JSON-ready option dicts, a `NewPasskey`, a sign count) and one error
type, `PasskeyError`, whose `reason` says what failed; py_webauthn's many exceptions never cross this
boundary. The policy lives here so that every ceremony asks for the same things: user verification
required (a passkey replaces a password, so it must be the user, not just someone holding the device),
attestation "none" (we do not vet authenticator makes), ES256/EdDSA/RS256 only, and a sign count that
must increase (a counter that does not move forward betrays a cloned authenticator; py_webauthn checks
it whenever either count is non-zero).

No storage: the caller keeps the challenge between options and verification (single use, short-lived) and,
per passkey, the credential id, public key, sign count and owner's user handle.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupportedAlgorithm
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidJSONStructure,
    InvalidRegistrationResponse,
    WebAuthnException,
)
from webauthn.helpers.parse_authentication_credential_json import parse_authentication_credential_json
from webauthn.helpers.parse_registration_credential_json import parse_registration_credential_json
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from qianbao.errors import InvalidInput

__all__ = [
    "ALGORITHMS",
    "MIN_CHALLENGE_BYTES",
    "NewPasskey",
    "PasskeyError",
    "RelyingParty",
    "authentication_options",
    "b64url",
    "credential_id_of",
    "from_b64url",
    "registration_options",
    "verify_authentication",
    "verify_registration",
]

# In order of preference: ES256 is what nearly every platform authenticator makes, EdDSA is what some
# security keys prefer, RS256 is Windows Hello's.
ALGORITHMS: Final[tuple[COSEAlgorithmIdentifier, ...]] = (
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
)
MIN_CHALLENGE_BYTES: Final = 16  # WebAuthn §13.4.3: at least 16 random bytes
_MAX_USER_HANDLE_BYTES: Final = 64  # WebAuthn §5.4.3
_MAX_CREDENTIAL_ID_BYTES: Final = 1023  # WebAuthn §6.1
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

Ceremony = Literal["registration", "authentication"]


@dataclass(frozen=True)
class RelyingParty:
    """Who we are to authenticators: `id` is the domain passkeys are bound to (no scheme, no port),
    `origins` the exact origins (scheme://host[:port]) whose pages may run the ceremonies."""

    id: str
    name: str
    origins: tuple[str, ...]

    def __post_init__(self) -> None:
        # Configuration mistakes, caught at start-up rather than as "origin mismatch" on every sign-in.
        if not self.id or "/" in self.id or ":" in self.id:
            raise ValueError(f"relying party id must be a bare domain, got {self.id!r}")
        if not self.name:
            raise ValueError("relying party name must not be empty")
        if not self.origins:
            raise ValueError("relying party needs at least one origin")
        for origin in self.origins:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or origin != f"{parts.scheme}://{parts.netloc}"
            ):
                raise ValueError(f"origin must be scheme://host[:port] with no path or slash, got {origin!r}")


class PasskeyError(InvalidInput):
    """A passkey ceremony failed. `reason` is a stable snake_case word (also in `extra`):

    malformed, challenge_mismatch, origin_mismatch, rp_id_mismatch, wrong_ceremony, user_not_present,
    user_not_verified, sign_count_not_increased, bad_signature, unsupported_algorithm, user_handle_mismatch,
    invalid_options.
    """

    code = "passkey_invalid"

    def __init__(self, detail: str, *, reason: str, **extra: Any) -> None:
        super().__init__(detail, reason=reason, **extra)
        self.reason = reason


@dataclass(frozen=True)
class NewPasskey:
    """A verified registration: what to store for the user (`public_key` is the COSE key, as is)."""

    credential_id: bytes
    public_key: bytes
    sign_count: int
    aaguid: str
    transports: tuple[str, ...]
    backed_up: bool


def b64url(data: bytes) -> str:
    """Base64url without padding, as WebAuthn's JSON uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    """Decode unpadded base64url; anything else (padding, other alphabets, impossible lengths) is refused."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise PasskeyError("value is not unpadded base64url", reason="malformed")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:  # unreachable after the checks above; kept as a guard
        raise PasskeyError("value is not unpadded base64url", reason="malformed") from exc


def registration_options(
    rp: RelyingParty,
    *,
    user_handle: bytes,
    user_name: str,
    display_name: str,
    exclude_credential_ids: Sequence[bytes] = (),
    challenge: bytes | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Options for `navigator.credentials.create()` and the challenge to keep until verification.

    `user_handle` is the opaque account id (1-64 bytes, never an e-mail or phone: authenticators may show
    or sync it); `exclude_credential_ids` are the user's existing passkeys, so a device that already has
    one is not registered twice. Without `challenge`, 64 random bytes are drawn.
    """
    _check_new_challenge(challenge)
    if not 1 <= len(user_handle) <= _MAX_USER_HANDLE_BYTES:
        raise PasskeyError("user handle must be 1 to 64 bytes", reason="invalid_options")
    try:
        options = generate_registration_options(
            rp_id=rp.id,
            rp_name=rp.name,
            user_id=user_handle,
            user_name=user_name,
            user_display_name=display_name,
            challenge=challenge,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                require_resident_key=False,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=bytes(cid)) for cid in exclude_credential_ids
            ],
            supported_pub_key_algs=list(ALGORITHMS),
        )
    except ValueError as exc:  # py_webauthn refuses e.g. an empty user name
        raise PasskeyError(f"cannot build registration options: {exc}", reason="invalid_options") from exc
    return json.loads(options_to_json(options)), options.challenge


def authentication_options(
    rp: RelyingParty,
    *,
    allow_credential_ids: Sequence[bytes] = (),
    challenge: bytes | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Options for `navigator.credentials.get()` and the challenge to keep until verification.

    With no `allow_credential_ids` the browser offers any discoverable passkey for this site (usernameless
    sign-in); the caller then finds the passkey by `credential_id_of(credential)`.
    """
    _check_new_challenge(challenge)
    try:
        options = generate_authentication_options(
            rp_id=rp.id,
            challenge=challenge,
            allow_credentials=[PublicKeyCredentialDescriptor(id=bytes(cid)) for cid in allow_credential_ids],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
    except ValueError as exc:
        raise PasskeyError(f"cannot build authentication options: {exc}", reason="invalid_options") from exc
    return json.loads(options_to_json(options)), options.challenge


def verify_registration(
    rp: RelyingParty, credential: Mapping[str, Any] | str, *, expected_challenge: bytes
) -> NewPasskey:
    """Check a `PublicKeyCredential.toJSON()` from `create()` against the challenge we issued."""
    _check_expected_challenge(expected_challenge, "registration")
    try:
        parsed = parse_registration_credential_json(_as_json(credential))
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=expected_challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            require_user_presence=True,
            require_user_verification=True,
            supported_pub_key_algs=list(ALGORITHMS),
        )
    except _LIBRARY_ERRORS as exc:
        raise _translate("registration", exc) from exc
    return NewPasskey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        transports=tuple(transport.value for transport in parsed.response.transports or ()),
        backed_up=verified.credential_backed_up,
    )


def verify_authentication(
    rp: RelyingParty,
    credential: Mapping[str, Any] | str,
    *,
    expected_challenge: bytes,
    public_key: bytes,
    current_sign_count: int,
    expected_user_handle: bytes | None = None,
) -> int:
    """Check a `PublicKeyCredential.toJSON()` from `get()`; return the new sign count to store.

    `public_key` and `current_sign_count` are what was stored for the passkey whose id is
    `credential_id_of(credential)`. With `expected_user_handle` (the passkey owner's), an assertion that
    names another user is refused, as WebAuthn §7.2 step 6 asks for usernameless sign-in.
    """
    _check_expected_challenge(expected_challenge, "authentication")
    try:
        parsed = parse_authentication_credential_json(_as_json(credential))
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=expected_challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            credential_public_key=public_key,
            credential_current_sign_count=current_sign_count,
            require_user_verification=True,
        )
    except _LIBRARY_ERRORS as exc:
        raise _translate("authentication", exc) from exc
    user_handle = parsed.response.user_handle
    if expected_user_handle is not None and user_handle is not None and user_handle != expected_user_handle:
        raise PasskeyError(
            "passkey authentication failed: the passkey belongs to another user",
            reason="user_handle_mismatch",
        )
    return verified.new_sign_count


def credential_id_of(credential: Mapping[str, Any] | str) -> bytes:
    """The credential id (`rawId`) of a credential JSON, to look the passkey up before verifying it."""
    if isinstance(credential, str):
        try:
            credential = json.loads(credential)
        except ValueError as exc:
            raise PasskeyError("credential is not valid JSON", reason="malformed") from exc
    if not isinstance(credential, Mapping):
        raise PasskeyError("credential is not a JSON object", reason="malformed")
    raw_id = credential.get("rawId")
    if not isinstance(raw_id, str):
        raise PasskeyError("credential has no rawId", reason="malformed")
    credential_id = from_b64url(raw_id)
    if not 1 <= len(credential_id) <= _MAX_CREDENTIAL_ID_BYTES:
        raise PasskeyError("credential id must be 1 to 1023 bytes", reason="malformed")
    return credential_id


# Everything py_webauthn (and the cryptography and cbor2 calls under it) raises for hostile input; not every
# path inside it wraps its own errors (e.g. decoding a stored public key).
_LIBRARY_ERRORS: Final = (
    WebAuthnException,
    InvalidSignature,
    CryptographyUnsupportedAlgorithm,
    ValueError,  # includes binascii.Error, json.JSONDecodeError, cbor2.CBORDecodeError
    KeyError,
    TypeError,
    IndexError,
)

# py_webauthn signals what failed only in its messages; these fragments are stable across its 2.x line, and
# anything unrecognised is reported as "malformed" (never as success).
_FAILURES: Final[tuple[tuple[str, str, str], ...]] = (
    ("challenge was not expected challenge", "challenge_mismatch", "the challenge is not the one issued"),
    ("Unexpected client data origin", "origin_mismatch", "the page's origin is not one of this site's"),
    ("Unexpected RP ID hash", "rp_id_mismatch", "the passkey is for another relying party id"),
    ("Unexpected client data type", "wrong_ceremony", "the response is for the other ceremony"),
    ("not present", "user_not_present", "the user was not present"),
    ("User verification is required", "user_not_verified", "the authenticator did not verify the user"),
    (
        "sign count",
        "sign_count_not_increased",
        "the signature counter did not increase (cloned authenticator?)",
    ),
    (
        "Could not verify authentication signature",
        "bad_signature",
        "the signature does not match the passkey",
    ),
    (
        "Unsupported credential public key alg",
        "unsupported_algorithm",
        "the passkey's algorithm is not accepted",
    ),
)


def _translate(ceremony: Ceremony, exc: Exception) -> PasskeyError:
    if isinstance(exc, InvalidRegistrationResponse | InvalidAuthenticationResponse):
        message = str(exc)
        for fragment, reason, description in _FAILURES:
            if fragment in message:
                return PasskeyError(f"passkey {ceremony} failed: {description}", reason=reason)
    if isinstance(
        exc, InvalidJSONStructure
    ):  # its messages name the missing or bad field, and nothing secret
        return PasskeyError(f"passkey {ceremony} failed: malformed credential: {exc}", reason="malformed")
    return PasskeyError(f"passkey {ceremony} failed: malformed credential", reason="malformed")


def _as_json(credential: Mapping[str, Any] | str) -> dict[str, Any] | str:
    if isinstance(credential, str):
        return credential
    if not isinstance(credential, Mapping):
        raise InvalidJSONStructure("Credential was not a JSON object")
    return dict(credential)


def _check_new_challenge(challenge: bytes | None) -> None:
    if challenge is not None and len(challenge) < MIN_CHALLENGE_BYTES:
        raise PasskeyError(
            f"challenge must be at least {MIN_CHALLENGE_BYTES} bytes", reason="invalid_options"
        )


def _check_expected_challenge(expected_challenge: bytes, ceremony: Ceremony) -> None:
    # An empty expected challenge (the caller lost the session's) would match an empty one in the response.
    if len(expected_challenge) < MIN_CHALLENGE_BYTES:
        raise PasskeyError(f"passkey {ceremony} failed: no challenge was issued", reason="challenge_mismatch")

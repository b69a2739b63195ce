"""A software WebAuthn authenticator (plus the browser's part) for tests: real keys, real signatures.

Tests drive the passkey ceremonies through py_webauthn's actual verification instead of mocking it, so
each refusal a test expects (wrong origin, tampered data, replayed counter…) is refused for real. The
output is what `PublicKeyCredential.toJSON()` gives a page. Tests simulate a phishing page or a foreign
relying party by changing `origin` or `rp_id`, and a cloned authenticator by editing a credential's
`sign_count`.

Unlike a browser, it does not check that `rp_id` suits `origin` and ignores `rp.id` in the options: the
point is to produce the hostile responses the server must refuse.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

# COSE algorithm ids (RFC 9053) by the names WebAuthn documentation uses.
COSE_ALGORITHMS: Final = {"ES256": -7, "EdDSA": -8, "RS256": -257}

FLAG_UP: Final = 0x01  # user present
FLAG_UV: Final = 0x04  # user verified
FLAG_BE: Final = 0x08  # backup eligible
FLAG_BS: Final = 0x10  # backed up
FLAG_AT: Final = 0x40  # attested credential data included

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class AuthenticatorRefused(Exception):
    """What the browser would report as NotAllowedError / InvalidStateError / NotSupportedError."""


@dataclass
class StoredCredential:
    private_key: PrivateKey
    algorithm: str
    user_handle: bytes
    sign_count: int = 0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SoftwareAuthenticator:
    """A platform authenticator holding discoverable credentials for one user agent."""

    def __init__(
        self,
        *,
        rp_id: str,
        origin: str,
        algorithm: str = "ES256",
        aaguid: bytes = b"\0" * 16,
        backed_up: bool = False,
        uses_counter: bool = True,
    ) -> None:
        if algorithm not in COSE_ALGORITHMS:
            raise ValueError(f"unsupported algorithm {algorithm!r}; one of {sorted(COSE_ALGORITHMS)}")
        if len(aaguid) != 16:
            raise ValueError("aaguid must be 16 bytes")
        self.rp_id = rp_id
        self.origin = origin
        self.algorithm = algorithm
        self.aaguid = aaguid
        self.backed_up = backed_up  # a synced passkey: sets BE and BS
        self.uses_counter = uses_counter  # False: always reports 0, as synced passkeys do
        self.credentials: dict[bytes, StoredCredential] = {}

    # -- navigator.credentials.create() ------------------------------------------------------------------

    def create(
        self, options: Mapping[str, Any], *, user_verified: bool = True, user_present: bool = True
    ) -> dict[str, Any]:
        algorithm_id = COSE_ALGORITHMS[self.algorithm]
        if algorithm_id not in [param["alg"] for param in options["pubKeyCredParams"]]:
            raise AuthenticatorRefused(
                f"NotSupportedError: the relying party does not accept {self.algorithm}"
            )
        excluded = {unb64url(descriptor["id"]) for descriptor in options.get("excludeCredentials", [])}
        if excluded & self.credentials.keys():
            raise AuthenticatorRefused(
                "InvalidStateError: this authenticator already holds an excluded credential"
            )

        private_key = _generate_key(self.algorithm)
        credential_id = secrets.token_bytes(32)
        stored = StoredCredential(private_key, self.algorithm, unb64url(options["user"]["id"]))
        self.credentials[credential_id] = stored

        flags = FLAG_AT | self._flags(user_verified=user_verified, user_present=user_present)
        attested = (
            self.aaguid
            + len(credential_id).to_bytes(2, "big")
            + credential_id
            + cbor2.dumps(_cose_key(private_key, algorithm_id))
        )
        authenticator_data = self._authenticator_data(flags, stored.sign_count) + attested
        attestation_object = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": authenticator_data})
        public_key_der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(self._client_data("webauthn.create", options["challenge"])),
                "attestationObject": b64url(attestation_object),
                "authenticatorData": b64url(authenticator_data),
                "transports": ["hybrid", "internal"],
                "publicKey": b64url(public_key_der),
                "publicKeyAlgorithm": algorithm_id,
            },
        }

    # -- navigator.credentials.get() ---------------------------------------------------------------------

    def get(
        self,
        options: Mapping[str, Any],
        *,
        user_verified: bool = True,
        user_present: bool = True,
        credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """An assertion with the first allowed credential (any, if the allow list is empty), or with
        `credential_id` regardless of the allow list."""
        if credential_id is None:
            allowed = [unb64url(descriptor["id"]) for descriptor in options.get("allowCredentials", [])]
            candidates = (
                [cid for cid in allowed if cid in self.credentials] if allowed else list(self.credentials)
            )
            if not candidates:
                raise AuthenticatorRefused("NotAllowedError: no matching credential on this authenticator")
            credential_id = candidates[0]
        stored = self.credentials[credential_id]
        if self.uses_counter:
            stored.sign_count += 1

        authenticator_data = self._authenticator_data(
            self._flags(user_verified=user_verified, user_present=user_present), stored.sign_count
        )
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = _sign(stored.private_key, authenticator_data + hashlib.sha256(client_data).digest())
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(authenticator_data),
                "signature": b64url(signature),
                "userHandle": b64url(stored.user_handle),
            },
        }

    # -- internals ---------------------------------------------------------------------------------------

    def _flags(self, *, user_verified: bool, user_present: bool) -> int:
        flags = (FLAG_UP if user_present else 0) | (FLAG_UV if user_verified else 0)
        return flags | (FLAG_BE | FLAG_BS if self.backed_up else 0)

    def _authenticator_data(self, flags: int, sign_count: int) -> bytes:
        rp_id_hash = hashlib.sha256(self.rp_id.encode("utf-8")).digest()
        return rp_id_hash + bytes([flags]) + sign_count.to_bytes(4, "big")

    def _client_data(self, ceremony: str, challenge: str) -> bytes:
        data = {"type": ceremony, "challenge": challenge, "origin": self.origin, "crossOrigin": False}
        return json.dumps(data, separators=(",", ":")).encode("utf-8")


def _generate_key(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def _cose_key(private_key: PrivateKey, algorithm_id: int) -> dict[int, Any]:
    public_key = private_key.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        # kty EC2, crv P-256, x and y as 32-byte big-endian
        return {
            1: 2,
            3: algorithm_id,
            -1: 1,
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    if isinstance(public_key, rsa.RSAPublicKey):
        rsa_numbers = public_key.public_numbers()
        n = rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")
        e = rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")
        return {1: 3, 3: algorithm_id, -1: n, -2: e}  # kty RSA
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {1: 1, 3: algorithm_id, -1: 6, -2: raw}  # kty OKP, crv Ed25519


def _sign(private_key: PrivateKey, data: bytes) -> bytes:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return private_key.sign(data)

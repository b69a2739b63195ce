"""Encryption of personal data at rest: AES-256-GCM envelope encryption and a keyed blind index.

Why: GUIDE.md section 6 requires PII (names, ID numbers, phones, emails, card numbers) to be encrypted
at rest under a key id, so that keys can be rotated, and to be looked up through a keyed hash, so that
lookups never need the plaintext in the database.

Three layers of keys:

- The **master key** (32 bytes) lives outside the database: ``QIANBAO_MASTER_KEY`` or a key file
  (:func:`load_key_material`). It only wraps data keys.
- **Data keys** (DEKs, 32 bytes each, ids ``dk_<16 hex>``) are stored in the database *wrapped* by the
  master key (:func:`wrap_data_key`); one is active for new writes, older ones stay readable until
  rotation has re-encrypted every field that uses them.
- The **index key** (32 bytes) keys the :class:`BlindIndex` HMAC. It is separate from the master key
  (by default derived from it with HKDF) and is never rotated casually: every blind index depends on it.

Field tokens (:class:`FieldCipher`) look like ``v1.<key id>.<urlsafe base64 of nonce + ciphertext>``.
The key id and a caller-chosen *context* (the column, e.g. ``"users.phone"``) are bound in the AES-GCM
associated data, so a ciphertext copied to another column, or relabelled with another key id, fails to
decrypt instead of silently yielding someone else's data.

Error messages (:class:`CryptoError`) never contain plaintext or key material; key ids and paths are not
secret and may appear.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_BYTES",
    "BlindIndex",
    "CryptoError",
    "FieldCipher",
    "KeyMaterial",
    "UnknownKeyError",
    "generate_key_b64",
    "key_fingerprint",
    "load_key_material",
    "new_data_key",
    "new_data_key_id",
    "token_key_id",
    "unwrap_data_key",
    "wrap_data_key",
]

KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_TOKEN_VERSION = "v1"  # noqa: S105 - a format tag, not a secret
_FIELD_AAD_PREFIX = b"qianbao field v1|"
_DEK_AAD_PREFIX = b"qianbao dek "
_INDEX_KEY_INFO = b"qianbao blind index v1"
_FINGERPRINT_PREFIX = b"qianbao key fingerprint"
# Key ids appear inside tokens (dot-separated) and in the AAD (after a "|"), so they may contain neither.
_KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_URLSAFE_B64_RE = re.compile(r"[A-Za-z0-9_-]+")


class CryptoError(Exception):
    """A key or ciphertext problem. The message never contains plaintext or key material."""


class UnknownKeyError(CryptoError):
    """A token names a data key this cipher does not hold; callers may reload keys and retry."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"unknown data key id {key_id!r}")
        self.key_id = key_id


class KeyMaterial(NamedTuple):
    master_key: bytes
    index_key: bytes

    def __repr__(self) -> str:
        # The default NamedTuple repr would print both keys into any log line or traceback.
        return (
            f"KeyMaterial(master_key=<{key_fingerprint(self.master_key)}>, "
            f"index_key=<{key_fingerprint(self.index_key)}>)"
        )


# --- key material -----------------------------------------------------------------------------------------


def generate_key_b64() -> str:
    """A fresh random 32-byte key in standard base64, suitable for ``QIANBAO_MASTER_KEY``."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_fingerprint(key: bytes) -> str:
    """16 hex chars identifying `key` (e.g. which master key wrapped a data key) without revealing it."""
    return hashlib.sha256(_FINGERPRINT_PREFIX + key).hexdigest()[:16]


def load_key_material(
    *, master_key_b64: str | None, index_key_b64: str | None, key_file: Path, create_if_missing: bool
) -> KeyMaterial:
    """The master and index keys, from explicit base64 values (the environment) or from `key_file`.

    - `master_key_b64` given: it is used (standard or urlsafe base64, padding optional, of exactly 32
      bytes); the index key is `index_key_b64` if given, else HKDF-SHA256(master, info="qianbao blind
      index v1"). The key file is neither read nor created.
    - `index_key_b64` given without a master key: refused, since silently ignoring a configured index key
      would make every blind index lookup miss.
    - Otherwise `key_file` is read: JSON ``{"master_key", "index_key", "created_at"}``. A file readable by
      group or others is refused. If it is missing and `create_if_missing`, it is created with fresh keys,
      mode 0600, atomically: concurrent creators all end up with the same keys (whoever links first wins).
    """
    if master_key_b64 is not None:
        master_key = _decode_key(master_key_b64, "master key (QIANBAO_MASTER_KEY)")
        if index_key_b64 is not None:
            index_key = _decode_key(index_key_b64, "index key (QIANBAO_INDEX_KEY)")
        else:
            index_key = _derive_index_key(master_key)
        return KeyMaterial(master_key, index_key)
    if index_key_b64 is not None:
        raise CryptoError("an index key (QIANBAO_INDEX_KEY) is set without a master key (QIANBAO_MASTER_KEY)")
    try:
        return _read_key_file(key_file)
    except FileNotFoundError:
        if not create_if_missing:
            raise CryptoError(
                f"no key material: set QIANBAO_MASTER_KEY or create the key file {key_file}"
            ) from None
    _create_key_file(key_file)
    # Read back even after creating it: if another process linked its file first, theirs is the one.
    return _read_key_file(key_file)


def _decode_key(value: str, what: str) -> bytes:
    text = "".join(value.split())
    # Accept both alphabets and missing padding: keys get pasted from openssl, Python, and URL-safe tools.
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CryptoError(f"{what} is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise CryptoError(f"{what} must decode to exactly {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _derive_index_key(master_key: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_INDEX_KEY_INFO)
    return hkdf.derive(master_key)


def _read_key_file(key_file: Path) -> KeyMaterial:
    """Raises FileNotFoundError if missing (the caller decides), CryptoError for anything else wrong."""
    try:
        fd = os.open(key_file, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CryptoError(f"cannot open key file {key_file}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        # fstat on the open descriptor: the mode checked is the mode of the file actually read.
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            raise CryptoError(
                f"key file {key_file} is accessible by group or others (mode {mode:04o}); "
                f"run: chmod 600 {key_file}"
            )
        content = handle.read()
    try:
        document = json.loads(content)
    except ValueError:
        # The decoder's message quotes the document (the keys), so it is not chained.
        raise CryptoError(f"key file {key_file} is not valid JSON") from None
    if not isinstance(document, dict):
        raise CryptoError(f"key file {key_file} must contain a JSON object")
    keys: list[bytes] = []
    for field in ("master_key", "index_key"):
        value = document.get(field)
        if not isinstance(value, str):
            raise CryptoError(f"key file {key_file} has no string field {field!r}")
        keys.append(_decode_key(value, f"{field} in key file {key_file}"))
    return KeyMaterial(keys[0], keys[1])


def _create_key_file(key_file: Path) -> None:
    """Write fresh keys to `key_file` unless it exists by then; never overwrites or exposes a partial file.

    The keys go to a private temporary file (created 0600 with O_EXCL) in the same directory, which is then
    hard-linked to the final name. `os.link` fails if the name exists, so the first creator wins and the
    file is complete the moment it appears; writing the final name directly with O_EXCL would let a
    concurrent reader see it empty.
    """
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    document = {
        "master_key": generate_key_b64(),
        "index_key": generate_key_b64(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    payload = (json.dumps(document, indent=2) + "\n").encode("ascii")
    temporary = key_file.with_name(f".{key_file.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CryptoError(f"cannot create key file in {key_file.parent}: {exc.strerror}") from exc
    try:
        try:
            # The umask can only remove bits from 0600; fchmod makes the mode exactly 0600 regardless.
            os.fchmod(fd, 0o600)
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, key_file)
        except FileExistsError:
            pass  # another process created it concurrently; the caller reads theirs
        except OSError as exc:
            raise CryptoError(f"cannot create key file {key_file}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


# --- data keys ----------------------------------------------------------------------------------------------


def new_data_key_id() -> str:
    """A fresh data key id: ``dk_`` and 16 lowercase hex characters."""
    return "dk_" + secrets.token_hex(8)


def new_data_key() -> bytes:
    """A fresh random 32-byte data key."""
    return os.urandom(KEY_BYTES)


def wrap_data_key(master_key: bytes, key_id: str, data_key: bytes) -> str:
    """`data_key` encrypted under `master_key`, bound to `key_id`; urlsafe base64 (no padding)."""
    _check_key(master_key, "master key")
    _check_key(data_key, "data key")
    _check_key_id(key_id)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(master_key).encrypt(nonce, data_key, _DEK_AAD_PREFIX + key_id.encode("ascii"))
    return _b64encode(nonce + sealed)


def unwrap_data_key(master_key: bytes, key_id: str, wrapped: str) -> bytes:
    """The data key inside `wrapped`.

    CryptoError if it was tampered with, wrapped by another master key, or wrapped for another key id.
    """
    _check_key(master_key, "master key")
    _check_key_id(key_id)
    raw = _b64decode(wrapped)
    if raw is None or len(raw) != _NONCE_BYTES + KEY_BYTES + _TAG_BYTES:
        raise CryptoError(f"wrapped data key {key_id!r} is malformed")
    try:
        data_key = AESGCM(master_key).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _DEK_AAD_PREFIX + key_id.encode("ascii")
        )
    except InvalidTag as exc:
        raise CryptoError(
            f"cannot unwrap data key {key_id!r}: wrong master key (fingerprint "
            f"{key_fingerprint(master_key)}), wrong key id, or tampered"
        ) from exc
    return data_key


# --- field encryption ---------------------------------------------------------------------------------------


class FieldCipher:
    """Encrypts and decrypts individual text fields under a set of data keys, one of them active.

    `context` names where the value lives (``"users.phone"``); decrypting with another context fails.
    Nonces are random (96 bits), so each data key should encrypt well under 2**32 values; rotating the
    active key regularly keeps it there. Instances are immutable; :meth:`with_keys` returns a new one.
    """

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        snapshot: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id)
            _check_key(key, f"data key {key_id!r}")
            snapshot[key_id] = AESGCM(bytes(key))
        if active_key_id not in snapshot:
            raise CryptoError(f"active data key {active_key_id!r} is not among the loaded keys")
        self._ciphers = MappingProxyType(snapshot)
        self._keys = MappingProxyType({key_id: bytes(key) for key_id, key in keys.items()})
        self._active_key_id = active_key_id

    @property
    def active_key_id(self) -> str:
        return self._active_key_id

    def knows(self, key_id: str) -> bool:
        return key_id in self._ciphers

    def with_keys(self, keys: Mapping[str, bytes], active_key_id: str) -> FieldCipher:
        """A new cipher with these keys (e.g. after loading a newly created or rotated data key)."""
        return FieldCipher(keys, active_key_id)

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """A ``v1.<key id>.<payload>`` token of `plaintext` (UTF-8; may be empty) under the active key."""
        key_id = self._active_key_id
        try:
            data = plaintext.encode("utf-8")
        except UnicodeEncodeError:
            # The codec's message quotes the offending character of the plaintext.
            raise CryptoError("plaintext is not encodable as UTF-8") from None
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, data, _field_aad(context, key_id))
        return f"{_TOKEN_VERSION}.{key_id}.{_b64encode(nonce + sealed)}"

    def decrypt(self, token: str, *, context: str) -> str:
        """The plaintext of `token`.

        UnknownKeyError if its data key is not loaded here; CryptoError if it is malformed, tampered with,
        or was written for another context or key id.
        """
        key_id, raw = _parse_token(token)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyError(key_id)
        try:
            data = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _field_aad(context, key_id))
        except InvalidTag as exc:
            raise CryptoError(
                f"cannot decrypt a token under data key {key_id!r} for context {context!r}: "
                "tampered, or written for another context or key id"
            ) from exc
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise CryptoError("decrypted field is not UTF-8") from None


def token_key_id(token: str) -> str:
    """The data key id of `token` without decrypting it (to find tokens still under an old key)."""
    key_id, _ = _parse_token(token)
    return key_id


def _parse_token(token: str) -> tuple[str, bytes]:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _TOKEN_VERSION or not _KEY_ID_RE.fullmatch(parts[1]):
        raise CryptoError("malformed field token")
    raw = _b64decode(parts[2])
    if raw is None or len(raw) < _NONCE_BYTES + _TAG_BYTES:
        raise CryptoError("malformed field token")
    return parts[1], raw


def _field_aad(context: str, key_id: str) -> bytes:
    if not context:
        raise CryptoError("an encryption context (e.g. 'users.phone') is required")
    return _FIELD_AAD_PREFIX + context.encode("utf-8") + b"|" + key_id.encode("ascii")


# --- blind index --------------------------------------------------------------------------------------------


class BlindIndex:
    """Keyed hashes for equality lookups of encrypted fields, without storing or comparing plaintext.

    Callers must normalise a value before indexing it, identically when storing and when searching:
    phones in E.164 (``+8613800138000``), ID numbers upper-case without spaces, emails as the service
    canonicalises them. Unnormalised values produce different digests and lookups silently miss.
    """

    def __init__(self, index_key: bytes) -> None:
        _check_key(index_key, "index key")
        self._key = bytes(index_key)

    def digest(self, kind: str, value: str) -> str:
        """Hex HMAC-SHA256 of ``kind NUL value``; `kind` ("phone", "id_number", "email") separates
        equal values of different kinds."""
        if not kind or "\x00" in kind:
            raise CryptoError("a blind index kind must be non-empty and contain no NUL")
        try:
            message = kind.encode("utf-8") + b"\x00" + value.encode("utf-8")
        except UnicodeEncodeError:
            raise CryptoError("blind index value is not encodable as UTF-8") from None
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


# --- helpers ------------------------------------------------------------------------------------------------


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise CryptoError(f"{what} must be exactly {KEY_BYTES} bytes")


def _check_key_id(key_id: str) -> None:
    if not _KEY_ID_RE.fullmatch(key_id):
        raise CryptoError(f"invalid data key id {key_id!r}: use 1-64 characters from A-Z a-z 0-9 _ -")


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict unpadded urlsafe base64, or None. Only the canonical encoding is accepted, so a token has
    exactly one spelling (the lenient decoder would ignore stray characters and unused trailing bits)."""
    if not _URLSAFE_B64_RE.fullmatch(text) or len(text) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return raw if _b64encode(raw) == text else None

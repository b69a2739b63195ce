"""HMAC-SHA256 request signing for partner API keys: the client helper and the server-side checks.

A partner holds an API key id and its secret. Each request carries four headers: the key id, a Unix
timestamp (seconds), a random nonce and `v1=<hex HMAC-SHA256(secret, canonical request)>`. The canonical
request binds the method, path, raw query string, timestamp, nonce and a SHA-256 of the body, so none of
them can be changed in transit; the timestamp bounds how long a captured request stays usable
(`REPLAY_WINDOW_S`), and the caller remembers nonces inside that window to refuse exact replays (not
done here: nonces are stored in the database).

The secret itself is never sent. Signatures are compared with `hmac.compare_digest` so the comparison
time does not tell an attacker how many leading characters were right.

    canonical = "\\n".join([METHOD, path, query, timestamp, nonce, hex(sha256(body))])
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from qianbao.errors import Unauthenticated

SIGNATURE_VERSION = "v1"
REPLAY_WINDOW_S = 300

HEADER_KEY = "Qianbao-Key"
HEADER_TIMESTAMP = "Qianbao-Timestamp"
HEADER_NONCE = "Qianbao-Nonce"
HEADER_SIGNATURE = "Qianbao-Signature"
SIGNING_HEADERS = (HEADER_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

SignatureErrorCode = Literal["signature_invalid", "signature_expired", "signature_malformed"]

# Visible ASCII only: the key id is looked up, logged and echoed, so no spaces or control characters.
_KEY_ID = re.compile(r"[\x21-\x7e]{1,128}")
# No sign, no leading zero: the server re-renders the integer, which must give back the signed text.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIGNATURE = re.compile(rf"{SIGNATURE_VERSION}=([0-9a-fA-F]{{64}})")


class SignatureInvalid(Unauthenticated):
    """A signed request was refused; `code` says why (malformed headers, expired timestamp, bad MAC)."""

    def __init__(self, code: SignatureErrorCode, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


@dataclass(frozen=True)
class SignedRequest:
    """The signing headers of one request, parsed and validated for shape (not yet for authenticity)."""

    key_id: str
    timestamp: int
    nonce: str
    signature: str


def canonical_request(method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes that are signed: one field per line, the body as its SHA-256 hex digest."""
    return "\n".join(
        [method.upper(), path, query, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    ).encode()


def sign_request(
    secret: str, method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes
) -> str:
    """`v1=<hex HMAC-SHA256(secret, canonical request)>`."""
    canonical = canonical_request(method, path, query, timestamp, nonce, body)
    mac = hmac.new(secret.encode(), canonical, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def parse_signature_headers(headers: Mapping[str, str]) -> SignedRequest | None:
    """The request's signing headers, or None when it carries none of them (an unsigned request).

    Header names are matched case-insensitively. Any of the four headers without the others, a header
    sent twice, or a value of the wrong shape raises `SignatureInvalid("signature_malformed")`: a request
    that tried to sign must never be treated as unsigned.
    """
    wanted = {name.lower(): name for name in SIGNING_HEADERS}
    found: dict[str, str] = {}
    # `items()` rather than lookups: it sees duplicated headers (Starlette's Headers lists each one).
    for name, value in headers.items():
        canonical_name = wanted.get(name.lower())
        if canonical_name is None:
            continue
        if canonical_name in found:
            raise _malformed(f"header {canonical_name} is sent more than once")
        found[canonical_name] = value
    if not found:
        return None
    missing = [name for name in SIGNING_HEADERS if name not in found]
    if missing:
        raise _malformed(f"signed request lacks header(s): {', '.join(missing)}")

    key_id = found[HEADER_KEY]
    if not _KEY_ID.fullmatch(key_id):
        raise _malformed(f"{HEADER_KEY} must be 1 to 128 visible ASCII characters")
    timestamp = found[HEADER_TIMESTAMP]
    if not _TIMESTAMP.fullmatch(timestamp):
        raise _malformed(f"{HEADER_TIMESTAMP} must be an integer number of seconds since the Unix epoch")
    nonce = found[HEADER_NONCE]
    if not _NONCE.fullmatch(nonce):
        raise _malformed(f"{HEADER_NONCE} must be 16 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")
    signature = _SIGNATURE.fullmatch(found[HEADER_SIGNATURE])
    if signature is None:
        raise _malformed(f"{HEADER_SIGNATURE} must be '{SIGNATURE_VERSION}=' and 64 hex digits")
    return SignedRequest(
        key_id=key_id,
        timestamp=int(timestamp),
        nonce=nonce,
        signature=f"{SIGNATURE_VERSION}={signature.group(1).lower()}",
    )


def verify_request_signature(
    secret: str,
    signed: SignedRequest,
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    now_s: float,
    window_s: int = REPLAY_WINDOW_S,
) -> None:
    """Raise `SignatureInvalid` unless `signed` is a fresh, authentic signature of this request.

    `signature_expired` when the timestamp is more than `window_s` seconds from `now_s` (either way: a
    timestamp far in the future would extend the replay window); `signature_invalid` when the MAC does not
    match. `query` is the raw query string exactly as received, "" when there is none.
    """
    if abs(now_s - signed.timestamp) > window_s:
        raise SignatureInvalid(
            "signature_expired",
            f"{HEADER_TIMESTAMP} is more than {window_s} s away from the server's clock",
        )
    expected = sign_request(secret, method, path, query, str(signed.timestamp), signed.nonce, body)
    if not hmac.compare_digest(expected.encode(), signed.signature.encode()):
        raise SignatureInvalid("signature_invalid", "the request signature does not match")


def signing_headers(
    key_id: str,
    secret: str,
    method: str,
    url_path: str,
    query: str,
    body: bytes,
    *,
    now_s: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers a client adds to sign a request (current time and a random nonce by default)."""
    timestamp = str(int(time.time() if now_s is None else now_s))
    nonce = secrets.token_urlsafe(24) if nonce is None else nonce
    return {
        HEADER_KEY: key_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign_request(secret, method, url_path, query, timestamp, nonce, body),
    }


def _malformed(detail: str) -> SignatureInvalid:
    return SignatureInvalid("signature_malformed", detail)

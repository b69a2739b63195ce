"""Webhook signatures: how qianbao signs a delivery, and `verify_signature` for receivers.

Every delivery carries

    Qianbao-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

where the HMAC key is the endpoint's whole secret (`whsec_…`, UTF-8) and the message is the timestamp,
a dot, and the exact bytes of the request body. While a rotated secret is still honoured, the header
carries one `v1=` per secret (new first); a receiver accepts the delivery if any of them matches.

A receiver should verify the signature over the raw body (before parsing JSON), reject timestamps
further than a few minutes from its clock (a captured delivery cannot be replayed later), and use the
event id (`Qianbao-Event-Id`, also `id` in the body) to ignore a delivery it already processed.

    from qianbao.events.signing import verify_signature, WebhookSignatureError

    try:
        verify_signature(secret, request.headers["Qianbao-Signature"], raw_body, tolerance=300)
    except WebhookSignatureError:
        return 400
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

SIGNATURE_HEADER = "Qianbao-Signature"
EVENT_ID_HEADER = "Qianbao-Event-Id"
EVENT_TYPE_HEADER = "Qianbao-Event-Type"
DELIVERY_ID_HEADER = "Qianbao-Delivery-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
MAX_HEADER_LENGTH = 4096


class WebhookSignatureError(ValueError):
    """The signature header is missing, malformed, too old or too new, or matches no secret."""


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """hex(HMAC-SHA256(key = secret as UTF-8, message = b"<timestamp>." + body))."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    parts = [f"t={int(timestamp)}"] + [f"{SCHEME}={compute_signature(s, timestamp, body)}" for s in secrets]
    return ",".join(parts)


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """(timestamp, [v1 signatures]); unknown schemes are ignored so new ones can be added later."""
    if not header or len(header) > MAX_HEADER_LENGTH:
        raise WebhookSignatureError("no signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookSignatureError("malformed signature header")
        if name == "t":
            if timestamp is not None or not value.isdigit() or len(value) > 12:
                raise WebhookSignatureError("malformed timestamp in signature header")
            timestamp = int(value)
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise WebhookSignatureError("no timestamp in signature header")
    if not signatures:
        raise WebhookSignatureError(f"no {SCHEME} signature in signature header")
    return timestamp, signatures


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    tolerance: int = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> int:
    """Check a delivery's `Qianbao-Signature` against `secret` and the raw `body`; returns its timestamp.

    Raises `WebhookSignatureError` if the header is malformed, the timestamp is more than `tolerance`
    seconds away from `now` (default: this machine's clock), or no `v1` signature matches."""
    timestamp, signatures = parse_signature_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookSignatureError("signature timestamp is outside the tolerance")
    expected = compute_signature(secret, timestamp, body).encode()
    # compare_digest on every candidate: the time taken does not tell which characters were right.
    if not any(hmac.compare_digest(expected, c.lower().encode()) for c in signatures):
        raise WebhookSignatureError("no signature matches the secret and body")
    return timestamp

"""Events, pure: which events are public, who they are about, subscriptions, webhook URLs, retries.

No I/O here. The dispatcher (`events.dispatcher`) applies these rules to outbox rows.

Who an event is about (written once, here): every user id found in the event's payload under one of
`RECIPIENT_KEYS` — `user_id`, `from_user_id`, `to_user_id`, `payer_user_id`, `merchant_user_id` (the
merchant's owner). Each of them sees the event in `GET /v1/events`, and each of their enabled webhook
endpoints subscribed to its type gets a delivery. A capability that wants its event routed names the
people involved under these keys; nothing else in the payload routes it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

from qianbao.clock import rfc3339

RECIPIENT_KEYS = ("user_id", "from_user_id", "to_user_id", "payer_user_id", "merchant_user_id")

# The public catalogue: only these reach the event feed, webhooks and notifications. Other outbox events
# (sign-up, phone changes, KYC) are internal: their payloads were not written for third parties.
EVENT_TYPES: dict[str, str] = {
    "transfer.succeeded": "A P2P transfer or a move between own wallets succeeded.",
    "transfer.failed": "A transfer was declined (failure_code says why); no money moved.",
    "wallet.opened": "A sub-wallet was opened.",
    "wallet.closed": "A sub-wallet was closed; its balance moved to the main wallet.",
    "wallet.budget_threshold_reached": "Spending from a wallet reached 80% or 100% of its monthly budget.",
    "wallet.goal_reached": "A savings wallet reached its goal.",
    "merchant.created": "A merchant profile was created.",
    "merchant.suspended": "An operator suspended the merchant: it cannot take payments until reactivated.",
    "merchant.reactivated": "An operator reactivated a suspended merchant.",
    "qr_code.created": "A merchant created a dynamic QR code.",
    "payment.confirmation_required": "A payment-code charge waits for the payer's confirmation (a hold).",
    "payment_code.device_blocked": "Too many wrong payment codes named a device of the user: its codes pay "
    "no more until payment codes are enabled on it again.",
    "payment.succeeded": "A merchant payment succeeded.",
    "payment.failed": "A merchant payment was declined.",
    "payment.canceled": "The customer or the merchant called a held payment off; the hold is released.",
    "refund.succeeded": "A refund (full or partial) was paid back to the payer.",
    "refund.failed": "A refund was declined.",
    "payment_intent.created": "A checkout payment intent was created.",
    "payment_intent.processing": "The customer confirmed a payment intent; the payment is under way.",
    "payment_intent.succeeded": "A payment intent was paid.",
    "payment_intent.failed": "A payment intent's payment was declined.",
    "payment_intent.canceled": "A payment intent was canceled.",
    "payment_intent.expired": "A payment intent expired unpaid.",
    "money_request.created": "Someone (to_user_id) asked someone (from_user_id) for money.",
    "money_request.paid": "A money request was paid (a transfer.succeeded carries the money).",
    "money_request.declined": "The person asked declined a money request.",
    "money_request.canceled": "The requester canceled a money request.",
}
WILDCARD = "*"

MAX_URL_LENGTH = 2048
SNIPPET_CHARS = 500  # of a receiver's answer kept in the delivery log

# Retries: full jitter over an exponentially growing ceiling (10 s, 20 s, 40 s … capped at one hour),
# never sooner than a second, and none once 24 hours have passed since the event.
RETRY_BASE_S = 10
RETRY_CAP_S = 3600
RETRY_MIN_S = 1
RETRY_WINDOW_S = 24 * 3600


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or being attempted under a lease)
    DELIVERED = "delivered"  # an attempt got a 2xx answer
    FAILED = "failed"  # no 2xx within the retry window; a manual resend can still deliver it


def recipients(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """The users an event is about, each once, in `RECIPIENT_KEYS` order."""
    found: dict[str, None] = {}
    for key in RECIPIENT_KEYS:
        value = payload.get(key)
        if isinstance(value, str) and value:
            found[value] = None
    return tuple(found)


def is_public(event_type: str) -> bool:
    return event_type in EVENT_TYPES


def filter_is_known(value: str) -> bool:
    """`*`, a catalogue type, or a family such as `payment_intent.*`."""
    if value == WILDCARD or value in EVENT_TYPES:
        return True
    if value.endswith(".*"):
        prefix = value[:-1]
        return any(t.startswith(prefix) for t in EVENT_TYPES)
    return False


def subscribed(filters: Iterable[str], event_type: str) -> bool:
    for f in filters:
        if f == WILDCARD or f == event_type or (f.endswith(".*") and event_type.startswith(f[:-1])):
            return True
    return False


def event_body(event_id: str, event_type: str, created_at_us: int, data: Mapping[str, Any]) -> bytes:
    """The JSON a webhook receives (and the bytes it is signed over): the same for every attempt."""
    document = {"id": event_id, "type": event_type, "created_at": rfc3339(created_at_us), "data": dict(data)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


# --- webhook URLs ---------------------------------------------------------------------------------------

_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_allowed(address: str) -> bool:
    """A production webhook may only reach public unicast addresses (no loopback, private, link-local…)."""
    ip = _ip(address.split("%", 1)[0])
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def is_loopback_host(host: str) -> bool:
    ip = _ip(host)
    if ip is not None:
        return ip.is_loopback
    return host == "localhost" or host.endswith(".localhost")


def url_problem(url: str, *, production: bool) -> str | None:
    """Why `url` cannot be a webhook endpoint (None: it can).

    Production: https only, to a public host name or address. Sandbox: https anywhere, or plain http to
    localhost / 127.0.0.1 / [::1] for local development. Never credentials in the URL (they would be
    sent to, and logged by, every proxy on the way), never a fragment."""
    if not url or len(url) > MAX_URL_LENGTH:
        return f"url must be 1 to {MAX_URL_LENGTH} characters"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "url must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "url is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return "url must be an https:// URL"
    if "@" in parts.netloc:
        return "url must not contain credentials (user:password@)"
    if parts.fragment or url.endswith("#"):
        return "url must not contain a fragment (#…)"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "url must name a host"
    if production:
        if scheme != "https":
            return "url must use https"
        if not _public_host(host):
            return "url must not point to a private, loopback or local address"
    elif scheme == "http" and not is_loopback_host(host):
        return "plain http is allowed only to localhost, 127.0.0.1 or [::1] in sandbox mode; use https"
    return None


def _public_host(host: str) -> bool:
    if _ip(host) is not None:
        return address_allowed(host)
    if "." not in host or host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return False
    # A numeric last label is an IP address in disguise to many resolvers ("127.1", "0x7f.1").
    last = host.rsplit(".", 1)[1]
    return not (last.isdigit() or last.startswith("0x"))


# --- retries --------------------------------------------------------------------------------------------


class Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


def retry_ceiling_s(failures: int) -> int:
    """The most a retry waits after `failures` failed attempts: 10 s, 20 s, 40 s … at most an hour."""
    if failures < 1:
        raise ValueError("failures must be at least 1")
    return min(RETRY_CAP_S, RETRY_BASE_S * int(2 ** min(failures - 1, 20)))


def next_attempt_at(failures: int, *, now_us: int, event_created_us: int, rng: Uniform) -> int | None:
    """When to try again after `failures` failed attempts, or None: give up (24 h after the event).

    Full jitter (a uniform draw between 0 and the ceiling) spreads the retries of many deliveries that
    failed together, so a receiver coming back up is not hit by all of them at once. The last retry is
    at the end of the window at the latest."""
    deadline = event_created_us + RETRY_WINDOW_S * 1_000_000
    if now_us >= deadline:
        return None
    delay_s = max(float(RETRY_MIN_S), rng.uniform(0.0, float(retry_ceiling_s(failures))))
    return min(now_us + int(delay_s * 1_000_000), deadline)


def snippet(text: str) -> str:
    return text[:SNIPPET_CHARS]

"""Walkthrough 5: events. Register a webhook endpoint, verify and deduplicate deliveries in your receiver,
and poll GET /v1/events to catch up."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx2 as httpx

from .common import ApiKey, expect, new_idempotency_key, signed

# --- setting up (an API key with scope webhooks:manage, or the owner's session) ------------------------


def register_endpoint(client: httpx.Client, key: ApiKey, url: str, events: list[str]) -> dict[str, Any]:
    """Subscribe `url` to event types (`payment.succeeded`), families (`refund.*`) or everything (`*`).
    The answer holds the signing `secret` (whsec_…), this once: store it with your receiver."""
    endpoint: dict[str, Any] = expect(
        signed(
            client,
            key,
            "POST",
            "/v1/webhook-endpoints",
            json_body={"url": url, "events": events, "description": "order updates"},
            headers={"Idempotency-Key": new_idempotency_key()},
        ),
        201,
    )
    return endpoint


def delivery_log(client: httpx.Client, key: ApiKey, endpoint_id: str) -> list[dict[str, Any]]:
    """The latest deliveries to an endpoint, each with its latest attempt (status code, latency…)."""
    page = expect(signed(client, key, "GET", f"/v1/webhook-endpoints/{endpoint_id}/deliveries"), 200)
    deliveries: list[dict[str, Any]] = page["data"]
    return deliveries


# --- your receiver ---------------------------------------------------------------------------------------


def signature_is_valid(
    secret: str, header: str, body: bytes, *, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """Qianbao-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>.
    Check it over the raw bytes, before parsing; refuse old timestamps; compare in constant time.
    During a secret rotation the header carries two v1 values: either may match."""
    items = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    timestamps = [value for name, value in items if name == "t"]
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    timestamp = int(timestamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for name, value in items if name == "v1")


def handle_delivery(
    headers: Mapping[str, str], body: bytes, secret: str, processed: set[str]
) -> tuple[int, dict[str, Any] | None]:
    """What a receiver answers (the status) and the event to act on, if any. Deliveries are at least
    once and unordered: remember the ids of events you processed and skip repeats."""
    if not signature_is_valid(secret, headers.get("Qianbao-Signature", ""), body):
        return 400, None
    event: dict[str, Any] = json.loads(body)
    if event["id"] in processed:
        return 200, None  # a repeat: acknowledge it, do nothing
    processed.add(event["id"])
    return 200, event  # answer 2xx within 10 s; do slow work after answering


# --- polling instead of (or as well as) webhooks -------------------------------------------------------

# Events can become visible in the feed slightly out of order (payments committing concurrently), so each
# poll reads back this far before the newest event of the previous poll, skipping ids already handled.
OVERLAP = timedelta(minutes=5)


@dataclass
class FeedPosition:
    """What a poller keeps between polls (store it with your data): the events handled recently."""

    seen: dict[str, datetime] = field(default_factory=dict)  # event id → created_at

    def horizon(self) -> datetime | None:
        return max(self.seen.values()) - OVERLAP if self.seen else None


def new_events(
    client: httpx.Client, key: ApiKey, position: FeedPosition, event_type: str | None = None
) -> list[dict[str, Any]]:
    """Events about the key's owner not handled before, oldest first. The feed is newest first: read
    pages back to the horizon (on the first poll: to the beginning). Keep one position per `type`."""
    horizon = position.horizon()
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    if event_type is not None:
        params["type"] = event_type
    while True:
        page = expect(signed(client, key, "GET", "/v1/events", params=params), 200)
        for event in page["data"]:
            created = datetime.fromisoformat(event["created_at"])
            if horizon is not None and created < horizon:
                page["next_cursor"] = None  # everything further back was handled already
                break
            if event["id"] not in position.seen:
                found.append(event)
                position.seen[event["id"]] = created
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    horizon = position.horizon()
    position.seen = {i: t for i, t in position.seen.items() if horizon is None or t >= horizon}
    return list(reversed(found))


def walkthrough(
    client: httpx.Client, *, key: ApiKey, receiver_url: str, payment_id: str, wait_s: float = 30
) -> dict[str, Any]:
    """Register a receiver, then poll the feed until it has the event of `payment_id` (the dispatcher
    adds events within about a second of the change; TimeoutError after `wait_s`)."""
    endpoint = register_endpoint(client, key, receiver_url, ["payment.*", "refund.*", "payment_intent.*"])
    position = FeedPosition()
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait_s
    while True:
        events += new_events(client, key, position, event_type="payment.succeeded")
        if any(event["data"]["payment_id"] == payment_id for event in events):
            return {"endpoint": endpoint, "events": events}
        if time.monotonic() > deadline:
            raise TimeoutError(f"the event of payment {payment_id} did not reach the feed in {wait_s} s")
        time.sleep(1)

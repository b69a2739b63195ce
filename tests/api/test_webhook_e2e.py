"""End to end with a real HTTP receiver on 127.0.0.1: after a P2P transfer the payee's server gets a signed
webhook; it fails first (500), succeeds on the scheduled retry, and a manual resend delivers it again.
The dispatcher's clock is injected (a fixed clock starting now), so the retry is due without waiting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.clock import FixedClock, SystemClock, to_us
from qianbao.config import Settings
from qianbao.events import deliveries
from qianbao.events.dispatcher import dispatch_once
from qianbao.events.signing import verify_signature
from tests.api.test_webhook_endpoints import ctx_of, fund, ok, pay
from tests.support.api import SignedUp, make_settings
from tests.support.receiver import LocalReceiver, running_receiver


@pytest.fixture
def settings(fresh_database_url: str, tmp_path: Path) -> Settings:
    """The sandbox with loopback receivers allowed (QIANBAO_WEBHOOKS_ALLOW_LOOPBACK=true): the receiver here
    is a real HTTP server on 127.0.0.1."""
    return make_settings(fresh_database_url, tmp_path / "var", webhooks_allow_loopback=True)


@pytest.fixture
def receiver() -> Iterator[tuple[LocalReceiver, str]]:
    with running_receiver([500, 200]) as running:
        yield running


def subscribe(client: TestClient, owner: SignedUp, url: str) -> Any:
    """An endpoint of `owner` at `url` for transfer.succeeded (its secret is in the answer)."""
    body = {"url": url, "events": ["transfer.succeeded"]}
    return ok(client.post("/v1/webhook-endpoints", json=body, headers=owner.auth), 201)


def test_a_transfer_reaches_the_payees_server_signed_after_a_retry_and_a_manual_resend(
    client: TestClient, alice: SignedUp, bob: SignedUp, receiver: tuple[LocalReceiver, str]
) -> None:
    local, url = receiver
    endpoint = subscribe(client, bob, url)
    secret = endpoint["secret"]
    fund(client, alice)
    transfer = pay(client, alice, bob, 8_800)
    clock = FixedClock(SystemClock().now_us())
    ctx = ctx_of(client)

    first = dispatch_once(ctx, clock=clock)
    assert (first.attempts, first.delivered) == (1, 0)
    base = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
    [delivery] = ok(client.get(base, headers=bob.auth))["data"]
    assert delivery["status"] == "pending" and delivery["attempts"][0]["status_code"] == 500
    assert delivery["attempts"][0]["response_snippet"] == '{"received": false}'

    # The retry is scheduled within the first backoff ceiling (10 s); at that moment it is sent again.
    due = to_us_from_rfc3339(delivery["next_attempt_at"])
    assert 0 < due - clock.now_us() <= 10_000_000
    assert dispatch_once(ctx, clock=clock).attempts == 0  # not due yet
    clock.advance(microseconds=due - clock.now_us())
    second = dispatch_once(ctx, clock=clock)
    assert (second.attempts, second.delivered) == (1, 1)
    assert ok(client.get(f"{base}/{delivery['id']}", headers=bob.auth))["status"] == "delivered"

    resent = ok(client.post(f"{base}/{delivery['id']}/resend", headers=bob.auth))
    assert resent["status"] == "delivered" and resent["attempt_count"] == 3
    assert [(a["number"], a["status_code"], a["manual"]) for a in resent["attempts"]] == [
        (3, 200, True),
        (2, 200, False),
        (1, 500, False),
    ]

    assert len(local.received) == 3
    bodies = {r.body for r in local.received}
    assert len(bodies) == 1  # the same event, byte for byte, every time
    event = json.loads(bodies.pop())
    assert event["type"] == "transfer.succeeded" and event["data"]["transfer_id"] == transfer["id"]
    assert event["data"]["to_user_id"] == bob.user_id
    for request in local.received:
        assert request.path == "/hooks/qianbao"
        assert request.headers["Qianbao-Event-Id"] == event["id"]
        assert request.headers["Content-Type"] == "application/json"
        # What a receiver does: verify against its clock, within five minutes.
        verify_signature(secret, request.headers["Qianbao-Signature"], request.body, tolerance=300)
    # The receiver would deduplicate by event id: the feed carries the very same id.
    feed = ok(client.get("/v1/events?type=transfer.succeeded", headers=bob.auth))["data"]
    assert [e["id"] for e in feed] == [event["id"]]


def to_us_from_rfc3339(text: str) -> int:
    return to_us(datetime.fromisoformat(text.replace("Z", "+00:00")))


def test_manual_resends_are_capped_per_process_so_they_cannot_take_every_request_thread(
    client: TestClient, alice: SignedUp, bob: SignedUp, receiver: tuple[LocalReceiver, str]
) -> None:
    local, url = receiver
    endpoint = subscribe(client, bob, url)
    fund(client, alice)
    pay(client, alice, bob, 1_200)
    dispatch_once(ctx_of(client))
    base = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
    [delivery] = ok(client.get(base, headers=bob.auth))["data"]
    resend = f"{base}/{delivery['id']}/resend"
    # Other resends are in flight (each holds a slot while it waits for its receiver).
    for _ in range(deliveries.MAX_CONCURRENT_RESENDS):
        assert deliveries._resends.acquire(blocking=False)
    try:
        refused = client.post(resend, headers={**bob.auth, "Idempotency-Key": "resend-1"})
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert refused.headers["Retry-After"] == "5"
        assert len(local.received) == 1  # nothing was sent for the refused resend
    finally:
        for _ in range(deliveries.MAX_CONCURRENT_RESENDS):
            deliveries._resends.release()
    # The refusal did not bind the key: the same request now goes through.
    again = ok(client.post(resend, headers={**bob.auth, "Idempotency-Key": "resend-1"}))
    assert again["attempt_count"] == 2 and len(local.received) == 2

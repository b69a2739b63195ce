"""POST /v1/qr-codes/decode decodes in worker threads, a few at a time: a slow picture holds up nobody else.
Uploads are admitted before their bodies are read: a few decode, a few wait, the rest are refused unread;
each user has a rate limit.

zxing stands in for a big picture here by waiting until the test lets it go: the test then knows, without
timing anything, whether other requests were answered meanwhile. Bodies are sent by `TrackedBody`, which
notes whether the server ever asked for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import zxingcpp
from fastapi.testclient import TestClient

from qianbao.payments.emvco import build_merchant_qr, qr_png
from qianbao.payments.qr_images import (
    BUSY_RETRY_AFTER_S,
    DECODE_CONCURRENCY,
    DECODE_PER_CALLER,
    DECODE_WAITING,
    decode_slots,
    upload_admission,
)
from tests.api.test_wallets_and_transfers import container
from tests.support.api import SignedUp, sign_up

PAYLOAD = build_merchant_qr(
    merchant_id="mer_7", name="Lotus", city="Hangzhou", mcc="5812", amount_minor=None, dynamic=False
)
# Only bounds a failing test: a decode on the event loop blocks everything until zxing gives up waiting.
BLOCK_S = 10


class HeldDecoder:
    """zxing that waits for `release` (or BLOCK_S), counting how many decodes run at once."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.inside = self.peak = 0
        self.timed_out = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        if not self.release.wait(BLOCK_S):
            self.timed_out = True
        with self.lock:
            self.inside -= 1
        return self.real(*args, **kwargs)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldDecoder:
    decoder = HeldDecoder(zxingcpp.read_barcodes)
    monkeypatch.setattr(zxingcpp, "read_barcodes", decoder)
    return decoder


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + BLOCK_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class TrackedBody:
    """A request body that notes whether it was ever read (the test client reads it only when the
    application asks for it)."""

    def __init__(self) -> None:
        self.taken = False  # not `read`: httpx would take the body for a file

    def __iter__(self) -> Iterator[bytes]:
        self.taken = True
        yield qr_png(PAYLOAD)


def decode(client: TestClient, user: SignedUp | None, body: Iterable[bytes] | None = None) -> Any:
    headers = {**(user.auth if user else {}), "Content-Type": "image/png"}
    content = qr_png(PAYLOAD) if body is None else body
    return client.post("/v1/qr-codes/decode", content=content, headers=headers)


def test_health_answers_while_a_picture_decodes(
    client: TestClient, alice: SignedUp, held: HeldDecoder
) -> None:
    with ThreadPoolExecutor(1) as pool:
        decoding = pool.submit(decode, client, alice)
        assert wait_until(lambda: held.inside == 1)
        health = client.get("/healthz")
        held.release.set()
        decoded = decoding.result()
    assert health.status_code == 200
    assert not held.timed_out, "/healthz waited for the decode to finish"
    assert decoded.status_code == 200 and decoded.json()["payload"] == PAYLOAD


def test_at_most_a_few_pictures_decode_at_once(
    client: TestClient, alice: SignedUp, bob: SignedUp, held: HeldDecoder
) -> None:
    uploads = DECODE_CONCURRENCY + 2
    with ThreadPoolExecutor(uploads) as pool:
        decodings = [pool.submit(decode, client, (alice, bob)[i % 2]) for i in range(uploads)]
        # Every upload has arrived: some decode, the others wait for a slot.
        assert wait_until(
            lambda: (
                decode_slots().statistics().tasks_waiting == uploads - DECODE_CONCURRENCY
                and held.inside == DECODE_CONCURRENCY
            )
        )
        held.release.set()
        answers = [d.result() for d in decodings]
    assert [a.status_code for a in answers] == [200] * uploads
    assert held.peak == DECODE_CONCURRENCY and not held.timed_out


def test_when_every_place_is_taken_an_upload_is_refused_unread_and_health_answers(
    client: TestClient, alice: SignedUp, bob: SignedUp, held: HeldDecoder
) -> None:
    admission = upload_admission()
    users = [alice, bob, sign_up(client, name="张三"), sign_up(client, name="赵六")]
    *senders, latecomer = users
    places = [senders[i // DECODE_PER_CALLER] for i in range(admission.capacity)]  # each user's share
    late, own_third = TrackedBody(), TrackedBody()
    with ThreadPoolExecutor(len(places)) as pool:
        decodings = [pool.submit(decode, client, user) for user in places]
        # Every place is taken: some decode, the others wait for a slot with their bodies read.
        assert wait_until(
            lambda: (
                admission.admitted == admission.capacity
                and decode_slots().statistics().tasks_waiting == DECODE_WAITING
                and held.inside == DECODE_CONCURRENCY
            )
        )
        busy = decode(client, latecomer, late)
        over_share = decode(client, places[0], own_third)
        health = client.get("/healthz")
        held.release.set()
        answers = [d.result() for d in decodings]

    assert busy.status_code == 503 and busy.json()["code"] == "service_unavailable", busy.text
    assert busy.headers["Retry-After"] == str(BUSY_RETRY_AFTER_S)
    assert over_share.status_code == 429 and over_share.json()["code"] == "rate_limited", over_share.text
    assert not late.taken and not own_third.taken, "a refused upload's body was read"
    assert health.status_code == 200
    assert [a.status_code for a in answers] == [200] * len(places) and not held.timed_out
    # Places are given back: the refused upload, sent again, is read and decoded.
    assert admission.admitted == 0
    again = TrackedBody()
    retried = decode(client, latecomer, again)
    assert retried.status_code == 200 and retried.json()["payload"] == PAYLOAD and again.taken, retried.text


def test_a_users_pictures_are_rate_limited(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    limiter = container(client).identity.limiter
    per_minute = min(limit.amount for limit in limiter.rules["qr_decode"])
    limiter.hit("qr_decode", alice.user_id, cost=per_minute - 1)  # as if she had sent that many already

    last_allowed = decode(client, alice)
    refused_body = TrackedBody()
    refused = decode(client, alice, refused_body)

    assert last_allowed.status_code == 200
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited", refused.text
    assert int(refused.headers["Retry-After"]) >= 1 and not refused_body.taken
    assert decode(client, bob).status_code == 200  # a limit per user


def test_uploads_without_a_session_are_refused_unread(client: TestClient) -> None:
    anonymous, keyed = TrackedBody(), TrackedBody()
    signed_headers = {"Qianbao-Key": "key_x", "Qianbao-Signature": "x"}

    no_session = decode(client, None, anonymous)
    api_key = client.post(
        "/v1/qr-codes/decode", content=keyed, headers={**signed_headers, "Content-Type": "image/png"}
    )

    assert no_session.status_code == 401 and api_key.status_code == 403, (no_session.text, api_key.text)
    assert not anonymous.taken and not keyed.taken

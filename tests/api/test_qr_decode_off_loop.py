"""POST /v1/qr-codes/decode decodes in worker threads, a few at a time: a slow picture holds up nobody else.

zxing stands in for a big picture here by waiting until the test lets it go: the test then knows, without
timing anything, whether other requests were answered meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import zxingcpp
from fastapi.testclient import TestClient

from qianbao.payments.emvco import build_merchant_qr, qr_png
from qianbao.payments.qr_images import DECODE_CONCURRENCY, decode_slots
from tests.support.api import SignedUp

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


def decode(client: TestClient, user: SignedUp) -> Any:
    return client.post(
        "/v1/qr-codes/decode", content=qr_png(PAYLOAD), headers={**user.auth, "Content-Type": "image/png"}
    )


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
    client: TestClient, alice: SignedUp, held: HeldDecoder
) -> None:
    uploads = DECODE_CONCURRENCY + 2
    with ThreadPoolExecutor(uploads) as pool:
        decodings = [pool.submit(decode, client, alice) for _ in range(uploads)]
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

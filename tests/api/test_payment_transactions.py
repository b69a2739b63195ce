"""How many database transactions a payment takes, and which of them write. Every transaction is a pool
checkout and two round trips more on the hot path (BENCHMARKS.md), so the shape is pinned here. Through
the payment pipeline, a P2P or QR payment takes the session check (read), then its batch (write), which
claims the Idempotency-Key, decides, writes and stores the answer (a QR payment's answer reads the
merchant in the batch too)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Connection, event

from qianbao.store.database import _READ_ONLY
from tests.api.test_merchant_payments import fund, open_merchant, static_payload
from tests.support.api import SignedUp


@contextmanager
def transactions(client: TestClient) -> Iterator[list[str]]:
    """ "read"/"write" for each transaction begun by a request thread or a payment-writer thread (the
    pipeline's, for `async` payment routes) while the block runs: not the test's own thread, nor the
    background sweeper."""
    engine = client.app.state.container.db.engine  # type: ignore[attr-defined]
    seen: list[str] = []
    me = threading.current_thread()

    def on_begin(conn: Connection) -> None:
        thread = threading.current_thread()
        if thread is not me and thread.name.startswith(("AnyIO", "payment-writer")):
            seen.append("read" if conn.get_execution_options().get(_READ_ONLY) else "write")

    event.listen(engine, "begin", on_begin)
    try:
        yield seen
    finally:
        event.remove(engine, "begin", on_begin)


def _post(client: TestClient, user: SignedUp, path: str, body: dict[str, Any]) -> None:
    answer = client.post(path, json=body, headers={**user.auth, "Idempotency-Key": str(uuid.uuid4())})
    assert answer.status_code == 201, answer.text


def test_a_p2p_payment_takes_two_transactions_the_session_check_and_its_batch(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    fund(client, alice, 10_000)
    body = {
        "from_wallet_id": alice.wallet_id,
        "to": {"wallet_id": bob.wallet_id},
        "amount": {"amount": 100, "currency": "CNY"},
    }
    _post(client, alice, "/v1/transfers", body)  # Bob is no longer a new payee: no step-up below
    with transactions(client) as seen:
        _post(client, alice, "/v1/transfers", body)
    assert seen == ["read", "write"]


def test_a_qr_payment_takes_two_transactions_the_session_check_and_its_batch(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    fund(client, alice, 10_000)
    qr = static_payload(client, bob, open_merchant(client, bob)["id"])
    body = {"from_wallet_id": alice.wallet_id, "qr": qr, "amount": {"amount": 100, "currency": "CNY"}}
    with transactions(client) as seen:
        _post(client, alice, "/v1/payments", body)
    assert seen == ["read", "write"]

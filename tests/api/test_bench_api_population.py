"""`qianbao bench api` at tiny scale through the ASGI app: the population it creates over HTTP, the
requests its wrk script sends, and the books check after them (no wrk, no timing)."""

from __future__ import annotations

import random
from typing import Any

from fastapi.testclient import TestClient

from qianbao.benchmarks.api import answered, check_books, payment_transfers
from qianbao.benchmarks.api_params import ApiBenchParams
from qianbao.benchmarks.api_population import close_body, create_population, request_lines
from qianbao.benchmarks.api_wrk import WrkResult
from qianbao.ledger.queries import LedgerReader
from qianbao.store.database import Database


class ClientHttp:
    """The bench's HTTP port over the test client (the source address does not apply in-process)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> tuple[int, Any]:
        del source
        response = self.client.request(method, path, json=body, headers=headers)
        return response.status_code, response.json() if response.content else None


def _send(client: TestClient, line: str, key: str, amount: int) -> int:
    """What bench/api_payments.lua sends for one template line."""
    _kind, path, token, device, prefix = line.split("\t")
    headers = {
        "Authorization": f"Bearer {token}",
        "Device-Id": device,
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }
    return client.post(path, content=close_body(prefix, amount), headers=headers).status_code


def test_the_population_pays_with_every_template_and_the_books_agree(client: TestClient) -> None:
    params = ApiBenchParams(payers=3, merchants=1, qr_share=0.5, setup_concurrency=1)
    done: list[int] = []
    population = create_population(ClientHttp(client), params, done.append, rng=random.Random(5))
    assert len(population.payers) == 3 and len(population.merchants) == 1
    assert done[-1] == 4
    db: Database = client.app.state.container.db  # type: ignore[attr-defined]
    reader = LedgerReader(db)
    for payer in population.payers:
        account = reader.get_account(payer.wallet_id)
        assert account is not None and account.balance == 200_000  # funded over HTTP

    lines = request_lines(population, params, random.Random(5))
    kinds = {line.split("\t")[0] for line in lines}
    assert kinds == {"p2p", "qr"}
    before = payment_transfers(db)
    statuses = [_send(client, line, f"bench-t-run-1-{i}", 100 + i) for i, line in enumerate(lines)]
    assert statuses == [201] * len(lines)
    assert answered(db, "bench-t-run-") == {201: len(lines)}
    assert payment_transfers(db) - before == len(lines)

    # wrk saw all but one of them (in flight when it stopped): the books still balance.
    seen = WrkResult(1.0, len(lines) - 1, {201: len(lines) - 1}, {}, {}, {})
    books = check_books(db, "bench-t-run-", before, seen, connections=2)
    assert books.ok, books.problems
    assert (books.server_succeeded, books.new_payment_transfers, books.wrk_unseen) == (12, 12, 1)

    # A replay with the same key is answered from the idempotency record: no new ledger transfer.
    assert _send(client, lines[0], "bench-t-run-1-0", 100) == 201
    assert payment_transfers(db) - before == len(lines)


def test_the_books_check_reports_a_mismatch(client: TestClient) -> None:
    params = ApiBenchParams(payers=2, merchants=1, qr_share=0.0, setup_concurrency=1)
    population = create_population(ClientHttp(client), params, lambda _n: None, rng=random.Random(9))
    db: Database = client.app.state.container.db  # type: ignore[attr-defined]
    line = request_lines(population, params, random.Random(9))[0]
    before = payment_transfers(db)
    assert _send(client, line, "bench-u-run-1-1", 150) == 201
    claimed = WrkResult(1.0, 5, {201: 5}, {}, {}, {})  # more successes than the server answered
    books = check_books(db, "bench-u-run-", before, claimed, connections=2)
    assert not books.ok
    assert any("wrk counted 5" in p for p in books.problems)

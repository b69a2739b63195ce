"""Wallet history filters (type, direction, date range, counterparty, amount range, text), their pagination,
and the streamed CSV export (docs/p2p.md)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.identity.model import Principal, PrincipalKind
from qianbao.ledger.model import TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.payments import history
from qianbao.payments.funding import FUNDING_CODE, ensure_sandbox_funding_account
from tests.api.test_wallets_and_transfers import container, funded, pay, sub_wallet
from tests.support.api import SignedUp, sign_up

CST = timedelta(hours=8)


def listing(client: TestClient, user: SignedUp, wallet_id: str | None = None, **params: Any) -> Any:
    return client.get(
        f"/v1/wallets/{wallet_id or user.wallet_id}/transactions", params=params, headers=user.auth
    )


def ids(client: TestClient, user: SignedUp, **params: Any) -> list[str]:
    response = listing(client, user, **params)
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()["data"]]


def every_page(client: TestClient, user: SignedUp, **params: Any) -> tuple[list[str], int]:
    """All ids by following next_cursor; and how many pages that took."""
    found: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = listing(client, user, **query).json()
        pages += 1
        found += [t["id"] for t in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return found, pages


class Story:
    """Alice's wallet, newest first: lunch from bob (credit), rent to bob, move to her pocket, a payment to
    carol, and the top-up."""

    def __init__(self, client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
        self.carol = sign_up(client, name="张三")
        funded(client, alice, 100_000)
        funded(client, bob, 10_000)
        self.pocket = sub_wallet(client, alice)
        self.to_carol = self._pay(client, alice, 3_000, {"wallet_id": self.carol.wallet_id}, "Books")
        self.move = self._pay(client, alice, 20_000, {"wallet_id": self.pocket}, "存起来")
        self.rent = self._pay(client, alice, 45_000, {"wallet_id": bob.wallet_id}, "房租 March")
        self.lunch = self._pay(client, bob, 1_500, {"wallet_id": alice.wallet_id}, "Lunch AA")
        everything = listing(client, alice).json()["data"]
        assert [t["transfer_id"] for t in everything[:4]] == [self.lunch, self.rent, self.move, self.to_carol]
        self.all = [t["id"] for t in everything]
        self.by_transfer = {t["transfer_id"]: t["id"] for t in everything}
        self.top_up = everything[-1]["id"]
        self.times = [t["created_at"] for t in everything]

    @staticmethod
    def _pay(client: TestClient, payer: SignedUp, amount: int, to: dict[str, str], memo: str) -> str:
        response = pay(client, payer, amount, to=to, memo=memo)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def tx(self, transfer_id: str) -> str:
        return self.by_transfer[transfer_id]


@pytest.fixture
def story(client: TestClient, alice: SignedUp, bob: SignedUp) -> Story:
    return Story(client, alice, bob)


# -- the filters -------------------------------------------------------------------------------------


def test_type_and_direction(client: TestClient, alice: SignedUp, story: Story) -> None:
    p2p = [story.tx(story.lunch), story.tx(story.rent), story.tx(story.to_carol)]
    assert ids(client, alice, type="p2p") == p2p
    assert ids(client, alice, type="top_up") == [story.top_up]
    assert ids(client, alice, type="wallet_move") == [story.tx(story.move)]
    assert ids(client, alice, type="top_up,wallet_move") == [story.tx(story.move), story.top_up]
    assert ids(client, alice, type=["p2p", "top_up"]) == [*p2p, story.top_up]
    assert ids(client, alice, type="refund") == []  # a type nothing has (yet) is simply empty
    assert ids(client, alice, direction="credit") == [story.tx(story.lunch), story.top_up]
    assert ids(client, alice, direction="debit") == [
        story.tx(t) for t in (story.rent, story.move, story.to_carol)
    ]
    assert ids(client, alice, type="p2p", direction="credit") == [story.tx(story.lunch)]
    for bad in (
        {"type": "P2P!"},
        {"type": ","},
        {"type": ",".join(f"t{i}" for i in range(11))},
        {"direction": "up"},
    ):
        response = listing(client, alice, **bad)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", bad


def test_counterparty_and_amount_range(
    client: TestClient, alice: SignedUp, bob: SignedUp, story: Story
) -> None:
    assert ids(client, alice, counterparty=bob.wallet_id) == [story.tx(story.lunch), story.tx(story.rent)]
    assert ids(client, alice, counterparty=story.pocket) == [story.tx(story.move)]
    assert ids(client, alice, counterparty="wal_nobody") == []
    assert ids(client, alice, min_amount=3_000, max_amount=45_000) == [
        story.tx(story.rent),
        story.tx(story.move),
        story.tx(story.to_carol),
    ]
    assert ids(client, alice, min_amount=45_001) == [story.top_up]
    assert ids(client, alice, max_amount=1_500) == [story.tx(story.lunch)]
    assert ids(client, alice, counterparty=bob.wallet_id, min_amount=2_000) == [story.tx(story.rent)]
    for bad in (
        {"min_amount": -1},
        {"min_amount": 5, "max_amount": 4},
        {"max_amount": "x"},
        {"counterparty": " "},
    ):
        response = listing(client, alice, **bad)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", bad


def test_date_range(client: TestClient, alice: SignedUp, story: Story) -> None:
    newest, second = story.times[0], story.times[1]
    assert ids(client, alice, **{"from": second}) == story.all[:2]  # inclusive
    assert ids(client, alice, to=second) == story.all[1:]  # inclusive
    assert ids(client, alice, **{"from": second, "to": second}) == [story.all[1]]
    assert ids(client, alice, **{"from": newest.replace("Z", "+00:00")}) == story.all[:1]
    # The same instant written with another offset.
    shifted = datetime.fromisoformat(second).astimezone(UTC) + CST
    assert ids(client, alice, to=shifted.strftime("%Y-%m-%dT%H:%M:%S.%f+08:00")) == story.all[1:]
    # Dates are whole days in China time.
    first_day = (datetime.fromisoformat(story.times[-1]) + CST).date()
    last_day = (datetime.fromisoformat(newest) + CST).date()
    assert ids(client, alice, **{"from": first_day.isoformat(), "to": last_day.isoformat()}) == story.all
    assert ids(client, alice, to=(first_day - timedelta(days=1)).isoformat()) == []
    assert ids(client, alice, **{"from": (last_day + timedelta(days=1)).isoformat()}) == []
    for bad in (
        {"from": "yesterday"},
        {"from": "2026-02-30"},
        {"from": "2026-11-30T08:00:00"},  # no offset
        {"from": "2026-11-30", "to": "2026-11-29"},
    ):
        response = listing(client, alice, **bad)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", bad


def test_text_in_the_memo_or_the_counterpartys_shown_name(
    client: TestClient, alice: SignedUp, story: Story
) -> None:
    assert ids(client, alice, q="lunch") == [story.tx(story.lunch)]  # case-insensitive
    assert ids(client, alice, q="房租") == [story.tx(story.rent)]
    assert ids(client, alice, q="  books ") == [story.tx(story.to_carol)]
    # The counterparty's name as shown (masked): "*三" is carol; her full name finds nothing.
    assert ids(client, alice, q="*三") == [story.tx(story.to_carol)]
    assert ids(client, alice, q="张三") == []
    assert ids(client, alice, q="nothing like it") == []
    assert ids(client, alice, q="a", type="p2p", direction="credit") == [story.tx(story.lunch)]
    for bad in ({"q": ""}, {"q": "x" * 65}, {"q": "a\tb"}):
        response = listing(client, alice, **bad)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", bad


def test_filtered_pages_follow_the_cursor(
    client: TestClient, alice: SignedUp, story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything, _ = every_page(client, alice, limit=1)
    assert everything == story.all
    debits = ids(client, alice, direction="debit")
    assert every_page(client, alice, direction="debit", limit=1) == (debits, len(debits))
    assert every_page(client, alice, type="p2p", min_amount=2_000, limit=1)[0] == [
        story.tx(story.rent),
        story.tx(story.to_carol),
    ]
    # A text search examines at most MAX_SCAN entries per page: a page may come back short, even empty,
    # with a cursor to continue; following it finds every match once.
    monkeypatch.setattr(history, "MAX_SCAN", 2)
    # Every person's masked name has a "*"; Alice's own pocket is shown by its name, never her masked one.
    matches, pages = every_page(client, alice, q="*", limit=10)
    assert matches == [t for t in story.all if t not in (story.top_up, story.tx(story.move))]
    assert pages == 3
    first = listing(client, alice, q="books", limit=10).json()
    assert first["data"] == [] and first["next_cursor"]
    found, _ = every_page(client, alice, q="books", limit=10)
    assert found == [story.tx(story.to_carol)]


def test_other_peoples_history_does_not_exist(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    for path in ("transactions", "transactions.csv"):
        response = client.get(
            f"/v1/wallets/{alice.wallet_id}/{path}", params={"type": "p2p"}, headers=bob.auth
        )
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
        assert client.get(f"/v1/wallets/{alice.wallet_id}/{path}").status_code == 401


# -- CSV -----------------------------------------------------------------------------------------------


def csv_rows(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(b"\xef\xbb\xbf")
    text = response.content.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == history.CSV_COLUMNS
    return list(reader)


def test_csv_export_has_the_documented_columns_and_filters(
    client: TestClient, alice: SignedUp, bob: SignedUp, story: Story
) -> None:
    response = client.get(f"/v1/wallets/{alice.wallet_id}/transactions.csv", headers=alice.auth)

    rows = csv_rows(response)
    assert "attachment" in response.headers["content-disposition"]
    assert [r["id"] for r in rows] == story.all
    rent = rows[1]
    assert rent == {
        "created_at": story.times[1],
        "id": story.tx(story.rent),
        "type": "p2p",
        "direction": "debit",
        "amount": "450.00",
        "currency": "CNY",
        "balance_after": "320.00",
        "counterparty_kind": "wallet",
        "counterparty_wallet_id": bob.wallet_id,
        "counterparty_name": "*四",
        "memo": "房租 March",
        "status": "succeeded",
        "transfer_id": story.rent,
    }
    assert rows[-1]["type"] == "top_up" and rows[-1]["counterparty_kind"] == "system"
    assert rows[-1]["counterparty_wallet_id"] == "" and rows[-1]["memo"] == ""
    filtered = client.get(
        f"/v1/wallets/{alice.wallet_id}/transactions.csv",
        params={"type": "p2p", "q": "lunch"},
        headers=alice.auth,
    )
    assert [r["id"] for r in csv_rows(filtered)] == [story.tx(story.lunch)]
    bad = client.get(
        f"/v1/wallets/{alice.wallet_id}/transactions.csv", params={"direction": "x"}, headers=alice.auth
    )
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"


def test_csv_cells_cannot_become_formulas(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, alice, 10_000)
    memos = ['=HYPERLINK("http://evil")', "+1+2", "-3", "@SUM(A1)", "safe = text"]
    for memo in memos:
        assert pay(client, alice, 100, to={"wallet_id": bob.wallet_id}, memo=memo).status_code == 201

    rows = csv_rows(client.get(f"/v1/wallets/{bob.wallet_id}/transactions.csv", headers=bob.auth))

    assert [r["memo"] for r in reversed(rows)] == [
        '\'=HYPERLINK("http://evil")',
        "'+1+2",
        "'-3",
        "'@SUM(A1)",
        "safe = text",
    ]


def test_a_large_history_streams_page_by_page(
    client: TestClient, alice: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = 3_000
    ctx = container(client).identity
    funding = ensure_sandbox_funding_account(ctx, "CNY")
    specs = [
        TransferSpec.posted(
            f"bulk:{alice.user_id}:{i}", funding, alice.wallet_id, 1 + i % 7, "CNY", code=FUNDING_CODE
        )
        for i in range(entries)
    ]
    with ctx.uow() as uow:
        results = ctx.ledger.apply_in(uow.conn, specs)
        uow.commit()
    assert all(r.succeeded for r in results)
    fetched: list[int] = []
    original = LedgerReader.account_history_filtered

    def counting(self: LedgerReader, *args: Any, **kwargs: Any) -> Any:
        page = original(self, *args, **kwargs)
        fetched.append(len(page.entries))
        return page

    monkeypatch.setattr(LedgerReader, "account_history_filtered", counting)

    # Through the service: the first page is read before anything is returned, then one more page per
    # chunk the reader takes, never the whole history at once.
    principal = Principal(PrincipalKind.USER, alice.user_id, alice.user_id)
    chunks = history.export_csv(ctx, principal, alice.wallet_id)
    assert fetched == [100]
    header = next(chunks)
    assert header.startswith("\ufeffcreated_at,id,type") and fetched == [100]
    lines = 0
    for taken, chunk in enumerate(chunks, start=1):
        lines += chunk.count("\r\n")
        assert len(fetched) == taken  # page n+1 is read only when chunk n+1 is asked for
    assert lines == entries and max(fetched) <= 100 and len(fetched) == entries // 100

    # Through HTTP: every entry once, newest first, amounts as decimals.
    fetched.clear()
    rows = csv_rows(client.get(f"/v1/wallets/{alice.wallet_id}/transactions.csv", headers=alice.auth))
    assert len(rows) == entries and len({r["id"] for r in rows}) == entries
    assert rows[0]["id"] == f"bulk:{alice.user_id}:{entries - 1}" and rows[0]["amount"] == "0.04"
    assert max(fetched) <= 100 and len(fetched) == entries // 100
    filtered = client.get(
        f"/v1/wallets/{alice.wallet_id}/transactions.csv", params={"min_amount": 7}, headers=alice.auth
    )
    assert len(csv_rows(filtered)) == len([i for i in range(entries) if 1 + i % 7 == 7])

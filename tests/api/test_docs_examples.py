"""docs/api.md stays true: its Python walkthroughs (docs/examples/*.py) run against the app on both
databases; the curl walkthroughs (docs/examples/*.sh), the page's other request snippets, the README's
tour and the Python walkthroughs (docs/examples/run.py) each run twice in a row against one real
`qianbao serve` and stop at any error; the doc holds every example file verbatim, and every curl command
in it names an operation of /openapi.json with headers, query parameters and body fields that operation
declares."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from qianbao.events.dispatcher import dispatch_once
from qianbao.events.model import EVENT_TYPES
from qianbao.events.signing import signature_header
from qianbao.ledger.verify import verify_ledger
from qianbao.payments import payment_code_model
from qianbao.payments.emvco import crc16_ccitt_false
from tests.support.api import make_settings, new_phone
from tests.support.receiver import public_resolver

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
EXAMPLES = ROOT / "docs" / "examples"


def _examples_package() -> None:
    """docs/examples as the package `docs_examples`, loaded by path: `docs` is no package of ours (and
    other distributions install a top-level `docs` directory too)."""
    spec = importlib.util.spec_from_file_location(
        "docs_examples", EXAMPLES / "__init__.py", submodule_search_locations=[str(EXAMPLES)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules["docs_examples"] = package
    spec.loader.exec_module(package)


_examples_package()
checkout = importlib.import_module("docs_examples.checkout")
common = importlib.import_module("docs_examples.common")
merchant_qr = importlib.import_module("docs_examples.merchant_qr")
p2p = importlib.import_module("docs_examples.p2p")
payment_code = importlib.import_module("docs_examples.payment_code")
webhooks = importlib.import_module("docs_examples.webhooks")
ApiKey, ApiProblem, bearer, signed = common.ApiKey, common.ApiProblem, common.bearer, common.signed
PASSWORD = "Lantern-Harbour-42"  # noqa: S105 - a test password
PIN = "582914"


# --- helpers --------------------------------------------------------------------------------------------


@dataclass
class User:
    id: str
    phone: str
    wallet_id: str
    token: str


def new_user(client: TestClient, name: str) -> User:
    """A signed-up, signed-in user with a payment PIN, made with the walkthrough's own functions."""
    phone = new_phone()
    device = f"device-{phone[-6:]}"
    created = p2p.sign_up(client, phone, PASSWORD, name, device_id=device)
    token = p2p.sign_in(client, phone, PASSWORD, device_id=device)
    p2p.set_payment_pin(client, token, PIN)
    return User(created["id"], phone, created["main_wallet_id"], token)


def record(client: TestClient) -> list[tuple[str, str, int, str | None]]:
    """Every answer the client gets from now on: (method, path, status, problem code)."""
    seen: list[tuple[str, str, int, str | None]] = []

    def hook(response: httpx.Response) -> None:
        response.read()
        is_problem = response.headers.get("content-type", "").startswith("application/problem+json")
        code = response.json().get("code") if is_problem else None
        seen.append((response.request.method, response.request.url.path, response.status_code, code))

    client.event_hooks = {"request": [], "response": [hook]}
    return seen


def stepped_up(seen: list[tuple[str, str, int, str | None]], method: str, path: str) -> bool:
    """The request was first refused with step_up_required, then went through."""
    answers = [(status, code) for m, p, status, code in seen if (m, p) == (method, path)]
    return len(answers) == 2 and answers[0] == (401, "step_up_required") and answers[1][0] < 300


def wallet(client: TestClient, user: User) -> dict[str, Any]:
    response = client.get(f"/v1/wallets/{user.wallet_id}", headers=bearer(user.token))
    assert response.status_code == 200, response.text
    return dict(response.json())


def balance(client: TestClient, user: User) -> int:
    return int(wallet(client, user)["balance"]["amount"])


def ledger_ok(client: TestClient) -> None:
    report = verify_ledger(client.app.state.container.db)  # type: ignore[attr-defined]
    assert report.ok, report


@pytest.fixture
def shop(client: TestClient) -> tuple[User, dict[str, Any], ApiKey]:
    """Bob, his noodle shop and a till key (read, payments:write, refunds:write)."""
    bob = new_user(client, "李四")
    merchant = merchant_qr.open_merchant(client, bob.token, "老王面馆", mcc="5812", city="上海")
    key = merchant_qr.create_api_key(
        client, bob.token, PIN, "till", ["read", "payments:write", "refunds:write"]
    )
    return bob, merchant, key


# --- the documentation holds the example files ---------------------------------------------------------


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh") and p.name != "__init__.py")


def test_the_doc_contains_every_example_file_verbatim() -> None:
    doc = DOC.read_text(encoding="utf-8")
    files = example_files()
    assert {p.name for p in files} >= {"common.py", "p2p.py", "qb.sh", "p2p.sh", "webhooks.py"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        fence = "python" if path.suffix == ".py" else "sh"
        assert f"```{fence}\n{text}```\n" in doc, f"docs/api.md does not hold {path.name} verbatim"


# --- walkthrough 1: P2P by phone ------------------------------------------------------------------------


def test_walkthrough_p2p_by_phone(client: TestClient) -> None:
    seen = record(client)
    alice_phone, bob_phone = new_phone(), new_phone()
    out = p2p.walkthrough(client, alice_phone, bob_phone, PASSWORD)

    assert out["alice"]["kyc_tier"] == 4 and out["alice"]["main_wallet_id"].startswith("wal_")
    assert out["recipient"] == {"name_masked": "*四", "phone_masked": f"{bob_phone[3:6]}****{bob_phone[-4:]}"}
    transfer = out["transfer"]
    assert transfer["status"] == "succeeded" and transfer["amount"] == {"amount": 52_000, "currency": "CNY"}
    assert transfer["to_wallet_id"] == out["bob"]["main_wallet_id"] and transfer["memo"] == "电影票"
    # ¥520 to someone new: the first answer asked for step-up, the PIN proved it.
    assert stepped_up(seen, "POST", "/v1/transfers")
    assert out["wallet"]["balance"]["amount"] == 48_000
    [entry] = out["sent"]
    assert entry["transfer_id"] == transfer["id"] and entry["counterparty"]["name_masked"] == "*四"
    assert (entry["type"], entry["direction"], entry["balance_after"]["amount"]) == ("p2p", "debit", 48_000)

    bob_token = p2p.sign_in(client, bob_phone, PASSWORD, device_id="bob-phone")
    [received] = p2p.wallet_history(client, bob_token, out["bob"]["main_wallet_id"], direction="credit")
    assert received["transfer_id"] == transfer["id"] and received["counterparty"]["name_masked"] == "*丽"
    ledger_ok(client)


def test_history_follows_next_cursor(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = new_user(client, "王丽")
    for fen in (1_000, 2_000, 3_000):
        p2p.fund_in_sandbox(client, alice.token, alice.wallet_id, fen)
    cursors: list[str | None] = []
    original = client.get

    def small_pages(url: str, **kwargs: Any) -> httpx.Response:
        kwargs["params"] = {**kwargs["params"], "limit": 2}
        response = original(url, **kwargs)
        cursors.append(response.json()["next_cursor"])
        return response

    monkeypatch.setattr(client, "get", small_pages)
    entries = p2p.wallet_history(client, alice.token, alice.wallet_id, type="top_up")
    assert [e["amount"]["amount"] for e in entries] == [3_000, 2_000, 1_000]
    assert len(cursors) == 2 and cursors[0] is not None and cursors[-1] is None


def test_a_problem_is_raised_with_its_code(client: TestClient) -> None:
    alice = new_user(client, "王丽")
    with pytest.raises(ApiProblem) as raised:
        p2p.send_to_phone(
            client, alice.token, PIN, from_wallet_id=alice.wallet_id, phone=new_phone(), fen=100
        )
    assert raised.value.status == 404 and raised.value.code == "recipient_not_found"
    assert raised.value.problem["user_message"] and raised.value.problem["support_reference"]


# --- walkthrough 2: a merchant, QR codes, a refund ------------------------------------------------------


def test_walkthrough_merchant_qr_and_refund(client: TestClient) -> None:
    seen = record(client)
    alice, bob = new_user(client, "王丽"), new_user(client, "李四")
    p2p.fund_in_sandbox(client, alice.token, alice.wallet_id, 200_000)
    out = merchant_qr.walkthrough(
        client,
        owner_token=bob.token,
        owner_pin=PIN,
        customer_token=alice.token,
        customer_pin=PIN,
        customer_wallet_id=alice.wallet_id,
    )
    assert stepped_up(seen, "POST", "/v1/api-keys")
    assert out["key"].id.startswith("key_") and out["key"].secret.startswith("qbk_")

    parsed = client.post(
        "/v1/qr-codes/parse", json={"payload": out["static_payload"]}, headers=bearer(alice.token)
    )
    assert parsed.json()["point_of_initiation"] == "static" and parsed.json()["merchant_name"] == "老王面馆"
    assert out["shown_static"]["merchant"]["name"] == "老王面馆" and out["shown_static"]["amount"] is None
    assert out["shown_dynamic"]["amount"] == {"amount": 10_000, "currency": "CNY"}
    forged = out["code"]["payload"].replace("5406100.00", "54041.00")[:-4]
    forged += crc16_ccitt_false(forged)
    with pytest.raises(merchant_qr.NotGenuine):
        merchant_qr.look_before_paying(client, alice.token, forged)  # ¥1.00 in the code, ¥100.00 on record
    assert out["by_static"]["method"] == "qr_static" and out["by_static"]["amount"]["amount"] == 2_500
    assert "fee" not in out["by_static"]  # the customer never sees the fee
    assert out["code"]["status"] == "active" and out["code"]["payload"].startswith("000201010212")
    assert out["by_dynamic"]["method"] == "qr_dynamic" and out["by_dynamic"]["order_id"] == "A-1001"
    assert out["paid_code"]["status"] == "paid" and out["paid_code"]["payment_id"] == out["by_dynamic"]["id"]
    # ¥30.00 of ¥100.00 refunded: 30 % of the ¥0.38 fee comes back, rounded (¥0.11).
    assert out["refund"]["status"] == "succeeded" and out["refund"]["amount"]["amount"] == 3_000
    assert out["refund"]["fee_refunded"]["amount"] == 11

    assert balance(client, alice) == 200_000 - 2_500 - 10_000 + 3_000
    merchant = client.get(f"/v1/merchants/{out['merchant']['id']}", headers=bearer(bob.token)).json()
    # Fees: ¥25.00 → ¥0.10 (0.095 rounded half-up), ¥100.00 → ¥0.38; the refund gave ¥0.11 back.
    assert merchant["wallet"]["balance"]["amount"] == 2_500 - 10 + 10_000 - 38 - 3_000 + 11
    payment = signed(client, out["key"], "GET", f"/v1/payments/{out['by_dynamic']['id']}").json()
    assert payment["refunded"]["amount"] == 3_000 and payment["refund_status"] == "partially_refunded"
    ledger_ok(client)


def test_a_static_code_needs_the_amount(
    client: TestClient, shop: tuple[User, dict[str, Any], ApiKey]
) -> None:
    _bob, merchant, key = shop
    alice = new_user(client, "王丽")
    p2p.fund_in_sandbox(client, alice.token, alice.wallet_id, 10_000)
    printed = merchant_qr.static_qr(client, key, merchant["id"])
    with pytest.raises(ApiProblem) as raised:
        merchant_qr.pay_qr(client, alice.token, PIN, from_wallet_id=alice.wallet_id, payload=printed)
    assert raised.value.code == "validation_error"
    assert balance(client, alice) == 10_000


# --- walkthrough 3: payment code at a till --------------------------------------------------------------


def test_the_offline_code_matches_the_servers_algorithm() -> None:
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105 - a test HOTP secret
    for unix_time, sequence in ((0, 0), (1_790_000_000.5, 3), (2_000_000_059, 9)):
        assert payment_code.payment_code(secret, "4821937", unix_time, sequence) == (
            payment_code_model.payment_code(secret, "4821937", unix_time, sequence)
        )


def test_walkthrough_payment_code_with_a_held_payment(
    client: TestClient, shop: tuple[User, dict[str, Any], ApiKey]
) -> None:
    seen = record(client)
    _bob, merchant, key = shop
    alice = new_user(client, "王丽")
    p2p.fund_in_sandbox(client, alice.token, alice.wallet_id, 200_000)
    out = payment_code.walkthrough(
        client,
        customer_token=alice.token,
        customer_pin=PIN,
        customer_wallet_id=alice.wallet_id,
        till_key=key,
        merchant_id=merchant["id"],
    )
    assert stepped_up(seen, "POST", "/v1/payment-codes/devices")
    assert len(out["device"]["number"]) == 7 and out["device"]["secret"]
    assert out["small_status"] == 201 and out["small"]["status"] == "succeeded"
    assert out["small"]["method"] == "payment_code" and out["small"]["order_id"] == "POS-1"
    assert out["large_status"] == 202 and out["held"]["status"] == "pending" and out["held"]["expires_at"]
    assert [p["id"] for p in out["waiting"]] == [out["held"]["id"]]
    assert stepped_up(seen, "POST", f"/v1/payments/{out['held']['id']}/confirm")
    assert out["confirmed"]["status"] == "succeeded"
    assert out["seen_by_till"]["status"] == "succeeded" and out["seen_by_till"]["fee"]["amount"] == 570
    assert balance(client, alice) == 200_000 - 2_500 - 150_000
    ledger_ok(client)


# --- walkthrough 4: checkout ----------------------------------------------------------------------------


def test_walkthrough_checkout(client: TestClient, shop: tuple[User, dict[str, Any], ApiKey]) -> None:
    _bob, merchant, key = shop
    alice = new_user(client, "王丽")
    p2p.fund_in_sandbox(client, alice.token, alice.wallet_id, 10_000)
    out = checkout.walkthrough(
        client,
        server_key=key,
        merchant_id=merchant["id"],
        customer_token=alice.token,
        customer_pin=PIN,
        customer_wallet_id=alice.wallet_id,
    )
    assert out["intent"]["status"] == "requires_confirmation" and out["intent"]["order_id"] == "WEB-77"
    assert out["shown"]["description"] == "龙井 250g" and out["shown"]["amount"]["amount"] == 3_800
    paid = out["paid"]
    assert paid["payment_intent"]["status"] == "succeeded" and paid["payment"]["method"] == "checkout"
    assert out["final"]["status"] == "succeeded" and out["final"]["payment_id"] == paid["payment"]["id"]
    assert balance(client, alice) == 10_000 - 3_800
    # The same order again (a retry of the create call): the same intent, not a second one.
    again = checkout.create_payment_intent(
        client,
        key,
        merchant["id"],
        3_800,
        order_id="WEB-77",
        description="龙井 250g",
        return_url="https://tea.example/orders/WEB-77",
    )
    assert again["id"] == out["intent"]["id"]


def test_a_refused_checkout_stays_payable(
    client: TestClient, shop: tuple[User, dict[str, Any], ApiKey]
) -> None:
    _bob, merchant, key = shop
    alice = new_user(client, "王丽")
    intent = checkout.create_payment_intent(
        client,
        key,
        merchant["id"],
        3_800,
        order_id="WEB-78",
        description="茶",
        return_url="https://t.example/",
    )
    with pytest.raises(ApiProblem) as raised:
        checkout.pay_intent(client, alice.token, PIN, intent["id"], alice.wallet_id)
    assert raised.value.code == "insufficient_funds"
    p2p.fund_in_sandbox(client, alice.token, alice.wallet_id, 5_000)
    assert checkout.pay_intent(client, alice.token, PIN, intent["id"], alice.wallet_id)["payment"]["id"]
    assert checkout.intent_status(client, key, intent["id"])["status"] == "succeeded"


# --- walkthrough 5: webhooks and the event feed ---------------------------------------------------------


def test_walkthrough_webhooks_and_polling(
    client: TestClient, shop: tuple[User, dict[str, Any], ApiKey]
) -> None:
    bob, merchant, till_key = shop
    events_key = merchant_qr.create_api_key(client, bob.token, PIN, "events", ["read", "webhooks:manage"])
    url = "https://shop.example.com/hooks/qianbao"
    endpoint = webhooks.register_endpoint(client, events_key, url, ["payment.*", "refund.*"])
    assert endpoint["id"].startswith("whe_") and endpoint["secret"].startswith("whsec_")

    alice = new_user(client, "王丽")
    p2p.fund_in_sandbox(client, alice.token, alice.wallet_id, 10_000)
    printed = merchant_qr.static_qr(client, till_key, merchant["id"])
    paid = merchant_qr.pay_qr(
        client, alice.token, PIN, from_wallet_id=alice.wallet_id, payload=printed, fen=1_800
    )

    processed: set[str] = set()
    acted_on: list[dict[str, Any]] = []
    raw: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        raw.append(request)
        status, event = webhooks.handle_delivery(
            request.headers, request.content, endpoint["secret"], processed
        )
        if event is not None:
            acted_on.append(event)
        return httpx.Response(status)

    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    report = dispatch_once(ctx, transport=httpx.MockTransport(receiver), resolver=public_resolver)
    assert report.delivered == 1
    [event] = acted_on
    assert event["type"] == "payment.succeeded" and event["data"]["payment_id"] == paid["id"]
    # Sent to the vetted address of the URL's host, which `Host` (and TLS, as SNI) still names.
    assert raw[0].headers["Host"] == "shop.example.com" and raw[0].url.path == "/hooks/qianbao"
    assert raw[0].headers["Qianbao-Event-Id"] == event["id"]

    # The receiver's checks: a repeat is acknowledged and skipped; a changed body or an old
    # timestamp is refused.
    body, header = raw[0].content, raw[0].headers["Qianbao-Signature"]
    assert webhooks.handle_delivery(raw[0].headers, body, endpoint["secret"], processed) == (200, None)
    assert (
        webhooks.handle_delivery({"Qianbao-Signature": header}, body + b" ", endpoint["secret"], set())[0]
        == 400
    )
    old = signature_header([endpoint["secret"]], int(time.time()) - 600, body)
    assert not webhooks.signature_is_valid(endpoint["secret"], old, body)
    assert webhooks.signature_is_valid(endpoint["secret"], old, body, now=time.time() - 600)
    rotated = signature_header(["whsec_new", endpoint["secret"]], int(time.time()), body)
    assert webhooks.signature_is_valid(endpoint["secret"], rotated, body)

    [delivery] = webhooks.delivery_log(client, events_key, endpoint["id"])
    assert delivery["status"] == "delivered" and delivery["event_id"] == event["id"]

    # Polling: the same event, by the same id; a second poll finds nothing new, a third the next payment.
    position = webhooks.FeedPosition()
    polled = webhooks.new_events(client, events_key, position, event_type="payment.succeeded")
    assert [e["id"] for e in polled] == [event["id"]]
    assert webhooks.new_events(client, events_key, position, event_type="payment.succeeded") == []
    later = merchant_qr.pay_qr(
        client, alice.token, PIN, from_wallet_id=alice.wallet_id, payload=printed, fen=200
    )
    dispatch_once(ctx, transport=httpx.MockTransport(receiver), resolver=public_resolver)
    polled = webhooks.new_events(client, events_key, position, event_type="payment.succeeded")
    assert [e["data"]["payment_id"] for e in polled] == [later["id"]]
    everything = webhooks.new_events(client, events_key, webhooks.FeedPosition())
    assert [e["type"] for e in everything] == ["merchant.created", "payment.succeeded", "payment.succeeded"]


def test_polling_reads_every_page(
    client: TestClient, shop: tuple[User, dict[str, Any], ApiKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    bob, merchant, till_key = shop
    key = merchant_qr.create_api_key(client, bob.token, PIN, "events", ["read"])
    alice = new_user(client, "王丽")
    p2p.fund_in_sandbox(client, alice.token, alice.wallet_id, 10_000)
    printed = merchant_qr.static_qr(client, till_key, merchant["id"])
    for _ in range(3):
        merchant_qr.pay_qr(client, alice.token, PIN, from_wallet_id=alice.wallet_id, payload=printed, fen=100)
    dispatch_once(client.app.state.container.identity)  # type: ignore[attr-defined]

    # Pages of two instead of 100 (the limit is signed with the query, so it is changed before signing).
    cursors: list[str | None] = []
    original = webhooks.signed

    def small_pages(*args: Any, **kwargs: Any) -> httpx.Response:
        kwargs["params"] = {**kwargs["params"], "limit": 2}
        response = original(*args, **kwargs)
        cursors.append(response.json()["next_cursor"])
        return response

    monkeypatch.setattr(webhooks, "signed", small_pages)
    found = webhooks.new_events(client, key, webhooks.FeedPosition(), event_type="payment.succeeded")
    assert len(found) == 3 and len(cursors) == 2 and cursors[0] is not None and cursors[-1] is None
    assert found == sorted(found, key=lambda e: e["created_at"])  # oldest first


def slugs(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M):
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        found.add(text.replace(" ", "-"))
    return found


def test_the_doc_links_to_headings_that_exist() -> None:
    doc = DOC.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([a-z]+\.md)?#([^)]+)\)", doc)
    assert len(links) > 20
    for target, fragment in links:
        text = doc if not target else (DOC.parent / target).read_text(encoding="utf-8")
        assert fragment in slugs(text), f"{target or 'api.md'}#{fragment} does not exist"


# --- curl commands in docs/api.md against /openapi.json -------------------------------------------------

SHELL_FENCE = re.compile(r"```(?:sh|bash|shell)\n(.*?)```", re.S)
VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\$\([^)]*\)")
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$")
STOP_TOKENS = {"|", ")", ";", "&&", "||", ">", "<<<", "<<", "&"}
KNOWN_HEADERS = {
    "authorization",
    "content-type",
    "idempotency-key",
    "step-up",
    "accept-language",
    "device-id",
    "x-csrf-token",
    "qianbao-key",
    "qianbao-timestamp",
    "qianbao-nonce",
    "qianbao-signature",
    "qianbao-event-id",
}


@dataclass
class CurlCall:
    method: str
    path: str
    query: list[str]
    headers: dict[str, str]
    body: str | None
    line: str


def logical_lines(block: str) -> list[str]:
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def shell_variables(lines: list[str]) -> dict[str, str]:
    """NAME='…' / NAME="…" assignments of a block, unquoted (used as `-d "$NAME"`)."""
    found = {}
    for line in lines:
        match = ASSIGNMENT.match(line)
        if match and not match.group(2).startswith("$("):
            try:
                [value] = shlex.split(match.group(2))
            except ValueError:
                continue
            found[match.group(1)] = value
    return found


def tokens_from(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;<>()")
    lexer.whitespace_split = True
    out = []
    for token in lexer:
        if token in STOP_TOKENS:
            break
        out.append(token)
    return out


def parse_curl(tokens: list[str], variables: dict[str, str], line: str) -> CurlCall:
    method, url, body, get = None, None, None, False
    query: list[str] = []
    headers: dict[str, str] = {}
    args = iter(tokens[1:])
    for arg in args:
        if arg in ("-X", "--request"):
            method = next(args)
        elif arg in ("-H", "--header"):
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg in ("-d", "--data", "--data-binary", "--data-raw"):
            body = next_body(args, variables)
        elif arg == "--data-urlencode":
            query.append(next(args).split("=", 1)[0])
        elif arg in ("-G", "--get"):
            get = True
        elif arg in ("-o", "--output", "-w", "--write-out"):
            next(args)
        elif not arg.startswith("-") and url is None:
            url = arg
    assert url is not None, f"no URL in: {line}"
    path, _, raw_query = re.sub(r"^(\$QB|\$\{QB\}|https?://[^/]+)", "", url).partition("?")
    query += [part.split("=", 1)[0] for part in raw_query.split("&") if part]
    if method is None:
        method = "GET" if get or body is None else "POST"
    return CurlCall(method.upper(), path, query, headers, body, line)


def next_body(args: Iterator[str], variables: dict[str, str]) -> str:
    value = next(args)
    match = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value)
    return variables[match.group(1)] if match else value


def parse_qb_signed(tokens: list[str], variables: dict[str, str], line: str) -> CurlCall:
    method, target = tokens[1], tokens[2]
    body = None
    rest = tokens[3:]
    if rest and not rest[0].startswith("-"):
        body = next_body(iter(rest), variables) or None
        rest = rest[1:]
    headers = {"Qianbao-Key": "$QB_KEY_ID"}
    items = iter(rest)
    for arg in items:
        if arg in ("-H", "--header"):
            name, _, value = next(items).partition(":")
            headers[name.strip()] = value.strip()
    path, _, raw_query = target.partition("?")
    if body is not None:
        headers["Content-Type"] = "application/json"
    return CurlCall(
        method, path, [p.split("=", 1)[0] for p in raw_query.split("&") if p], headers, body, line
    )


def doc_calls() -> list[CurlCall]:
    calls = []
    for block in SHELL_FENCE.findall(DOC.read_text(encoding="utf-8")):
        lines = logical_lines(block)
        variables = shell_variables(lines)
        for line in lines:
            if line.startswith("#") or line.startswith("qb_signed()"):
                continue
            for start in re.finditer(r"(?:^|[\s(])(curl|qb_curl|qb_problem|qb_signed)\s", line):
                tokens = tokens_from(line[start.start(1) :])
                if tokens[0] in ("qb_curl", "qb_problem"):  # curl, with the expected problem code first
                    tokens = ["curl", *tokens[1 if tokens[0] == "qb_curl" else 2 :]]
                if tokens[0] == "curl" and any("QB_KEY_ID" in t for t in tokens):
                    continue  # the body of qb_signed itself
                if tokens[0] == "curl" and not any(t.startswith(("$QB", "http")) for t in tokens):
                    continue
                parse = parse_curl if tokens[0] == "curl" else parse_qb_signed
                calls.append(parse(tokens, variables, line))
    return calls


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The generated document (building it needs no database: the app is not started)."""
    var = tmp_path_factory.mktemp("openapi")
    return create_app(make_settings(f"sqlite:///{var / 'unused.db'}", var)).openapi()


def match_operation(doc: dict[str, Any], path: str, method: str) -> tuple[str, dict[str, Any]] | None:
    """The operation a documented path names: `{param}` segments match anything, others exactly; the
    template with the most literal matches wins (`/v1/payments/pending` before `/v1/payments/{id}`)."""
    wanted = path.strip("/").split("/")
    candidates = []
    for template, operations in doc["paths"].items():
        parts = template.strip("/").split("/")
        if len(parts) != len(wanted) or method.lower() not in operations:
            continue
        pairs = list(zip(parts, wanted, strict=True))
        if all(p == w or (p.startswith("{") and p.endswith("}")) for p, w in pairs):
            candidates.append((sum(p == w for p, w in pairs), template, operations[method.lower()]))
    if not candidates:
        return None
    _, template, operation = max(candidates, key=lambda c: c[0])
    return template, operation


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            options = [resolve(doc, s) for s in schema[combined] if s.get("type") != "null"]
            if len(options) == 1:
                return options[0]
    return schema


def check_fields(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    schema = resolve(doc, schema)
    if isinstance(value, dict) and "properties" in schema:
        unknown = set(value) - set(schema["properties"])
        assert not unknown, f"{where}: fields {sorted(unknown)} are not in the schema"
        missing = set(schema.get("required", ())) - set(value)
        assert not missing, f"{where}: required fields {sorted(missing)} are missing"
        for name, item in value.items():
            check_fields(doc, schema["properties"][name], item, f"{where}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            check_fields(doc, schema["items"], item, where)


def test_the_doc_has_curl_examples_for_every_capability() -> None:
    calls = doc_calls()
    assert len(calls) > 40
    covered = {call.path.split("/")[2] for call in calls if call.path.startswith("/v1/")}
    assert covered >= {"transfers", "merchants", "payments", "payment-intents", "webhook-endpoints", "events"}


def test_every_curl_command_matches_the_openapi_document(openapi: dict[str, Any]) -> None:
    for call in doc_calls():
        found = match_operation(openapi, call.path, call.method)
        assert found is not None, f"{call.method} {call.path} is not in /openapi.json: {call.line}"
        template, operation = found
        where = f"{call.method} {template} in: {call.line[:120]}"
        parameters = {(p["in"], p["name"].lower()) for p in operation.get("parameters", [])}
        for name in call.headers:
            assert name.lower() in KNOWN_HEADERS, f"{where}: unknown header {name}"
            if name.lower() in ("idempotency-key", "step-up"):
                assert ("header", name.lower()) in parameters, f"{where}: the operation takes no {name}"
        for name in call.query:
            assert ("query", name.lower()) in parameters, f"{where}: no query parameter {name!r}"
        if call.body is None:
            continue
        assert "requestBody" in operation, f"{where}: the operation takes no body"
        content = operation["requestBody"]["content"]
        assert "application/json" in content, f"{where}: not a JSON body"
        sample = json.loads(VARIABLE.sub("x", call.body))
        check_fields(openapi, content["application/json"]["schema"], sample, where)


def test_every_operation_is_in_the_reference(openapi: dict[str, Any]) -> None:
    doc = DOC.read_text(encoding="utf-8")
    for template, operations in openapi["paths"].items():
        for method in operations:
            assert f"`{method.upper()} {template}`" in doc, (
                f"{method.upper()} {template} is not in docs/api.md"
            )


REFERENCE_ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/\S*)` \| ([^|]*) \| ([^|]*) \|", re.M)


def test_the_reference_says_which_operations_take_step_up_and_idempotency_keys(
    openapi: dict[str, Any],
) -> None:
    rows = REFERENCE_ROW.findall(DOC.read_text(encoding="utf-8"))
    assert len(rows) == sum(len(operations) for operations in openapi["paths"].values())
    for method, path, auth, idem in rows:
        headers = {
            p["name"]
            for p in openapi["paths"][path][method.lower()].get("parameters", [])
            if p["in"] == "header"
        }
        assert ("step-up" in auth) == ("Step-Up" in headers), f"{method} {path}: step-up in the auth column"
        assert (idem.strip() == "✓") == ("Idempotency-Key" in headers), f"{method} {path}: the idem. column"


def test_the_event_types_table_is_the_catalogue() -> None:
    doc = DOC.read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", doc, re.M)
    assert listed == list(EVENT_TYPES)


# --- every walkthrough, twice in a row, against one real server ------------------------------------------

SCRIPTS = ("p2p", "merchant_qr", "payment_code", "checkout", "webhooks")
README = ROOT / "README.md"
REQUEST = re.compile(r"(?:^|[\s($])(?:curl|qb_curl|qb_problem|qb_signed) ")
BARE_CURL = re.compile(r"(?:^|[\s($|])curl ")
OUTPUT_FILE = re.compile(r"(?:^|\s)(?:-o|--output)\s+(\S+)")
PROBLEM = "qianbao.dev/problems/"  # in the `type` of every problem+json answer


def without_comments(shell: str) -> str:
    return "\n".join(line for line in shell.splitlines() if not line.lstrip().startswith("#"))


def makes_requests(block: str) -> bool:
    return REQUEST.search(without_comments(block)) is not None


def doc_snippets() -> list[str]:
    """The shell blocks of docs/api.md that make requests, besides the walkthrough scripts: they use the
    walkthroughs' variables and run after them, in the order of the page."""
    scripts = {path.read_text(encoding="utf-8") for path in example_files() if path.suffix == ".sh"}
    blocks = SHELL_FENCE.findall(DOC.read_text(encoding="utf-8"))
    return [block for block in blocks if block not in scripts and makes_requests(block)]


def readme_tour() -> list[str]:
    """The shell blocks of the README's short tour that make requests (on the demo users)."""
    tour = README.read_text(encoding="utf-8").split("\n## A short tour\n", 1)[1].split("\n## ", 1)[0]
    return [block for block in SHELL_FENCE.findall(tour) if makes_requests(block)]


def test_every_walkthrough_and_snippet_is_run() -> None:
    scripts = {path.stem for path in example_files() if path.suffix == ".sh"} - {"qb"}
    assert scripts == set(SCRIPTS), (
        "a curl walkthrough is missing from SCRIPTS (or SCRIPTS names one too many)"
    )
    runner = (EXAMPLES / "run.py").read_text(encoding="utf-8")
    for path in example_files():
        if path.suffix == ".py" and "\ndef walkthrough(" in path.read_text(encoding="utf-8"):
            assert f"{path.stem}.walkthrough(" in runner, f"docs/examples/run.py does not run {path.name}"
    assert len(doc_snippets()) >= 6 and len(readme_tour()) == 2


def test_every_request_stops_at_an_error_and_downloads_stay_out_of_the_checkout() -> None:
    """Plain curl shows an error answer as a body and goes on; the helpers of qb.sh stop the script."""
    runnable = {
        path.name: path.read_text(encoding="utf-8") for path in example_files() if path.suffix == ".sh"
    }
    runnable |= {f"api.md snippet {i}": block for i, block in enumerate(doc_snippets(), 1)}
    runnable |= {f"README tour block {i}": block for i, block in enumerate(readme_tour(), 1)}
    for name, text in runnable.items():
        text = without_comments(text)
        if name != "qb.sh":
            assert not BARE_CURL.search(text), (
                f"{name} calls curl itself: use qb_curl, qb_problem or qb_signed"
            )
        for target in OUTPUT_FILE.findall(text.replace("\\\n", " ")):
            assert target.startswith('"$QB_TMP/'), f"{name} writes {target}: write into $QB_TMP instead"
    for name in SCRIPTS:
        assert runnable[f"{name}.sh"].startswith(f"# Walkthrough {SCRIPTS.index(name) + 1} with curl")
        assert "\nset -euo pipefail\nsource docs/examples/qb.sh\n" in runnable[f"{name}.sh"]


def problem(code: str, status: int, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"type": f"https://{PROBLEM}{code}", "status": status, "code": code, **extra}


def canned_answer(path: str, call: int) -> tuple[int, dict[str, Any]]:
    """What the stand-in server answers the helpers' test: `/busy` is rate limited once, then fine."""
    if path == "/declined":
        return problem("insufficient_funds", 422)
    if path == "/busy-signed" or (path == "/busy" and call == 1):
        return problem("rate_limited", 429, retry_after=1)
    return 200, {"ok": True}


@pytest.fixture
def canned_server() -> Iterator[tuple[str, Counter[str]]]:
    """A stand-in for qianbao on 127.0.0.1 that answers `canned_answer`, counting the calls per path."""
    calls: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            calls[self.path] += 1
            status, body = canned_answer(self.path, calls[self.path])
            data = json.dumps(body).encode()
            self.send_response(status)
            kind = "application/json" if status < 400 else "application/problem+json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", calls
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_shell_helpers_stop_at_an_unexpected_answer(
    canned_server: tuple[str, Counter[str]], tmp_path: Path
) -> None:
    tools = {name: shutil.which(name) for name in ("bash", "curl", "jq", "openssl")}
    if not all(tools.values()):
        pytest.skip(f"the curl walkthroughs need {', '.join(n for n, p in tools.items() if not p)}")
    base, calls = canned_server
    env = {**os.environ, "QB": base, "TMPDIR": str(tmp_path)}

    def script(lines: str) -> subprocess.CompletedProcess[str]:
        command = [str(tools["bash"]), "-c", f"set -euo pipefail\nsource docs/examples/qb.sh\n{lines}"]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    ok = script('qb_curl "$QB/ok"')
    assert (ok.returncode, ok.stdout) == (0, '{"ok": true}\n')
    # An error answer ends the script, with the status and the problem on stderr; jq never sees it.
    declined = script('PAID=$(qb_curl "$QB/declined" | jq -r .ok)\necho "paid: $PAID"')
    assert declined.returncode == 22 and declined.stdout == ""
    assert "answered 422" in declined.stderr and '"code": "insufficient_funds"' in declined.stderr
    # qb_problem: the expected problem is printed; success or another problem ends the script.
    shown = script('qb_problem insufficient_funds "$QB/declined" | jq -r .code')
    assert (shown.returncode, shown.stdout) == (0, "insufficient_funds\n")
    assert script('qb_problem step_up_required "$QB/ok"').returncode == 22
    assert script('qb_problem step_up_required "$QB/declined"').returncode == 22
    # A 429 is sent again after its Retry-After; a signed request is not (its nonce is spent).
    busy = script('qb_curl "$QB/busy"')
    assert busy.returncode == 0 and calls["/busy"] == 2 and "trying again in 1 s" in busy.stderr
    signed = script("QB_KEY_ID=key_x QB_KEY_SECRET=qbk_x\nqb_signed GET /busy-signed")
    assert signed.returncode == 22 and calls["/busy-signed"] == 1
    # $QB_TMP is the script's own, and goes with it.
    assert list(tmp_path.iterdir()) == []
    made = script('echo "$QB_TMP"')
    assert made.stdout.startswith(str(tmp_path)) and list(tmp_path.iterdir()) == []


def last_json(output: str) -> Any:
    """The last JSON value a script printed."""
    decoder, index, found = json.JSONDecoder(), 0, None
    while index < len(output):
        if output[index] in "{[":
            try:
                found, index = decoder.raw_decode(output, index)
                continue
            except json.JSONDecodeError:
                pass
        index += 1
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(fresh_database_url: str, tmp_path: Path) -> Iterator[str]:
    """`qianbao serve` on a free port, on this test's database, as docs/api.md starts it for the
    walkthroughs (demo users seeded, webhooks to 127.0.0.1 allowed, the event dispatcher inline)."""
    port = _free_port()
    env = {
        **os.environ,
        "QIANBAO_DATABASE_URL": fresh_database_url,
        "QIANBAO_VAR_DIR": str(tmp_path / "var"),
        "QIANBAO_SEED_DEMO_DATA": "true",
        # Walkthrough 5 registers a receiver on http://127.0.0.1 (a developer's own machine).
        "QIANBAO_WEBHOOKS_ALLOW_LOOPBACK": "true",
        "QIANBAO_ARGON2_TIME_COST": "1",
        "QIANBAO_ARGON2_MEMORY_KIB": "8",
        "QIANBAO_ARGON2_PARALLELISM": "1",
        "QIANBAO_LOG_LEVEL": "warning",
    }
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "qianbao.cli", "serve", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not come up:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.3)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def working_tree() -> set[str]:
    """What `git status` shows of the checkout (untracked and changed files, not the ignored ones); without
    git, every file outside the usual caches."""
    if shutil.which("git") and (ROOT / ".git").exists():
        status = ["git", "status", "--porcelain", "--untracked-files=all"]
        return set(
            subprocess.run(status, cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
        )
    skipped = {
        ".git",
        ".venv",
        "var",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
    }
    return {
        str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if skipped.isdisjoint(p.relative_to(ROOT).parts)
    }


def curl_run_script() -> str:
    """The curl walkthroughs in one bash, as docs/api.md runs them, then the doc's snippets (with their
    variables); `=== name` lines split the output."""
    lines = [f'source docs/examples/{name}.sh\necho "=== {name}"' for name in SCRIPTS]
    lines.append("[[ $(head -c 4 \"$QB_TMP/counter-qr.png\") == $'\\x89PNG' ]]  # the QR image, downloaded")
    for index, snippet in enumerate(doc_snippets(), 1):
        lines.append(f'{snippet}echo "=== snippet {index}"')
    lines.append('head -n 1 "$QB_TMP/payments-out.csv" | grep -q ,  # the CSV export, downloaded')
    return "\n".join(lines) + "\n"


def sections(output: str) -> dict[str, str]:
    """The output of each part of a run, by the `=== name` line that ends it."""
    found, rest = {}, output
    for marker in re.findall(r"^=== (.+)$", output, re.M):
        found[marker], _, rest = rest.partition(f"=== {marker}\n")
    return found


@dataclass
class Run:
    """One walkthrough run in a subprocess, its output in files."""

    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text(encoding="utf-8")

    def finish(self) -> str:
        """Its standard output, once it ended well: exit status 0, and no problem shown."""
        self.process.wait(timeout=240)
        out, err = self.output(), self.stderr.read_text(encoding="utf-8")
        assert self.process.returncode == 0, f"{self.name} failed:\n{out}\n{err}"
        assert PROBLEM not in out + err, f"{self.name} showed a problem:\n{out}\n{err}"
        return out


def test_every_walkthrough_runs_twice_in_a_row_against_one_server(server: str, tmp_path: Path) -> None:
    """The curl walkthroughs with the snippets of docs/api.md, the README's tour and the Python
    walkthroughs, each run twice on one server, from the checkout: every run exits 0, shows no problem,
    makes objects of its own, leaves the checkout as it was and its temporary directory removed."""
    tools = {name: shutil.which(name) for name in ("bash", "curl", "jq", "openssl")}
    if not all(tools.values()):
        pytest.skip(f"the curl walkthroughs need {', '.join(n for n, p in tools.items() if not p)}")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "QB": server, "TMPDIR": str(temporary), "PYTHONDONTWRITEBYTECODE": "1"}
    commands = {
        "curl": [tools["bash"], "-c", "set -euo pipefail\n" + curl_run_script()],
        "tour": [tools["bash"], "-c", "set -euo pipefail\n" + "".join(readme_tour())],
        "python": [sys.executable, "-m", "docs.examples.run"],
    }

    started: list[Run] = []

    def start(kind: str, number: int) -> Run:
        out, err = tmp_path / f"{kind}-{number}.out", tmp_path / f"{kind}-{number}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                commands[kind], cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
            )
        started.append(Run(f"run {number} of the {kind} walkthroughs", process, out, err))
        return started[-1]

    before = working_tree()
    try:
        # The second curl run starts once the first one's walkthroughs made their users, keys and
        # payments: then both wait at the same time in the step-up-by-SMS snippet (a number gets one code
        # a minute, and the snippet asks for one for a user who signed up seconds before).
        first_curl = start("curl", 1)
        deadline = time.monotonic() + 120
        while "=== webhooks\n" not in first_curl.output():
            if first_curl.process.poll() is not None:
                first_curl.finish()  # it ended before its walkthroughs did: say why
            assert time.monotonic() < deadline, "the first curl run took two minutes for its walkthroughs"
            time.sleep(0.2)
        second_curl = start("curl", 2)
        runs = [{kind: start(kind, number).finish() for kind in ("tour", "python")} for number in (1, 2)]
        runs[0]["curl"], runs[1]["curl"] = first_curl.finish(), second_curl.finish()
    finally:
        for run in started:  # a run that hangs or outlived a failure goes, with whatever it started
            if run.process.poll() is None:
                os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()
    assert working_tree() == before, "a walkthrough wrote into the checkout"
    assert list(temporary.iterdir()) == [], "a walkthrough left its temporary files behind"

    for outputs in runs:
        curl = {name: last_json(text) for name, text in sections(outputs["curl"]).items()}
        assert curl["p2p"]["to"] == "*四" and curl["p2p"]["balance_after"] == 248_000
        refund = curl["merchant_qr"]
        assert refund["status"] == "succeeded" and (refund["amount"], refund["fee_refunded"]) == (3_000, 11)
        assert curl["payment_code"]["status"] == "succeeded" and curl["payment_code"]["fee"] == 570
        assert curl["checkout"]["status"] == "succeeded" and curl["checkout"]["payment"].startswith("pay_")
        assert curl["webhooks"] and all(e["type"] == "payment.succeeded" for e in curl["webhooks"])
        # The pagination snippet reads every one of Alice's payments out, five a page.
        paging = next(i for i, snippet in enumerate(doc_snippets(), 1) if "next_cursor" in snippet)
        paged = sections(outputs["curl"])[f"snippet {paging}"]
        entries = [json.loads(line) for line in paged.splitlines() if line.startswith('{"id":')]
        assert len(entries) > 5 and len({e["id"] for e in entries}) == len(entries)

        python = [json.loads(line) for line in outputs["python"].splitlines()]
        assert [p["walkthrough"] for p in python] == [
            "p2p",
            "merchant_qr",
            "payment_code",
            "checkout",
            "webhooks",
        ]
        assert python[0]["balance"] == 48_000 and python[1]["fee_refunded"] == 11 and python[2]["fee"] == 570
        assert last_json(outputs["tour"])["id"].startswith("rfd_")

    # The second run made objects of its own: nothing was a replay of the first.
    first, second = runs
    assert last_json(sections(first["curl"])["p2p"]) != last_json(sections(second["curl"])["p2p"])
    assert first["python"].splitlines()[0] != second["python"].splitlines()[0]
    assert last_json(first["tour"])["id"] != last_json(second["tour"])["id"]

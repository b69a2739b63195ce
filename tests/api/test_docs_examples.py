"""docs/api.md stays true: its Python walkthroughs (docs/examples/*.py) run against the app on both
databases, its curl walkthroughs (docs/examples/*.sh) run against a real `qianbao serve`, the doc holds
every example file verbatim, and every curl command in it names an operation of /openapi.json with
headers, query parameters and body fields that operation declares."""

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
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
    report = dispatch_once(ctx, transport=httpx.MockTransport(receiver))
    assert report.delivered == 1
    [event] = acted_on
    assert event["type"] == "payment.succeeded" and event["data"]["payment_id"] == paid["id"]
    assert raw[0].url == url and raw[0].headers["Qianbao-Event-Id"] == event["id"]

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
    dispatch_once(ctx, transport=httpx.MockTransport(receiver))
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
        elif not arg.startswith("-"):
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
            for start in re.finditer(r"(?:^|[\s(])(curl|qb_signed)\s", line):
                tokens = tokens_from(line[start.start(1) :])
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


# --- the curl walkthroughs against a real server --------------------------------------------------------

SCRIPTS = ("p2p", "merchant_qr", "payment_code", "checkout", "webhooks")
CURL_SHIM = """#!/bin/sh
exec {curl} --write-out '%{{stderr}}QB-STATUS %{{http_code}} %{{method}} %{{url_effective}}\\n' "$@"
"""


def last_json(output: str) -> Any:
    """The last JSON value a script printed (curl prints bodies without newlines between them)."""
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
    """`qianbao serve` on a free port, on this test's database (with its event dispatcher inline)."""
    port = _free_port()
    env = {
        **os.environ,
        "QIANBAO_DATABASE_URL": fresh_database_url,
        "QIANBAO_VAR_DIR": str(tmp_path / "var"),
        "QIANBAO_SEED_DEMO_DATA": "false",
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


def test_curl_walkthroughs_run_against_a_server(server: str, tmp_path: Path) -> None:
    tools = {name: shutil.which(name) for name in ("bash", "curl", "jq", "openssl")}
    if not all(tools.values()):
        pytest.skip(f"the curl walkthroughs need {', '.join(n for n, p in tools.items() if not p)}")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "curl").write_text(CURL_SHIM.format(curl=tools["curl"]))
    (shim / "curl").chmod(0o755)
    work = tmp_path / "work"
    (work / "docs").mkdir(parents=True)
    shutil.copytree(EXAMPLES, work / "docs" / "examples")
    script = "\n".join(f'source docs/examples/{name}.sh\necho "=== {name}"' for name in SCRIPTS)
    env = {
        **os.environ,
        "PATH": f"{shim}:{os.environ['PATH']}",
        "QB": server,
        "ALICE_PHONE": new_phone(),
        "BOB_PHONE": new_phone(),
    }
    done = subprocess.run(
        [tools["bash"], "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=240
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    summaries = {}
    rest = done.stdout
    for name in SCRIPTS:
        assert f"=== {name}\n" in rest, done.stdout
        output, _, rest = rest.partition(f"=== {name}\n")
        summaries[name] = last_json(output)
    assert summaries["p2p"]["to"] == "*四" and summaries["p2p"]["balance_after"] == 248_000
    assert summaries["p2p"]["transfer"].startswith("trf_")
    refund = summaries["merchant_qr"]
    assert refund["refund"].startswith("rfd_") and refund["status"] == "succeeded"
    assert (refund["amount"], refund["fee_refunded"]) == (3_000, 11)
    assert summaries["payment_code"]["status"] == "succeeded" and summaries["payment_code"]["fee"] == 570
    assert summaries["checkout"]["status"] == "succeeded" and summaries["checkout"]["payment"].startswith(
        "pay_"
    )
    # The feed as polled (the dispatcher adds events within about a second): only payment.succeeded, and
    # at most the five payments of walkthroughs 2 to 4.
    assert isinstance(summaries["webhooks"], list) and len(summaries["webhooks"]) <= 5
    assert all(
        e["type"] == "payment.succeeded" and e["payment"].startswith("pay_") for e in summaries["webhooks"]
    )
    assert (work / "counter-qr.png").read_bytes().startswith(b"\x89PNG")

    # Every request succeeded, except the first try of those that asked for step-up.
    statuses = [line.split(" ", 3)[1:] for line in done.stderr.splitlines() if line.startswith("QB-STATUS ")]
    for index, (status, method, url) in enumerate(statuses):
        if status == "401":
            retry = next(s for s, m, u in statuses[index + 1 :] if (m, u) == (method, url))
            assert retry.startswith("2"), f"{method} {url} was refused, then {retry}"
        else:
            assert status.startswith("2"), f"{method} {url} answered {status}:\n{done.stdout}"
    assert sum(1 for status, _, _ in statuses if status == "401") == 5

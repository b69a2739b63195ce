"""Merchants, static and dynamic QR payments, fees, and refunds through the API."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.ledger.verify import verify_ledger
from qianbao.payments import emvco
from qianbao.payments.merchant_tables import merchant_qr_codes
from qianbao.payments.qr_images import decode_qr_image
from tests.support.api import SignedUp, sign_up, with_step_up
from tests.support.operators import create_operator


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _cny(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


def fund(client: TestClient, user: SignedUp, amount: int, wallet_id: str | None = None) -> None:
    r = client.post(
        "/v1/sandbox/fund",
        json={"wallet_id": wallet_id or user.wallet_id, "amount": _cny(amount)},
        headers=user.auth,
    )
    assert r.status_code == 201, r.text


def open_merchant(client: TestClient, owner: SignedUp, **overrides: Any) -> dict[str, Any]:
    body = {"name": "老王面馆", "mcc": "5812", "city": "上海", **overrides}
    r = client.post("/v1/merchants", json=body, headers={**owner.auth, **_key()})
    assert r.status_code == 201, r.text
    return dict(r.json())


def static_payload(client: TestClient, owner: SignedUp, merchant_id: str) -> str:
    r = client.get(f"/v1/merchants/{merchant_id}/qr", headers=owner.auth)
    assert r.status_code == 200, r.text
    return str(r.json()["payload"])


def pay(client: TestClient, payer: SignedUp, qr: str, amount: int | None = None, **extra: Any) -> Any:
    headers = {**payer.auth, **extra.pop("headers", _key())}
    body: dict[str, Any] = {"from_wallet_id": extra.pop("wallet_id", payer.wallet_id), "qr": qr, **extra}
    if amount is not None:
        body["amount"] = _cny(amount)
    return client.post("/v1/payments", json=body, headers=headers)


def balance(client: TestClient, account_id: str) -> int:
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    account = LedgerReader(ctx.db).get_account(account_id)
    assert account is not None
    return int(account.balance)


def ledger_balances(client: TestClient) -> None:
    report = verify_ledger(client.app.state.container.db)  # type: ignore[attr-defined]
    assert report.ok, report


@pytest.fixture
def shop(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    return open_merchant(client, bob)


# -- merchants -------------------------------------------------------------------------------------


def test_a_merchant_has_its_own_wallet_and_the_default_rate(client: TestClient, bob: SignedUp) -> None:
    m = open_merchant(client, bob)
    assert m["id"].startswith("mch_") and m["wallet"]["id"].startswith("mwl_")
    assert (m["name"], m["mcc"], m["city"], m["status"]) == ("老王面馆", "5812", "上海", "active")
    assert m["fee_rate_ppm"] == 3800 and m["wallet"]["balance"] == _cny(0)
    listed = client.get("/v1/merchants", headers=bob.auth).json()["data"]
    assert [x["id"] for x in listed] == [m["id"]]
    assert client.get(f"/v1/merchants/{m['id']}", headers=bob.auth).json() == m


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mcc", "58a2"),
        ("mcc", "581"),
        ("mcc", "0000"),
        ("name", "x" * 26),
        ("name", "  "),
        ("city", "c" * 16),
        ("currency", "USD"),
    ],
)
def test_bad_merchant_profiles_are_refused(client: TestClient, bob: SignedUp, field: str, value: str) -> None:
    body = {"name": "Shop", "mcc": "5411", "city": "Beijing", field: value}
    r = client.post("/v1/merchants", json=body, headers=bob.auth)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert client.get("/v1/merchants", headers=bob.auth).json()["data"] == []


def test_someone_elses_merchant_does_not_exist(
    client: TestClient, alice: SignedUp, shop: dict[str, Any]
) -> None:
    for path in ("", "/qr", "/payments", "/qr-codes/qrc_x"):
        r = client.get(f"/v1/merchants/{shop['id']}{path}", headers=alice.auth)
        assert r.status_code == 404 and r.json()["code"] == "not_found", path
    r = client.post(f"/v1/merchants/{shop['id']}/qr-codes", json={"amount": _cny(100)}, headers=alice.auth)
    assert r.status_code == 404


# -- static codes ----------------------------------------------------------------------------------


def test_static_code_round_trips_through_a_png_and_zxing(
    client: TestClient, bob: SignedUp, shop: dict[str, Any]
) -> None:
    payload = static_payload(client, bob, shop["id"])
    png = client.get(f"/v1/merchants/{shop['id']}/qr?format=png", headers=bob.auth)
    assert png.headers["content-type"] == "image/png"
    assert decode_qr_image(png.content) == payload
    parsed = emvco.parse(payload)
    assert parsed.crc_ok and parsed.point_of_initiation == "static" and parsed.amount_minor is None
    assert (parsed.merchant_name, parsed.merchant_city, parsed.mcc) == ("老王面馆", "上海", "5812")
    assert parsed.qianbao_merchant_id == shop["id"]
    svg = client.get(f"/v1/merchants/{shop['id']}/qr?format=svg", headers=bob.auth)
    assert svg.headers["content-type"].startswith("image/svg+xml") and svg.text.lstrip().startswith("<")


def test_paying_a_static_code_moves_the_amount_and_the_fee(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 50_000)
    fees_before = balance(client, system_account_id(FEES, "CNY"))
    r = pay(client, alice, static_payload(client, bob, shop["id"]), 10_000, memo="牛肉面两碗")
    assert r.status_code == 201, r.text
    paid = r.json()
    assert paid["status"] == "succeeded" and paid["method"] == "qr_static"
    assert paid["amount"] == _cny(10_000) and paid["merchant"]["name"] == "老王面馆"
    assert "fee" not in paid and paid["payer_wallet_id"] == alice.wallet_id  # the fee is the merchant's
    assert balance(client, alice.wallet_id) == 40_000
    assert balance(client, shop["wallet"]["id"]) == 10_000 - 38  # 0.38 %
    assert balance(client, system_account_id(FEES, "CNY")) - fees_before == 38
    seen_by_merchant = client.get(f"/v1/payments/{paid['id']}", headers=bob.auth).json()
    assert seen_by_merchant["fee"] == _cny(38) and seen_by_merchant["memo"] == "牛肉面两碗"
    listed = client.get(f"/v1/merchants/{shop['id']}/payments", headers=bob.auth).json()
    assert [p["id"] for p in listed["data"]] == [paid["id"]]
    ledger_balances(client)


def test_a_static_code_needs_an_amount(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 1_000)
    r = pay(client, alice, static_payload(client, bob, shop["id"]))
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert balance(client, alice.wallet_id) == 1_000


def test_the_same_idempotency_key_pays_once(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 5_000)
    qr = static_payload(client, bob, shop["id"])
    key = _key()
    first = pay(client, alice, qr, 1_000, headers=key)
    again = pay(client, alice, qr, 1_000, headers=key)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert balance(client, alice.wallet_id) == 4_000
    other = pay(client, alice, qr, 1_001, headers=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda p: p[:-4] + ("0000" if not p.endswith("0000") else "1111"), "bad_crc"),
        (lambda _p: "hello", None),
        (lambda _p: "", None),
    ],
)
def test_unreadable_codes_are_qr_code_invalid(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], mangle: Any, reason: str | None
) -> None:
    fund(client, alice, 1_000)
    r = pay(client, alice, mangle(static_payload(client, bob, shop["id"])), 100)
    assert r.status_code == 422 and r.json()["code"] == "qr_code_invalid", r.text
    if reason:
        assert r.json()["reason"] == reason
    assert balance(client, alice.wallet_id) == 1_000


def test_another_schemes_code_is_not_ours(client: TestClient, alice: SignedUp) -> None:
    fund(client, alice, 1_000)
    account = "0014BR.GOV.BCB.PIX0136123e4567-e12b-12d1-a456-426655440000"
    rest = "52040000530398654041.005802BR5913Fulano de Tal6008BRASILIA6304"
    body = f"000201010211{26:02d}{len(account):02d}{account}{rest}"
    payload = body + emvco.crc16_ccitt_false(body)
    r = pay(client, alice, payload, 100)
    assert (
        r.status_code == 422 and r.json()["code"] == "qr_code_invalid" and r.json()["reason"] == "not_qianbao"
    )


def test_a_merchant_that_does_not_exist(client: TestClient, alice: SignedUp) -> None:
    fund(client, alice, 1_000)
    payload = emvco.build_merchant_qr(
        merchant_id="mch_nope", name="Ghost", city="Nowhere", mcc="5411", dynamic=False
    )
    r = pay(client, alice, payload, 100)
    assert r.status_code == 404 and r.json()["code"] == "merchant_not_found"


def test_insufficient_funds_is_bound_to_the_key_and_shown_only_to_the_payer(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 500)
    key = _key()
    qr = static_payload(client, bob, shop["id"])
    r = pay(client, alice, qr, 600, headers=key)
    assert r.status_code == 422 and r.json()["code"] == "insufficient_funds"
    fund(client, alice, 500)
    replay = pay(client, alice, qr, 600, headers=key)
    assert replay.status_code == 422 and replay.json() == r.json()
    assert balance(client, alice.wallet_id) == 1_000
    assert client.get(f"/v1/merchants/{shop['id']}/payments", headers=bob.auth).json()["data"] == []


def test_large_payments_ask_for_step_up(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    client.app.state.container.identity.settings.step_up_amount = 100_000  # type: ignore[attr-defined]
    fund(client, alice, 300_000)
    qr = static_payload(client, bob, shop["id"])
    key = _key()
    r = pay(client, alice, qr, 150_000, headers=key)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    assert balance(client, alice.wallet_id) == 300_000
    body = {"from_wallet_id": alice.wallet_id, "qr": qr, "amount": _cny(150_000)}
    done = with_step_up(client, alice, "POST", "/v1/payments", json=body, headers=key)
    assert done.status_code == 201, done.text
    assert balance(client, alice.wallet_id) == 150_000


# -- dynamic codes ---------------------------------------------------------------------------------


def _dynamic(
    client: TestClient, owner: SignedUp, merchant_id: str, amount: int, **extra: Any
) -> dict[str, Any]:
    r = client.post(
        f"/v1/merchants/{merchant_id}/qr-codes",
        json={"amount": _cny(amount), **extra},
        headers={**owner.auth, **_key()},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_dynamic_code_is_paid_once(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    code = _dynamic(client, bob, shop["id"], 1_234, order_id="A-1001")
    parsed = emvco.parse(code["payload"])
    assert parsed.point_of_initiation == "dynamic" and parsed.amount_minor == 1_234
    assert code["status"] == "active" and code["svg"].lstrip().startswith("<")
    r = pay(client, alice, code["payload"])
    assert r.status_code == 201, r.text
    assert r.json()["method"] == "qr_dynamic" and r.json()["order_id"] == "A-1001"
    assert r.json()["amount"] == _cny(1_234)
    again = pay(client, alice, code["payload"])
    assert again.status_code == 409 and again.json()["code"] == "qr_code_used"
    seen = client.get(f"/v1/merchants/{shop['id']}/qr-codes/{code['id']}", headers=bob.auth).json()
    assert seen["status"] == "paid" and seen["payment_id"] == r.json()["id"]
    cancel = client.post(f"/v1/merchants/{shop['id']}/qr-codes/{code['id']}/cancel", headers=bob.auth)
    assert cancel.status_code == 409 and cancel.json()["code"] == "qr_code_used"
    assert balance(client, alice.wallet_id) == 10_000 - 1_234


def test_a_dynamic_codes_amount_cannot_be_changed(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    code = _dynamic(client, bob, shop["id"], 1_000)
    r = pay(client, alice, code["payload"], 1)
    assert r.status_code == 422 and r.json()["code"] == "amount_mismatch"
    assert pay(client, alice, code["payload"], 1_000).status_code == 201


def test_expired_and_canceled_codes_cannot_be_paid(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    expired = _dynamic(client, bob, shop["id"], 500, expires_in=30)
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    with ctx.db.write() as conn:
        conn.execute(
            update(merchant_qr_codes)
            .where(merchant_qr_codes.c.id == expired["id"])
            .values(expires_at=ctx.now() - 1)
        )
    r = pay(client, alice, expired["payload"])
    assert r.status_code == 422 and r.json()["code"] == "qr_code_expired"
    shown = client.get(f"/v1/merchants/{shop['id']}/qr-codes/{expired['id']}", headers=bob.auth).json()
    assert shown["status"] == "expired"
    canceled = _dynamic(client, bob, shop["id"], 500)
    c = client.post(f"/v1/merchants/{shop['id']}/qr-codes/{canceled['id']}/cancel", headers=bob.auth)
    assert c.status_code == 200 and c.json()["status"] == "canceled"
    r = pay(client, alice, canceled["payload"])
    assert r.status_code == 422 and r.json()["code"] == "qr_code_expired"
    assert balance(client, alice.wallet_id) == 10_000


@pytest.mark.parametrize(
    "body",
    [
        {"amount": {"amount": 0, "currency": "CNY"}},
        {"amount": {"amount": 100, "currency": "XXX"}},
        {"amount": {"amount": 100, "currency": "CNY"}, "expires_in": 5},
        {"amount": {"amount": 100, "currency": "CNY"}, "order_id": "has space"},
        {"amount": {"amount": 100, "currency": "CNY"}, "order_id": "x" * 65},
    ],
)
def test_bad_dynamic_codes_are_refused(
    client: TestClient, bob: SignedUp, shop: dict[str, Any], body: dict[str, Any]
) -> None:
    r = client.post(f"/v1/merchants/{shop['id']}/qr-codes", json=body, headers=bob.auth)
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text


# -- refunds ---------------------------------------------------------------------------------------


def _paid(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], amount: int
) -> dict[str, Any]:
    fund(client, alice, amount)
    r = pay(client, alice, static_payload(client, bob, shop["id"]), amount)
    assert r.status_code == 201, r.text
    return dict(r.json())


def refund(
    client: TestClient, owner: SignedUp, payment_id: str, amount: int | None = None, **extra: Any
) -> Any:
    body: dict[str, Any] = {**extra}
    if amount is not None:
        body["amount"] = _cny(amount)
    return client.post(f"/v1/payments/{payment_id}/refunds", json=body, headers={**owner.auth, **_key()})


def test_partial_refunds_return_the_fee_pro_rata_and_exactly(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    paid = _paid(client, alice, bob, shop, 10_000)  # fee 38
    first = refund(client, bob, paid["id"], 3_000, reason="少了一碗")
    assert first.status_code == 201, first.text
    assert first.json()["fee_refunded"] == _cny(11)  # 38 × 0.3 = 11.4 → 11
    rest = refund(client, bob, paid["id"])  # everything left
    assert rest.status_code == 201 and rest.json()["amount"] == _cny(7_000)
    assert rest.json()["fee_refunded"] == _cny(27)  # 38 in all: no fen lost to rounding
    assert balance(client, alice.wallet_id) == 10_000
    assert balance(client, shop["wallet"]["id"]) == 0
    shown = client.get(f"/v1/payments/{paid['id']}", headers=alice.auth).json()
    assert shown["refund_status"] == "refunded" and shown["refunded"] == _cny(10_000)
    listed = client.get(f"/v1/payments/{paid['id']}/refunds", headers=alice.auth).json()["data"]
    assert [r["amount"]["amount"] for r in listed] == [3_000, 7_000]
    assert "fee_refunded" not in listed[0] and listed[0]["to_wallet_id"] == alice.wallet_id
    ledger_balances(client)


def test_over_refunds_are_refused(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    paid = _paid(client, alice, bob, shop, 1_000)
    assert refund(client, bob, paid["id"], 600).status_code == 201
    over = refund(client, bob, paid["id"], 401)
    assert over.status_code == 422 and over.json()["code"] == "refund_exceeds_payment"
    assert over.json()["remaining"] == _cny(400)
    assert refund(client, bob, paid["id"], 400).status_code == 201
    done = refund(client, bob, paid["id"])
    assert done.status_code == 422 and done.json()["code"] == "refund_exceeds_payment"
    assert balance(client, alice.wallet_id) == 1_000


def test_only_the_merchant_refunds(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    paid = _paid(client, alice, bob, shop, 1_000)
    r = refund(client, alice, paid["id"])
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    stranger = sign_up(client, name="张三")
    assert client.get(f"/v1/payments/{paid['id']}", headers=stranger.auth).status_code == 404
    assert client.get(f"/v1/payments/{paid['id']}/refunds", headers=stranger.auth).status_code == 404


def test_a_refund_is_idempotent(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    paid = _paid(client, alice, bob, shop, 1_000)
    headers = {**bob.auth, **_key()}
    body = {"amount": _cny(100)}
    a = client.post(f"/v1/payments/{paid['id']}/refunds", json=body, headers=headers)
    b = client.post(f"/v1/payments/{paid['id']}/refunds", json=body, headers=headers)
    assert a.status_code == b.status_code == 201 and a.json() == b.json()
    assert balance(client, alice.wallet_id) == 100


def test_a_merchant_wallet_that_paid_out_cannot_refund(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    paid = _paid(client, alice, bob, shop, 1_000)
    # Drain the merchant wallet behind the API's back is impossible; a second payment's refund proves the
    # bound instead: the wallet holds 1,000 − 4 fee, less than a full refund without the fee coming back.
    client.app.state.container.identity.settings.refund_fees_pro_rata = False  # type: ignore[attr-defined]
    r = refund(client, bob, paid["id"])
    assert r.status_code == 422 and r.json()["code"] == "insufficient_funds"
    assert balance(client, alice.wallet_id) == 0
    assert refund(client, bob, paid["id"], 996).status_code == 201


# -- history ---------------------------------------------------------------------------------------


def test_payments_and_refunds_show_in_the_customers_history(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 5_000)
    paid = pay(client, alice, static_payload(client, bob, shop["id"]), 2_000, memo="午饭").json()
    rfd = refund(client, bob, paid["id"], 500, reason="少一碗").json()
    path = f"/v1/wallets/{alice.wallet_id}/transactions"
    rows = client.get(path, headers=alice.auth).json()["data"]
    back, out = rows[0], rows[1]
    assert (out["type"], out["direction"], out["amount"]) == ("merchant_payment", "debit", _cny(2_000))
    assert out["counterparty"]["kind"] == "merchant" and out["counterparty"]["name"] == "老王面馆"
    assert out["payment_id"] == paid["id"] and out["memo"] == "午饭"
    assert (back["type"], back["direction"], back["amount"]) == ("refund", "credit", _cny(500))
    assert back["refund_id"] == rfd["id"] and back["payment_id"] == paid["id"]
    assert back["balance_after"] == _cny(3_500)
    only = client.get(path, params={"type": "merchant_payment"}, headers=alice.auth).json()["data"]
    assert [t["payment_id"] for t in only] == [paid["id"]]
    found = client.get(path, params={"q": "面馆"}, headers=alice.auth).json()["data"]
    assert {t["type"] for t in found} == {"merchant_payment", "refund"}
    csv_text = client.get(f"{path}.csv", headers=alice.auth).text
    assert "老王面馆" in csv_text and "merchant_payment" in csv_text


# -- operators -------------------------------------------------------------------------------------


def test_a_suspended_merchant_takes_no_payments_until_reactivated(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 5_000)
    qr = static_payload(client, bob, shop["id"])
    support = create_operator(client, roles=("support",))
    path = f"/v1/operator/merchants/{shop['id']}"
    assert client.post(f"{path}/suspend", json={"reason": "x"}, headers=support.auth).status_code == 422
    r = client.post(
        f"{path}/suspend", json={"reason": "complaint 42: goods not delivered"}, headers=support.auth
    )
    assert r.status_code == 200 and r.json()["status"] == "suspended", r.text
    declined = pay(client, alice, qr, 1_000)
    assert declined.status_code == 423 and declined.json()["code"] == "merchant_inactive"
    till = client.post(f"/v1/merchants/{shop['id']}/qr-codes", json={"amount": _cny(100)}, headers=bob.auth)
    assert till.status_code == 423 and till.json()["code"] == "merchant_inactive"
    assert client.get(f"/v1/merchants/{shop['id']}", headers=bob.auth).json()["status"] == "suspended"
    assert balance(client, alice.wallet_id) == 5_000
    back = client.post(
        f"{path}/reactivate", json={"reason": "resolved with the customer"}, headers=support.auth
    )
    assert back.status_code == 200 and back.json()["status"] == "active"
    assert pay(client, alice, qr, 1_000).status_code == 201
    log = client.get("/v1/operator/audit-events", params={"user_id": bob.user_id}, headers=support.auth)
    changes = [
        (e["event"], e["details"]["reason"])
        for e in log.json()["data"]
        if e["event"] in ("merchant.suspended", "merchant.reactivated")
    ]
    assert changes[:2] == [
        ("merchant.reactivated", "resolved with the customer"),
        ("merchant.suspended", "complaint 42: goods not delivered"),
    ]
    assert client.post(f"{path}/suspend", json={"reason": "by a user"}, headers=alice.auth).status_code == 403

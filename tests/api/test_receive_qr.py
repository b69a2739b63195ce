"""Personal receive codes (收款码): the EMVCo payload, its SVG/PNG images, paying it with `POST /v1/transfers`
`{"to": {"qr": …}}` (amount, CRC, unknown and closed wallets, limits, idempotency) and what
`POST /v1/qr-codes/parse` says about it."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from qianbao.ledger.model import AccountStatus
from qianbao.payments import emvco
from qianbao.payments.qr_images import decode_qr_image
from qianbao.payments.receive_qr import code_signature
from tests.api.test_wallets_and_transfers import balance, container, funded, money, pay, sub_wallet
from tests.support.api import SignedUp


def receive_code(client: TestClient, user: SignedUp, wallet_id: str | None = None, **params: Any) -> Any:
    return client.get(
        f"/v1/wallets/{wallet_id or user.wallet_id}/receive-qr", params=params, headers=user.auth
    )


def payload_of(client: TestClient, user: SignedUp, wallet_id: str | None = None, **params: Any) -> str:
    response = receive_code(client, user, wallet_id, **params)
    assert response.status_code == 200, response.text
    return str(response.json()["payload"])


def with_bad_crc(payload: str) -> str:
    crc = payload[-4:]
    return payload[:-4] + ("0000" if crc != "0000" else "FFFF")


# -- the code ----------------------------------------------------------------------------------------


def test_a_receive_code_is_an_emvco_payload_naming_the_wallet(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    response = receive_code(client, bob)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["wallet_id"] == bob.wallet_id and body["amount"] is None and body["name_masked"] == "*四"
    parsed = emvco.parse(body["payload"])
    assert parsed.crc_ok and parsed.point_of_initiation == "static"
    assert parsed.qianbao_wallet_id == bob.wallet_id and parsed.qianbao_merchant_id is None
    assert parsed.template("26") == {"00": emvco.GLOBALLY_UNIQUE_ID, "01": bob.wallet_id, "02": "personal"}
    assert (parsed.merchant_name, parsed.currency, parsed.country, parsed.amount_minor) == (
        "*四",
        "CNY",
        "CN",
        None,
    )
    assert "李四" not in body["payload"] and bob.phone not in body["payload"]
    # With a fixed amount.
    fixed = receive_code(client, bob, amount=1_234).json()
    assert fixed["amount"] == money(1_234)
    assert emvco.parse(fixed["payload"]).fields["54"] == "12.34"
    # Any of one's own wallets; nobody else's.
    pocket = sub_wallet(client, bob)
    assert emvco.parse(payload_of(client, bob, pocket)).qianbao_wallet_id == pocket
    for response in (receive_code(client, alice, bob.wallet_id), receive_code(client, alice, "wal_nobody")):
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    for bad in ({"amount": 0}, {"amount": 10**15 + 1}, {"amount": "1.5"}, {"format": "gif"}):
        response = receive_code(client, bob, **bad)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", bad
    assert client.get(f"/v1/wallets/{bob.wallet_id}/receive-qr").status_code == 401


def test_the_code_comes_as_svg_and_as_a_png_that_decodes_back(client: TestClient, bob: SignedUp) -> None:
    payload = payload_of(client, bob, amount=500)

    svg = receive_code(client, bob, amount=500, format="svg")
    png = receive_code(client, bob, amount=500, format="png")

    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content and b'xmlns="http://www.w3.org/2000/svg"' in svg.content
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert decode_qr_image(png.content) == payload


def test_a_frozen_or_closed_wallet_has_no_receive_code(client: TestClient, bob: SignedUp) -> None:
    container(client).ledger.set_account_status(bob.wallet_id, AccountStatus.FROZEN)

    response = receive_code(client, bob)

    assert response.status_code == 423 and response.json()["code"] == "wallet_frozen"


# -- paying it ---------------------------------------------------------------------------------------


def test_paying_a_receive_code_is_a_transfer_to_its_wallet(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded(client, alice, 50_000)
    pocket = sub_wallet(client, bob)
    code = payload_of(client, bob, pocket)

    paid = pay(client, alice, 2_500, to={"qr": code}, memo="咖啡", key="qr-1")

    assert paid.status_code == 201, paid.text
    transfer = paid.json()
    assert (transfer["status"], transfer["to_wallet_id"], transfer["amount"]) == (
        "succeeded",
        pocket,
        money(2_500),
    )
    assert balance(client, bob, pocket) == 2_500 and balance(client, alice) == 47_500
    replay = pay(client, alice, 2_500, to={"qr": code}, memo="咖啡", key="qr-1")
    assert replay.status_code == 201 and replay.json() == transfer and balance(client, bob, pocket) == 2_500
    [received] = client.get(f"/v1/wallets/{pocket}/transactions", headers=bob.auth).json()["data"]
    assert (
        received["transfer_id"] == transfer["id"] and received["type"] == "p2p" and received["memo"] == "咖啡"
    )


def test_a_fixed_amount_must_be_paid_exactly(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, alice, 50_000)
    code = payload_of(client, bob, amount=1_234)

    wrong = pay(client, alice, 1_235, to={"qr": code})

    assert wrong.status_code == 422 and wrong.json()["code"] == "amount_mismatch"
    assert wrong.json()["expected"] == money(1_234)
    assert balance(client, alice) == 50_000
    assert pay(client, alice, 1_234, to={"qr": code}).status_code == 201
    assert balance(client, bob) == 1_234


def test_bad_codes_are_refused_and_pay_nothing(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, alice, 50_000)
    code = payload_of(client, bob)
    merchant = emvco.build_merchant_qr(
        merchant_id="mch_1", name="星巴克", city="上海", mcc="5814", dynamic=False
    )
    keys = container(client).identity.keys
    signature = code_signature(keys, wallet_id="wal_nobody", currency="CNY", amount=None)
    unknown = emvco.build_personal_qr(wallet_id="wal_nobody", name="*四", city="China", signature=signature)
    unsigned = emvco.build_personal_qr(wallet_id=bob.wallet_id, name="*四", city="China", signature=None)
    cases: list[tuple[object, int, str, str | None]] = [
        (with_bad_crc(code), 422, "qr_code_invalid", "bad_crc"),
        (code[:-10], 422, "qr_code_invalid", None),
        ("hello", 422, "qr_code_invalid", None),
        ("", 422, "qr_code_invalid", "empty"),
        (merchant, 422, "qr_code_invalid", "not_personal"),
        (unknown, 404, "recipient_not_found", None),
        (unsigned, 422, "qr_code_unsigned", None),
        (payload_of(client, alice), 422, "same_wallet", None),
    ]
    for qr, status, code_name, reason in cases:
        response = pay(client, alice, 100, to={"qr": qr})
        assert (response.status_code, response.json()["code"]) == (status, code_name), (qr, response.text)
        if reason is not None:
            assert response.json()["reason"] == reason
    for to in ({"qr": code, "wallet_id": bob.wallet_id}, {"qr": code, "phone": bob.phone}, {"qr": 12}):
        response = pay(client, alice, 100, to=to)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", to
    # A closed wallet's code is refused like an unknown wallet.
    pocket = sub_wallet(client, bob)
    pocket_code = payload_of(client, bob, pocket)
    container(client).ledger.set_account_status(pocket, AccountStatus.CLOSED)
    closed = pay(client, alice, 100, to={"qr": pocket_code})
    assert closed.status_code == 404 and closed.json()["code"] == "recipient_not_found"
    assert balance(client, alice) == 50_000 and balance(client, bob) == 0


def test_limits_apply_to_receive_code_payments(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, alice, 300_000)
    code = payload_of(client, bob)

    over = pay(client, alice, 200_001, to={"qr": code})
    new_payee = pay(client, alice, 60_000, to={"qr": code})

    assert over.status_code == 422 and over.json()["code"] == "limit_exceeded_single"
    assert new_payee.status_code == 401 and new_payee.json()["reasons"] == ["new_payee"]
    assert balance(client, bob) == 0


# -- parsing it --------------------------------------------------------------------------------------


def test_parse_reports_a_personal_codes_wallet(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    code = payload_of(client, bob, amount=800)

    parsed = client.post("/v1/qr-codes/parse", json={"payload": code}, headers=alice.auth)

    assert parsed.status_code == 200, parsed.text
    body = parsed.json()
    assert body["qianbao"] == {"kind": "personal", "wallet_id": bob.wallet_id}
    assert body["crc_ok"] and body["amount"] == money(800) and body["mcc"] == "0000"
    merchant = emvco.build_merchant_qr(
        merchant_id="mch_1", name="星巴克", city="上海", mcc="5814", dynamic=False
    )
    other = client.post("/v1/qr-codes/parse", json={"payload": merchant}, headers=alice.auth).json()
    assert "qianbao" not in other


def test_code_errors_speak_both_languages(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, alice, 10_000)
    code = payload_of(client, bob, amount=100)
    for qr, amount, error in ((with_bad_crc(code), 100, "qr_code_invalid"), (code, 101, "amount_mismatch")):
        body = {"from_wallet_id": alice.wallet_id, "to": {"qr": qr}, "amount": money(amount)}
        shown = {
            lang: client.post(
                "/v1/transfers", json=body, headers={**alice.auth, "Accept-Language": lang}
            ).json()
            for lang in ("en", "zh-CN")
        }
        assert {s["code"] for s in shown.values()} == {error}
        assert shown["en"]["user_message"].isascii() and not shown["zh-CN"]["user_message"].isascii()

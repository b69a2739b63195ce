"""POST /v1/qr-codes/parse: decode any EMVCo merchant-presented payload for a signed-in user."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from qianbao.api.routes import qr
from qianbao.config import Settings
from qianbao.payments.emvco import build_merchant_qr
from tests.support.api import SignedUp

URL = "/v1/qr-codes/parse"
EMVCO_SPEC = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678520441115802CN"
    "5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.7253031565502016233030412340603***"
    "0708A60086670902ME91320016A0112233449988770708123456786304A13A"
)
PIX_BCB = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR"
    "5913Fulano de Tal6008BRASILIA62070503***63041D3D"
)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The sandbox app, with the QR router registered if the app factory does not do it yet."""
    app = create_app(settings)
    if not any(getattr(route, "path", None) == URL for route in app.routes):
        app.include_router(qr.router)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_parse_a_foreign_payload(client: TestClient, alice: SignedUp) -> None:
    response = client.post(URL, json={"payload": EMVCO_SPEC}, headers=alice.auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "crc_ok": True,
        "point_of_initiation": "dynamic",
        "merchant_name": "BEST TRANSPORT",
        "merchant_city": "BEIJING",
        "mcc": "4111",
        "currency": "CNY",
        "amount": {"amount": 2372, "currency": "CNY"},
        "country": "CN",
        "fields": {
            "00": "01",
            "01": "12",
            "29": {"00": "D15600000000", "05": "A93FO3230Q"},
            "31": {"00": "D15600000001", "03": "12345678"},
            "52": "4111",
            "58": "CN",
            "59": "BEST TRANSPORT",
            "60": "BEIJING",
            "64": {"00": "ZH", "01": "最佳运输", "02": "北京"},
            "54": "23.72",
            "53": "156",
            "55": "01",
            "62": {"03": "1234", "06": "***", "07": "A6008667", "09": "ME"},
            "91": {"00": "A011223344998877", "07": "12345678"},
            "63": "A13A",
        },
    }


def test_no_amount_key_and_null_initiation_when_absent(client: TestClient, alice: SignedUp) -> None:
    body = client.post(URL, json={"payload": PIX_BCB}, headers=alice.auth).json()
    assert "amount" not in body
    assert body["point_of_initiation"] is None
    assert (body["currency"], body["country"]) == ("BRL", "BR")


def test_parse_a_qianbao_code(client: TestClient, alice: SignedUp) -> None:
    payload = build_merchant_qr(
        merchant_id="mch_7",
        name="老王面馆",
        city="北京",
        mcc="5812",
        amount_minor=1880,
        order_ref="A-1",
        dynamic=True,
    )
    body = client.post(URL, json={"payload": payload}, headers=alice.auth).json()
    assert body["crc_ok"] is True
    assert body["fields"]["26"] == {"00": "dev.qianbao", "01": "mch_7"}
    assert body["fields"]["62"] == {"05": "A-1"}
    # Who and how much are the server's records': it has none of mch_7, so it shows neither. The code's
    # own name and amount are still there to read, flagged as unverified.
    assert (body["fields"]["59"], body["fields"]["54"]) == ("老王面馆", "18.80")
    assert body["merchant_name"] is None and "amount" not in body
    assert body["verified"] is False and body["verification"]["reason"] == "merchant_not_found"


def test_bad_crc_is_reported_not_refused(client: TestClient, alice: SignedUp) -> None:
    response = client.post(URL, json={"payload": PIX_BCB[:-4] + "1D3E"}, headers=alice.auth)
    assert response.status_code == 200
    assert response.json()["crc_ok"] is False


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("hello", "invalid_tag"),
        ("000201520", "truncated"),
        ("5204411100020163041234", "missing_payload_format_indicator"),
        (PIX_BCB[:-8], "missing_crc"),
        ("", "empty"),
    ],
)
def test_malformed_payload_is_a_validation_error(
    client: TestClient, alice: SignedUp, payload: str, reason: str
) -> None:
    response = client.post(URL, json={"payload": payload}, headers=alice.auth)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert (body["code"], body["reason"]) == ("validation_error", reason)


@pytest.mark.parametrize("body", [{}, {"payload": 123}, {"payload": PIX_BCB, "extra": 1}])
def test_bad_request_bodies(client: TestClient, alice: SignedUp, body: dict[str, object]) -> None:
    response = client.post(URL, json=body, headers=alice.auth)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_requires_a_signed_in_user(client: TestClient) -> None:
    response = client.post(URL, json={"payload": PIX_BCB})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_decoding_an_uploaded_picture(client: TestClient, alice: SignedUp) -> None:
    from qianbao.payments.emvco import build_merchant_qr, qr_png

    payload = build_merchant_qr(
        merchant_id="mer_9", name="Lotus", city="Hangzhou", mcc="5812", amount_minor=None, dynamic=False
    )
    headers = {**alice.auth, "Content-Type": "image/png"}
    ok = client.post("/v1/qr-codes/decode", content=qr_png(payload), headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["payload"] == payload and ok.json()["point_of_initiation"] == "static"
    bad = client.post("/v1/qr-codes/decode", content=b"not an image", headers=headers)
    assert bad.status_code == 422 and bad.json()["reason"] == "not_an_image"
    anonymous = client.post(
        "/v1/qr-codes/decode", content=qr_png(payload), headers={"Content-Type": "image/png"}
    )
    assert anonymous.status_code == 401

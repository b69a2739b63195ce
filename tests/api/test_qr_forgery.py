"""Forged qianbao QR codes: a field edited and the CRC recomputed. `POST /v1/qr-codes/parse` shows what the
server's records say, in its top-level fields too, and flags every field that differs; paying refuses the
code and moves nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.payments import emvco
from qianbao.payments.receive_qr import code_signature
from tests.api.test_merchant_payments import _dynamic, balance, fund, open_merchant, static_payload
from tests.api.test_merchant_payments import pay as pay_merchant
from tests.api.test_receive_qr import payload_of
from tests.api.test_wallets_and_transfers import container, funded
from tests.api.test_wallets_and_transfers import pay as transfer
from tests.support.api import SignedUp, sign_up

PARSE = "/v1/qr-codes/parse"


def reissued(payload: str, **changes: str | Mapping[str, str] | None) -> str:
    """`payload` with data objects replaced (`_59="…"`), templates edited or objects dropped (None), and
    a correct CRC, as anyone with a text editor and a CRC calculator can make it."""
    fields: dict[str, str | Mapping[str, str]] = dict(emvco.parse(payload).fields)
    del fields["63"]
    for name, value in changes.items():
        tag = name.removeprefix("_")
        if value is None:
            del fields[tag]
        else:
            fields[tag] = value
    body = ""
    for tag, value in fields.items():
        text = value if isinstance(value, str) else "".join(f"{t}{len(v):02d}{v}" for t, v in value.items())
        body += f"{tag}{len(text):02d}{text}"
    body += "6304"
    return body + emvco.crc16_ccitt_false(body)


def parse(client: TestClient, user: SignedUp, payload: str) -> dict[str, Any]:
    response = client.post(PARSE, json={"payload": payload}, headers=user.auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


def mismatches(body: Mapping[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    return {m["field"]: (m["in_code"], m["on_record"]) for m in body["mismatches"]}


def who_and_how_much(body: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level fields a client shows the payer; `amount` is absent when there is none to show."""
    return {name: body.get(name) for name in ("merchant_name", "merchant_city", "mcc", "currency", "amount")}


@pytest.fixture
def mallory(client: TestClient) -> SignedUp:
    return sign_up(client, name="赵五")


# -- static merchant codes ------------------------------------------------------------------------------


def test_a_photo_of_a_forged_code_is_flagged_like_its_text(
    client: TestClient, alice: SignedUp, bob: SignedUp, mallory: SignedUp
) -> None:
    shop = open_merchant(client, bob)
    stall = open_merchant(client, mallory, name="赵记小卖部", city="杭州", mcc="5411")
    genuine = static_payload(client, bob, shop["id"])
    forged = reissued(genuine, _26={"00": emvco.GLOBALLY_UNIQUE_ID, "01": stall["id"]})

    def decoded(payload: str) -> dict[str, Any]:
        headers = {**alice.auth, "Content-Type": "image/png"}
        response = client.post("/v1/qr-codes/decode", content=emvco.qr_png(payload), headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    photo_of_forgery = decoded(forged)
    photo_of_genuine = decoded(genuine)

    assert photo_of_forgery.pop("payload") == forged
    assert photo_of_forgery == parse(client, alice, forged)
    assert photo_of_forgery["verified"] is photo_of_forgery["verification"]["verified"] is False
    assert photo_of_forgery["merchant_name"] == photo_of_forgery["verification"]["merchant"]["name"]
    assert photo_of_forgery["merchant_name"] == "赵记小卖部"
    assert photo_of_genuine["verified"] is photo_of_genuine["verification"]["verified"] is True


def test_a_static_code_with_another_merchants_id_shows_who_is_really_paid_and_is_refused(
    client: TestClient, alice: SignedUp, bob: SignedUp, mallory: SignedUp
) -> None:
    shop = open_merchant(client, bob)  # 老王面馆, 上海, 5812
    stall = open_merchant(client, mallory, name="赵记小卖部", city="杭州", mcc="5411")
    genuine = static_payload(client, bob, shop["id"])
    forged = reissued(genuine, _26={"00": emvco.GLOBALLY_UNIQUE_ID, "01": stall["id"]})
    fund(client, alice, 10_000)

    seen = parse(client, alice, forged)
    paid = pay_merchant(client, alice, forged, 2_500)

    # Who is paid, as the records say: the merchant the id names, not the name printed on the code…
    assert who_and_how_much(seen) == {
        "merchant_name": "赵记小卖部",
        "merchant_city": "杭州",
        "mcc": "5411",
        "currency": "CNY",
        "amount": None,
    }
    assert seen["verified"] is False
    assert seen["fields"]["59"] == "老王面馆"  # …which stays readable as the code's own text
    verification = seen["verification"]
    assert (verification["verified"], verification["kind"], verification["reason"]) == (
        False,
        "merchant",
        "altered",
    )
    assert verification["merchant"] == {
        "id": stall["id"],
        "name": "赵记小卖部",
        "city": "杭州",
        "mcc": "5411",
    }
    assert mismatches(verification) == {
        "merchant_name": ("老王面馆", "赵记小卖部"),
        "merchant_city": ("上海", "杭州"),
        "mcc": ("5812", "5411"),
    }
    assert paid.status_code == 422 and paid.json()["code"] == "qr_code_altered", paid.text
    assert {m["field"] for m in paid.json()["mismatches"]} == {"merchant_name", "merchant_city", "mcc"}
    assert balance(client, alice.wallet_id) == 10_000 and balance(client, stall["wallet"]["id"]) == 0


def test_a_genuine_static_code_is_verified_and_paid(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    shop = open_merchant(client, bob)
    genuine = static_payload(client, bob, shop["id"])
    fund(client, alice, 10_000)

    verification = parse(client, alice, genuine)["verification"]

    assert verification == {
        "verified": True,
        "kind": "merchant",
        "reason": None,
        "merchant": {"id": shop["id"], "name": "老王面馆", "city": "上海", "mcc": "5812"},
        "payee": None,
        "amount": None,
        "qr_code_status": None,
        "mismatches": [],
    }
    assert pay_merchant(client, alice, genuine, 2_500).status_code == 201


def test_any_added_or_changed_field_is_flagged(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    shop = open_merchant(client, bob)
    genuine = static_payload(client, bob, shop["id"])
    fund(client, alice, 10_000)
    # A static code with an amount, and a Chinese "alternate language" name for apps that show it.
    forged = reissued(genuine, _54="1.00", _64={"00": "ZH", "01": "星巴克"})

    verification = parse(client, alice, forged)["verification"]
    paid = pay_merchant(client, alice, forged, 100)

    assert verification["verified"] is False
    assert "amount" not in parse(client, alice, forged)  # the static code qianbao issued has none
    assert mismatches(verification) == {
        "amount": ("1.00", None),
        "merchant_name_alternate_language": ("0002ZH0103星巴克", None),
    }
    assert paid.status_code == 422 and paid.json()["code"] == "qr_code_altered"
    assert balance(client, alice.wallet_id) == 10_000


def test_a_bad_crc_or_an_unknown_merchant_is_never_verified(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    shop = open_merchant(client, bob)
    genuine = static_payload(client, bob, shop["id"])
    ghost = emvco.build_merchant_qr(merchant_id="mch_nope", name="Ghost", city="X", mcc="5411", dynamic=False)

    damaged = parse(client, alice, genuine[:-4] + ("0000" if genuine[-4:] != "0000" else "1111"))
    unknown = parse(client, alice, ghost)

    assert damaged["crc_ok"] is False and damaged["merchant_name"] == "老王面馆"
    assert unknown["merchant_name"] is None and unknown["fields"]["59"] == "Ghost"
    assert (damaged["verification"]["verified"], damaged["verification"]["reason"]) == (False, "bad_crc")
    assert damaged["verification"]["merchant"]["name"] == "老王面馆"
    assert unknown["verification"]["reason"] == "merchant_not_found"
    assert unknown["verification"]["merchant"] is None


# -- dynamic merchant codes -----------------------------------------------------------------------------


def test_a_dynamic_code_edited_to_a_lower_amount_shows_the_stored_amount_and_is_refused(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    shop = open_merchant(client, bob)
    code = _dynamic(client, bob, shop["id"], 5_000)
    forged = reissued(code["payload"], _54="1.00")
    fund(client, alice, 10_000)

    seen = parse(client, alice, forged)
    without_amount = pay_merchant(client, alice, forged)
    with_the_shown_amount = pay_merchant(client, alice, forged, 100)

    # How much, as the records say: the stored ¥50.00, not the ¥1.00 printed on the code.
    assert seen["amount"] == {"amount": 5_000, "currency": "CNY"} and seen["verified"] is False
    assert seen["merchant_name"] == "老王面馆" and seen["fields"]["54"] == "1.00"
    verification = seen["verification"]
    assert verification["verified"] is False and verification["reason"] == "altered"
    assert verification["amount"] == {"amount": 5_000, "currency": "CNY"}  # …and what will be paid
    assert verification["qr_code_status"] == "active"
    assert mismatches(verification) == {"amount": ("1.00", "50.00")}
    for refused in (without_amount, with_the_shown_amount):
        assert refused.status_code == 422 and refused.json()["code"] == "qr_code_altered", refused.text
        assert refused.json()["mismatches"] == [
            {"field": "amount", "tag": "54", "in_code": "1.00", "on_record": "50.00"}
        ]
    assert balance(client, alice.wallet_id) == 10_000
    status = client.get(f"/v1/merchants/{shop['id']}/qr-codes/{code['id']}", headers=bob.auth).json()
    assert status["status"] == "active"
    # The genuine code is verified and pays its own amount.
    assert parse(client, alice, code["payload"])["verification"]["verified"] is True
    paid = pay_merchant(client, alice, code["payload"])
    assert paid.status_code == 201 and paid.json()["amount"] == {"amount": 5_000, "currency": "CNY"}


def test_a_dynamic_code_turned_static_or_with_its_amount_removed_is_refused(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    shop = open_merchant(client, bob)
    code = _dynamic(client, bob, shop["id"], 5_000)
    fund(client, alice, 10_000)
    as_static = reissued(code["payload"], _01="11")
    no_amount = reissued(code["payload"], _54=None)

    assert pay_merchant(client, alice, as_static, 5_000).json()["code"] == "qr_code_altered"
    refused = pay_merchant(client, alice, no_amount)
    assert refused.status_code == 422 and refused.json()["code"] == "qr_code_altered"
    assert mismatches(parse(client, alice, no_amount)["verification"]) == {"amount": (None, "50.00")}
    assert balance(client, alice.wallet_id) == 10_000


def test_an_unknown_dynamic_reference_is_not_verified(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    shop = open_merchant(client, bob)
    code = _dynamic(client, bob, shop["id"], 5_000)
    forged = reissued(code["payload"], _62={"05": "QNOTAREALREFERENCE000"})

    seen = parse(client, alice, forged)
    verification = seen["verification"]

    assert (verification["verified"], verification["reason"]) == (False, "qr_code_not_found")
    assert verification["merchant"]["name"] == "老王面馆" and verification["amount"] is None
    # The merchant is known, the amount is not: none is shown.
    assert seen["merchant_name"] == "老王面馆" and "amount" not in seen


# -- personal receive codes -----------------------------------------------------------------------------


def test_a_receive_code_with_a_swapped_wallet_id_is_refused(
    client: TestClient, alice: SignedUp, bob: SignedUp, mallory: SignedUp
) -> None:
    genuine = payload_of(client, bob)  # shows *四
    account = {"00": emvco.GLOBALLY_UNIQUE_ID, "01": mallory.wallet_id, "02": emvco.PERSONAL_KIND}
    forged = reissued(genuine, _26=account)
    funded(client, alice, 10_000)

    seen = parse(client, alice, forged)
    paid = transfer(client, alice, 1_000, to={"qr": forged})

    # The signature fails: the records name no payee, so no name (nor amount) is shown at all.
    assert who_and_how_much(seen) == dict.fromkeys(
        ("merchant_name", "merchant_city", "mcc", "currency", "amount")
    )
    assert seen["verified"] is False and seen["fields"]["59"] == "*四"
    verification = seen["verification"]
    assert (verification["verified"], verification["kind"], verification["reason"]) == (
        False,
        "personal",
        "bad_signature",
    )
    # Nothing about the wallet the forged code names is revealed, nor the signature it would need.
    assert verification["payee"] is None and verification["amount"] is None
    [flagged] = verification["mismatches"]
    assert (flagged["field"], flagged["tag"], flagged["on_record"]) == ("signature", "80", None)
    assert paid.status_code == 422 and paid.json()["code"] == "qr_code_altered", paid.text
    assert balance(client, alice.wallet_id) == 10_000 and balance(client, mallory.wallet_id) == 0


def test_a_receive_codes_fixed_amount_cannot_be_edited(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    genuine = payload_of(client, bob, amount=5_000)
    forged = reissued(genuine, _54="1.00")
    funded(client, alice, 10_000)

    seen = parse(client, alice, forged)
    assert seen["verification"]["reason"] == "bad_signature"
    assert "amount" not in seen and seen["merchant_name"] is None
    paid = transfer(client, alice, 100, to={"qr": forged})
    assert paid.status_code == 422 and paid.json()["code"] == "qr_code_altered"
    assert balance(client, bob.wallet_id) == 0


def test_a_genuine_receive_code_shows_the_payee_from_the_records(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    genuine = payload_of(client, bob, amount=800)

    verification = parse(client, alice, genuine)["verification"]

    assert verification == {
        "verified": True,
        "kind": "personal",
        "reason": None,
        "merchant": None,
        "payee": {"wallet_id": bob.wallet_id, "name_masked": "*四"},
        "amount": {"amount": 800, "currency": "CNY"},
        "qr_code_status": None,
        "mismatches": [],
    }
    signed = emvco.parse(genuine).template(emvco.SIGNATURE_TAG)
    assert signed is not None and signed["00"] == emvco.GLOBALLY_UNIQUE_ID and len(signed["01"]) == 32


def test_a_receive_code_with_an_edited_name_shows_the_real_one_and_is_refused(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    forged = reissued(payload_of(client, bob), _59="*丽")
    funded(client, alice, 10_000)

    seen = parse(client, alice, forged)
    verification = seen["verification"]
    paid = transfer(client, alice, 1_000, to={"qr": forged})

    assert seen["merchant_name"] == "*四" and seen["fields"]["59"] == "*丽"  # the wallet owner's name
    assert (verification["verified"], verification["reason"]) == (False, "altered")
    assert verification["payee"] == {"wallet_id": bob.wallet_id, "name_masked": "*四"}
    assert mismatches(verification) == {"merchant_name": ("*丽", "*四")}
    assert paid.status_code == 422 and paid.json()["code"] == "qr_code_altered"
    assert balance(client, bob.wallet_id) == 0


def test_an_unsigned_receive_code_cannot_be_verified_and_is_refused(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    old = emvco.build_personal_qr(wallet_id=bob.wallet_id, name="*四", city="China", signature=None)
    funded(client, alice, 10_000)

    verification = parse(client, alice, old)["verification"]
    paid = transfer(client, alice, 1_000, to={"qr": old})

    assert (verification["verified"], verification["reason"], verification["payee"]) == (
        False,
        "unsigned",
        None,
    )
    assert paid.status_code == 422 and paid.json()["code"] == "qr_code_unsigned"
    assert balance(client, bob.wallet_id) == 0


def test_a_signature_made_with_another_key_does_not_hold(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    from qianbao.security.crypto import BlindIndex

    class OtherKey:
        def digest(self, kind: str, value: str) -> str:
            return BlindIndex(b"k" * 32).digest(kind, value)

    signature = code_signature(OtherKey(), wallet_id=bob.wallet_id, currency="CNY", amount=None)  # type: ignore[arg-type]
    assert signature != code_signature(
        container(client).identity.keys, wallet_id=bob.wallet_id, currency="CNY", amount=None
    )
    forged = emvco.build_personal_qr(wallet_id=bob.wallet_id, name="*四", city="China", signature=signature)

    assert parse(client, alice, forged)["verification"]["reason"] == "bad_signature"


# -- other schemes, numeric fields ----------------------------------------------------------------------


def test_other_schemes_codes_have_no_verification(client: TestClient, alice: SignedUp) -> None:
    pix = (
        "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR"
        "5913Fulano de Tal6008BRASILIA62070503***63041D3D"
    )
    assert parse(client, alice, pix) == emvco.parse(pix).as_json()  # as the code says: no records of it


def test_genuine_codes_show_exactly_what_they_say(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    shop = open_merchant(client, bob)
    genuine = (
        static_payload(client, bob, shop["id"]),
        _dynamic(client, bob, shop["id"], 5_000)["payload"],
        payload_of(client, bob, amount=800),
    )

    for payload in genuine:
        seen = parse(client, alice, payload)
        assert seen.pop("verified") is True and seen.pop("verification")["verified"] is True
        assert seen == emvco.parse(payload).as_json()


def test_an_amount_in_other_digits_is_refused(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    shop = open_merchant(client, bob)
    code = _dynamic(client, bob, shop["id"], 12_300)
    forged = reissued(code["payload"], _54="١٢٣.00")

    response = client.post(PARSE, json={"payload": forged}, headers=alice.auth)
    paid = pay_merchant(client, alice, forged)

    assert response.status_code == 422
    assert (response.json()["code"], response.json()["reason"]) == ("validation_error", "invalid_amount")
    assert (paid.json()["code"], paid.json()["reason"]) == ("qr_code_invalid", "invalid_amount")

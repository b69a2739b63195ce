"""Messages that help: each refusal says what is wrong and what to do, in zh-CN and en (docs/errors.md,
"Specific messages"). The codes are the stable ones of API.md; only the words are more precise."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.error_messages import messages
from tests.api.test_phone_change_and_recovery import resident_id
from tests.api.test_pin import WRONG, new_challenge, pin_row, set_first_pin, try_pin
from tests.api.test_wallets_and_transfers import funded, money
from tests.support.api import SignedUp, new_phone
from tests.support.messages import assert_helpful

LANGUAGES = ("zh-CN", "en")


def answer(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def in_language(headers: dict[str, str], language: str) -> dict[str, str]:
    return {**headers, "Accept-Language": language}


@pytest.mark.parametrize(
    ("language", "message", "next_step_message"),
    [
        ("zh-CN", "手机号或密码错误，请检查后重试，或重置密码。", "请核对填写的信息后重试。"),
        (
            "en",
            "The phone number or password is wrong. Check them and try again, or reset your password.",
            "Check the details you entered and try again.",
        ),
    ],
)
def test_a_wrong_password_says_so_without_telling_whether_the_phone_is_registered(
    client: TestClient, alice: SignedUp, language: str, message: str, next_step_message: str
) -> None:
    headers = {"Accept-Language": language}
    wrong = client.post(
        "/v1/sessions", json={"phone": alice.phone, "password": "Wrong-Lantern-41"}, headers=headers
    )
    unknown = client.post(
        "/v1/sessions", json={"phone": new_phone(), "password": "Wrong-Lantern-41"}, headers=headers
    )
    for response in (wrong, unknown):
        body = answer(response, 401, "unauthenticated")
        assert (body["user_message"], body["next_step"], body["next_step_message"]) == (
            message,
            "check_input",
            next_step_message,
        )
    assert wrong.json().keys() == unknown.json().keys()


@pytest.mark.parametrize(
    ("pin", "reason", "zh", "en"),
    [
        ("12345", "not_six_digits", "支付密码必须是 6 位数字。", "The payment PIN must be exactly 6 digits."),
        (
            "1234567",
            "not_six_digits",
            "支付密码必须是 6 位数字。",
            "The payment PIN must be exactly 6 digits.",
        ),
        (
            "123456",
            "sequential",
            "支付密码不能是连续数字（如 123456），请换一个。",
            "That PIN is a run of digits like 123456. Choose one that is harder to guess.",
        ),
        (
            "000000",
            "repeated",
            "支付密码的重复数字太多，请使用更多不同的数字。",
            "That PIN uses too few different digits. Choose one that mixes more digits.",
        ),
    ],
)
def test_a_refused_pin_says_why(
    client: TestClient, alice: SignedUp, pin: str, reason: str, zh: str, en: str
) -> None:
    for language, message in (("zh-CN", zh), ("en", en)):
        response = client.put("/v1/me/pin", json={"pin": pin}, headers=in_language(alice.auth, language))
        body = answer(response, 422, "weak_pin")
        assert body["reasons"][0] == reason and body["user_message"] == message
        # A PIN of the wrong length is a typing matter; a guessable one needs another PIN.
        assert body["next_step"] == ("check_input" if reason == "not_six_digits" else "choose_stronger")


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", b'{"from_wallet_id": "wal_x"}'),
        ("application/x-www-form-urlencoded", b"from_wallet_id=wal_x&amount=100"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n',
        ),
    ],
)
def test_a_body_that_is_not_sent_as_json_is_told_how_to_send_it(
    client: TestClient, alice: SignedUp, content_type: str, content: bytes
) -> None:
    expected = {
        "zh-CN": "请以 JSON 格式发送请求内容，并设置请求头 Content-Type: application/json。",
        "en": "Send the request body as JSON, with the header Content-Type: application/json.",
    }
    for language in LANGUAGES:
        headers = in_language({**alice.auth, "Content-Type": content_type}, language)
        body = answer(client.post("/v1/transfers", content=content, headers=headers), 422, "validation_error")
        assert body["user_message"] == expected[language]
        assert body["errors"][0]["message"] == expected[language]


def test_json_that_does_not_parse_and_json_that_is_not_an_object(client: TestClient, alice: SignedUp) -> None:
    headers = {**alice.auth, "Content-Type": "application/json", "Accept-Language": "zh-CN"}
    broken = answer(
        client.post("/v1/transfers", content=b'{"amount": ', headers=headers), 422, "validation_error"
    )
    assert broken["user_message"] == "请求内容不是有效的 JSON，请检查后重新发送。"
    listed = answer(client.post("/v1/transfers", content=b"[1, 2]", headers=headers), 422, "validation_error")
    assert listed["user_message"] == "请求内容必须是包含本请求各字段的 JSON 对象。"


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("zh-CN", "您是想填写 CNY 吗？币种代码须为大写字母。"),
        ("en", "Did you mean CNY? Currency codes are upper-case."),
    ],
)
def test_a_lower_case_currency_gets_a_did_you_mean(
    client: TestClient, alice: SignedUp, bob: SignedUp, language: str, message: str
) -> None:
    body = {"from_wallet_id": alice.wallet_id, "to": {"wallet_id": bob.wallet_id}, "amount": money(100)}
    body["amount"]["currency"] = "cny"
    refused = answer(
        client.post("/v1/transfers", json=body, headers=in_language(alice.auth, language)),
        422,
        "validation_error",
    )
    assert refused["user_message"] == message
    assert refused["errors"][0]["field"] == "amount.currency" and refused["errors"][0]["message"] == message
    # The same through a service's own check (a sub-wallet's currency is not a schema field).
    wallet = client.post(
        "/v1/wallets", json={"name": "旅行", "currency": "cny"}, headers=in_language(alice.auth, language)
    )
    assert answer(wallet, 422, "validation_error")["user_message"] == message
    assert wallet.json()["field"] == "currency"


def test_an_unknown_currency_says_what_a_currency_code_is(client: TestClient, alice: SignedUp) -> None:
    body = {"from_wallet_id": alice.wallet_id, "to": {"phone": new_phone()}, "amount": money(100)}
    body["amount"]["currency"] = "XYZ"
    refused = answer(client.post("/v1/transfers", json=body, headers=alice.auth), 422, "validation_error")
    assert refused["user_message"] == "The currency must be an ISO 4217 currency code, such as CNY."


@pytest.mark.parametrize(
    ("language", "to_message", "from_message"),
    [
        (
            "zh-CN",
            "未找到该钱包 ID，请核对钱包 ID，或请收款人提供收款码。",
            "未在您的钱包中找到该钱包，请核对钱包 ID。",
        ),
        (
            "en",
            "We couldn't find a wallet with this ID. Check the wallet ID, or ask the payee for their receive "
            "code.",
            "We couldn't find this wallet among yours. Check the wallet ID.",
        ),
    ],
)
def test_an_unknown_wallet_id_is_not_called_a_number(
    client: TestClient, alice: SignedUp, bob: SignedUp, language: str, to_message: str, from_message: str
) -> None:
    funded(client, alice, 10_000)
    headers = in_language(alice.auth, language)
    to_unknown = {
        "from_wallet_id": alice.wallet_id,
        "to": {"wallet_id": "wal_0doesnotexist"},
        "amount": money(100),
    }
    body = answer(client.post("/v1/transfers", json=to_unknown, headers=headers), 404, "recipient_not_found")
    assert body["user_message"] == to_message
    # Paying from a wallet that is not one's own (bob's, or none at all) reads the same: nothing is revealed.
    for source in ("wal_0doesnotexist", bob.wallet_id):
        from_unknown = {"from_wallet_id": source, "to": {"wallet_id": bob.wallet_id}, "amount": money(100)}
        body = answer(client.post("/v1/transfers", json=from_unknown, headers=headers), 404, "not_found")
        assert body["user_message"] == from_message


def test_a_phone_number_without_a_wallet_is_still_about_the_number(
    client: TestClient, alice: SignedUp
) -> None:
    funded(client, alice, 10_000)
    body = {"from_wallet_id": alice.wallet_id, "to": {"phone": new_phone()}, "amount": money(100)}
    refused = answer(
        client.post("/v1/transfers", json=body, headers=in_language(alice.auth, "zh-CN")),
        404,
        "recipient_not_found",
    )
    assert refused["user_message"] == "该手机号未开通钱包，请核对号码后重试。"


def test_every_schema_error_carries_its_field_and_message(client: TestClient, alice: SignedUp) -> None:
    body = {"from_wallet_id": alice.wallet_id, "to": {"wallet_id": 7}, "amount": {"amount": 1.5}, "tip": 1}
    refused = answer(
        client.post("/v1/transfers", json=body, headers=in_language(alice.auth, "zh-CN")),
        422,
        "validation_error",
    )
    by_field = {e["field"]: e["message"] for e in refused["errors"]}
    assert by_field == {
        "to.wallet_id": "钱包 ID 须以文本形式发送，即放在英文双引号中的 JSON 字符串，而不是数字。",
        "amount.amount": "金额必须是整数。",
        "amount.currency": "请填写币种。",
        "tip": "请求中不应包含「tip」，请删除后重试。",
    }
    assert refused["user_message"] == refused["errors"][0]["message"]
    assert {"loc", "msg", "type"} <= refused["errors"][0].keys()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/wallets", {"name": "x" * 100}, "name"),
        ("/v1/wallets", {"name": "旅行", "purpose": "holiday"}, "purpose"),
        ("/v1/me/phone-change", {"new_phone": "12"}, "new_phone"),
        ("/v1/verifications", {"phone": "not a phone"}, "phone"),
    ],
)
def test_service_checks_name_the_field_in_both_languages(
    client: TestClient, alice: SignedUp, path: str, body: dict[str, Any], field: str
) -> None:
    for language in LANGUAGES:
        refused = answer(
            client.post(path, json=body, headers=in_language(alice.auth, language)), 422, "validation_error"
        )
        assert refused["field"] == field
        assert_helpful(refused, language, path)


# -- the PIN at step-up ---------------------------------------------------------------------------------


def test_a_pin_that_is_not_six_digits_is_a_typing_slip_that_counts_toward_no_lock(
    client: TestClient, alice: SignedUp
) -> None:
    set_first_pin(client, alice)
    challenge = new_challenge(client, alice)
    for pin, language in (("12345", "en"), ("1234567", "zh-CN"), ("12a456", "en"), ("１２３４５６", "en")):
        response = client.post(
            f"/v1/challenges/{challenge}/verify",
            json={"method": "pin", "pin": pin},
            headers=in_language(alice.auth, language),
        )
        body = answer(response, 422, "validation_error")
        assert body["field"] == "pin"
        assert (
            body["user_message"]
            == {
                "en": "The payment PIN must be exactly 6 digits.",
                "zh-CN": "支付密码必须是 6 位数字。",
            }[language]
        )
    assert pin_row(client, alice).pin_failures == 0
    # A wrong PIN of the right shape counts, and says how many more the lock allows.
    for left, language in ((4, "en"), (3, "zh-CN"), (2, "en"), (1, "en")):
        body = answer(
            client.post(
                f"/v1/challenges/{challenge}/verify",
                json={"method": "pin", "pin": WRONG},
                headers=in_language(alice.auth, language),
            ),
            422,
            "second_factor_invalid",
        )
        assert body["attempts_left"] == left
        assert (
            body["user_message"]
            == {
                "en": f"The payment PIN is not correct. Attempts left before it is locked: {left}.",
                "zh-CN": f"支付密码错误，还可以再试 {left} 次，之后将被锁定。",
            }[language]
        )
    # The fifth locks it, and says so (until when, in the next step).
    locked = answer(try_pin(client, alice, new_challenge(client, alice), WRONG), 422, "second_factor_invalid")
    assert locked["attempts_left"] == 0 and locked["next_step"] == "try_after_unlock"
    assert locked["user_message"].startswith("The payment PIN is not correct, and it is now locked")
    assert locked["locked_until"] and pin_row(client, alice).pin_locked_until is not None


def test_account_recovery_checks_the_pins_shape_first(client: TestClient) -> None:
    body = {
        "id_number": resident_id("44030419851122003"),
        "new_phone": new_phone(),
        "new_code": "123456",
        "pin": "12345",
        "second_factor": {"method": "totp", "code": "123456"},
    }
    refused = answer(client.post("/v1/recovery/phone/confirm", json=body), 422, "validation_error")
    assert (
        refused["field"] == "pin" and refused["user_message"] == "The payment PIN must be exactly 6 digits."
    )


# -- the body as a whole --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "zh", "en"),
    [
        (
            b"[" * 40_000,  # 40 kB: under the 64 KiB limit, deeper than the JSON parser goes
            "请求内容的 JSON 嵌套层数过深（数组或对象层层嵌套），"
            "请发送层次更浅、包含本请求各字段的 JSON 对象。",
            "The JSON body is nested too deeply (arrays or objects inside one another). Send a flatter JSON "
            "object with this request's fields.",
        ),
        (
            b"",
            "请求内容为空，请以 JSON 对象发送本请求的各字段，并设置请求头 Content-Type: application/json。",
            "The request body is empty. Send this request's fields as a JSON object, with the header "
            "Content-Type: application/json.",
        ),
    ],
    ids=["nested_too_deeply", "empty"],
)
def test_a_body_that_cannot_be_read_is_422_and_says_why(
    client: TestClient, alice: SignedUp, content: bytes, zh: str, en: str
) -> None:
    for language, message in (("zh-CN", zh), ("en", en)):
        headers = in_language({**alice.auth, "Content-Type": "application/json"}, language)
        body = answer(client.post("/v1/transfers", content=content, headers=headers), 422, "validation_error")
        assert body["user_message"] == message


# -- fields ---------------------------------------------------------------------------------------------


def test_a_pin_sent_as_a_number_is_told_to_go_in_quotes(client: TestClient, alice: SignedUp) -> None:
    expected = {
        "zh-CN": '支付密码须为放在英文双引号中的 6 位数字文本，例如 "123456"，而不是数字 123456。',
        "en": 'The payment PIN must be 6 digits written as text, in quotes: "123456", not 123456.',
    }
    for language in LANGUAGES:
        response = client.put("/v1/me/pin", json={"pin": 739152}, headers=in_language(alice.auth, language))
        assert answer(response, 422, "validation_error")["user_message"] == expected[language]
    phone = client.post("/v1/verifications", json={"phone": 13800138000})
    assert answer(phone, 422, "validation_error")["user_message"] == (
        "The phone number must be sent as text, in quotes (a JSON string), not as a number."
    )


def test_to_is_the_recipient_of_a_transfer_and_the_end_of_a_history_period(
    client: TestClient, alice: SignedUp
) -> None:
    body = {"from_wallet_id": alice.wallet_id, "amount": money(100)}
    for language, message in (("zh-CN", "请填写收款方。"), ("en", "Enter the recipient.")):
        refused = client.post("/v1/transfers", json=body, headers=in_language(alice.auth, language))
        assert answer(refused, 422, "validation_error")["user_message"] == message
    history = f"/v1/wallets/{alice.wallet_id}/transactions"
    for params, message in (
        ({"to": "x" * 41}, "结束时间太长，最多 40 个字符。"),  # the schema's check
        ({"from": "2026-03-02", "to": "2026-03-01"}, "开始时间必须早于结束时间。"),  # the service's
    ):
        refused = client.get(history, params=params, headers=in_language(alice.auth, "zh-CN"))
        assert answer(refused, 422, "validation_error")["user_message"] == message


def test_every_request_field_has_a_label(client: TestClient) -> None:
    """Each body field and query parameter of the OpenAPI document is named by a label in messages, not
    by its JSON name (`Enter "to".`)."""
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    unlabelled: set[str] = set()

    def walk(schema: dict[str, Any], seen: frozenset[str]) -> None:
        ref = schema.get("$ref")
        if ref is not None:
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                walk(schemas[name], seen | {name})
            return
        parts = [*schema.get("anyOf", ()), *schema.get("allOf", ())]
        if "items" in schema:
            parts.append(schema["items"])
        for part in parts:
            walk(part, seen)
        for name, sub in schema.get("properties", {}).items():
            if f"field.{name}" not in messages("en"):
                unlabelled.add(name)
            walk(sub, seen)

    for spec in (op for methods in document["paths"].values() for op in methods.values()):
        for parameter in spec.get("parameters", ()):
            if parameter["in"] == "query" and f"field.{parameter['name']}" not in messages("en"):
                unlabelled.add(parameter["name"])
        content = spec.get("requestBody", {}).get("content", {}).get("application/json", {})
        walk(content.get("schema", {}), frozenset())
    assert not unlabelled


@pytest.mark.parametrize("given", ["RMB", "rmb", "¥", "元"])
def test_rmb_and_its_signs_point_to_cny(client: TestClient, alice: SignedUp, given: str) -> None:
    body = {"from_wallet_id": alice.wallet_id, "to": {"wallet_id": alice.wallet_id}, "amount": money(100)}
    body["amount"]["currency"] = given
    for language, message in (
        ("zh-CN", "您是想填写 CNY 吗？币种请填写 ISO 4217 代码 CNY。"),
        ("en", "Did you mean CNY? Write the currency as its ISO 4217 code: CNY."),
    ):
        refused = client.post("/v1/transfers", json=body, headers=in_language(alice.auth, language))
        assert answer(refused, 422, "validation_error")["user_message"] == message


def test_amount_bounds_are_said_in_money(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    body = {"from_wallet_id": alice.wallet_id, "to": {"wallet_id": bob.wallet_id}, "amount": money(0)}
    for language, message in (
        ("zh-CN", "金额不能少于 ¥0.01（1 分）。"),
        ("en", "The amount must be at least ¥0.01 (1 fen)."),
    ):
        refused = client.post("/v1/transfers", json=body, headers=in_language(alice.auth, language))
        assert answer(refused, 422, "validation_error")["user_message"] == message
    history = f"/v1/wallets/{alice.wallet_id}/transactions"
    refused = client.get(history, params={"min_amount": -1}, headers=alice.auth)
    assert answer(refused, 422, "validation_error")["user_message"] == (
        "The minimum amount must be at least ¥0.00 (0 fen)."
    )

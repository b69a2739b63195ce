"""Specific user messages (`error.<code>.<variant>`): every template renders in both languages with its
parameters, fields are named by their labels, call sites name registered variants, and schema validation
errors are described field by field."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.requests import Request

import qianbao
from qianbao import invalid
from qianbao.api.problems import localized_message, problem
from qianbao.api.request_errors import (
    describe_validation_errors,
    exactly_one_of,
    field_path,
    labelled,
    unknown_currency,
    variant_for,
)
from qianbao.error_codes import BY_CODE, FIELD_LABELS, MESSAGE_VARIANTS, VARIANT_BY_MSGID, user_text
from qianbao.error_messages import LANGUAGES, field_label, messages, specific_message
from qianbao.errors import InvalidInput, UserText
from qianbao.identity.errors import weak_password, weak_pin, wrong_proof
from qianbao.money import Money
from qianbao.wallets.names import MAIN_WALLET_NAME, shown_wallet_name
from tests.support.messages import CJK, ENGLISH_RUN, QUOTED, assert_helpful

SRC = Path(qianbao.__file__).resolve().parent
# A value for every parameter a variant may declare.
SAMPLE_PARAMS: dict[str, Any] = {
    "field": "amount.currency",
    "other": "max_amount",
    "min": 1,
    "max": 100_000,
    "than": 0,
    "years": 10,
    "choices": ["warn", "block"],
    "names": ["transfer_id"],
    "currency": "CNY",
    "suggestion": "CNY",
    "format": "TIFF",
    "least": Money(1, "CNY"),
    "most": Money(100_000, "CNY"),
    "attempts_left": 3,
    "size": "4096 × 4096",
}


def test_every_variant_refines_a_registered_code_and_declares_known_parameters() -> None:
    assert len(VARIANT_BY_MSGID) == len(MESSAGE_VARIANTS)
    for variant in MESSAGE_VARIANTS:
        assert variant.code in BY_CODE, variant
        assert set(variant.params) <= SAMPLE_PARAMS.keys(), variant
        assert variant.when.strip(), variant


@pytest.mark.parametrize("variant", MESSAGE_VARIANTS, ids=lambda v: v.msgid)
def test_every_template_renders_in_both_languages_with_its_parameters(variant: Any) -> None:
    params = {name: SAMPLE_PARAMS[name] for name in variant.params}
    text = UserText(variant.code, variant.variant, params)
    en, zh = specific_message(text, "en"), specific_message(text, "zh-CN")
    assert en and zh and en != zh
    assert "{" not in en + zh and "}" not in en + zh  # every placeholder was filled
    assert not CJK.search(en) and en[:1].isupper(), en
    assert CJK.search(zh) and not ENGLISH_RUN.search(QUOTED.sub("", zh)), zh
    # A message about a field names it (by its label); one about a number shows it.
    if "{field}" in messages("en")[variant.msgid]:
        assert field_label("amount.currency", "en").removeprefix("the ") in en, en
    if "{field}" in messages("zh-CN")[variant.msgid]:
        assert field_label("amount.currency", "zh-CN") in zh, zh
    if "max" in variant.params:
        assert "100,000" in en and "100,000" in zh
    # It differs from the code's own message: it says more.
    assert en != messages("en")[BY_CODE[variant.code].msgid]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_field_label_is_translated(language: str) -> None:
    for label in FIELD_LABELS:
        text = messages(language)[label.msgid]
        assert text.strip() and "{" not in text
        assert bool(CJK.search(text)) == (language == "zh-CN"), text


@pytest.mark.parametrize(
    ("path", "en", "zh"),
    [
        ("amount.currency", "the currency", "币种"),
        ("to.wallet_id", "the wallet ID", "钱包 ID"),
        ("events[0]", "the event types", "事件类型"),
        ("settings.tip_percent", '"settings.tip_percent"', "「settings.tip_percent」"),
        ("to", "the recipient", "收款方"),
        ("from", "the payer", "付款人"),
        ("previous_secret_valid_s", "how long the previous secret stays valid", "旧密钥的有效时长"),
    ],
)
def test_a_field_is_named_by_its_label_or_else_its_path(path: str, en: str, zh: str) -> None:
    assert (field_label(path, "en"), field_label(path, "zh-CN")) == (en, zh)


def test_a_route_names_its_own_fields_where_a_name_means_something_else() -> None:
    """History's `to` is the end of a period, a transfer's the recipient: the route says which."""
    period = {"from": "period_start", "to": "period_end"}
    assert field_label("to", "en", period) == "the end of the period"
    assert field_label("to", "zh-CN", period) == "结束时间"
    assert field_label("to.wallet_id", "en", period) == "the wallet ID"  # only the paths it names
    before = UserText("validation_error", "before", {"field": "from", "other": "to"})
    assert specific_message(before, "zh-CN", labels=period) == "开始时间必须早于结束时间。"
    with pytest.raises(KeyError):
        labelled({"to": "no_such_label"})


def test_a_long_unknown_field_name_is_shortened() -> None:
    shown = field_label("x" * 5000, "en")
    assert len(shown) == 66 and shown.endswith('…"')


def test_messages_read_as_written() -> None:
    name_too_long = UserText("validation_error", "text_length", {"min": 1, "max": 32})
    assert specific_message(name_too_long, "zh-CN", field="name") == "名称须为 1 到 32 个字符。"
    assert specific_message(name_too_long, "en", field="name") == "The name must be 1 to 32 characters long."
    choices = UserText(
        "validation_error", "one_of", {"field": "budget.on_limit", "choices": ["warn", "block"]}
    )
    assert specific_message(choices, "zh-CN") == "超出预算时的处理方式只能是以下之一：warn、block。"
    assert specific_message(choices, "en") == "The action at the budget limit must be one of: warn, block."
    # Latin and Han characters are spaced in Chinese whatever the label brings.
    required = UserText("validation_error", "not_text", {"field": "to.wallet_id"})
    assert specific_message(required, "zh-CN") == "钱包 ID 必须是文本。"


def test_a_variant_missing_from_the_catalog_or_a_parameter_falls_back() -> None:
    assert specific_message(UserText("validation_error", "no_such_variant"), "en") is None
    # `too_long` needs `max`: without it the code's message is better than a hole.
    assert specific_message(UserText("validation_error", "too_long", {"field": "memo"}), "en") is None
    assert (
        localized_message("validation_error", "en", 422, UserText("validation_error", "too_long"), "memo")
        == (messages("en")["error.validation_error"])
    )


def test_user_text_refuses_unregistered_variants_and_parameters() -> None:
    assert user_text("weak_pin", "not_six_digits") == UserText("weak_pin", "not_six_digits", {})
    with pytest.raises(KeyError):
        user_text("weak_pin", "too_short")
    with pytest.raises(TypeError):
        user_text("validation_error", "too_long", field="memo")  # `max` is missing
    with pytest.raises(TypeError):
        user_text("validation_error", "required", field="memo", max=3)  # `max` is not one of its parameters


# -- every call site names a registered variant -------------------------------------------------------

# Functions whose literal arguments name a variant: (positional index of the code or None for
# validation_error, positional index of the variant).
VARIANT_CALLS = {"user_text": (0, 1), "because": (None, 0), "schema_error": (None, 0)}


def _variant_calls() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in VARIANT_CALLS:
                continue
            code_at, variant_at = VARIANT_CALLS[name]
            args = node.args
            if len(args) <= variant_at or not isinstance(args[variant_at], ast.Constant):
                continue
            code = "validation_error" if code_at is None else getattr(args[code_at], "value", None)
            if isinstance(code, str):
                found.append((f"{path.name}:{node.lineno}", code, str(args[variant_at].value)))
    return found


def test_every_literal_variant_in_src_is_registered() -> None:
    calls = _variant_calls()
    assert len(calls) > 40
    unregistered = [call for call in calls if f"error.{call[1]}.{call[2]}" not in VARIANT_BY_MSGID]
    assert not unregistered


def test_every_invalid_input_in_src_goes_through_the_invalid_module() -> None:
    """A bare `InvalidInput(...)` has no message for the user beyond its field: build it in
    `qianbao.invalid`, which gives every kind its message."""
    allowed = {"invalid.py", "errors.py", "database.py", "emvco.py"}  # the builders; the CLI's database URL
    bare = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name not in allowed
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "InvalidInput"
    ]
    assert not bare


# -- the invalid module --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "en"),
    [
        (invalid.required("pin"), "Enter the payment PIN."),
        (invalid.text_length("name", 20), "The name must be 1 to 20 characters long."),
        (invalid.text_length("name", 40, shown="full_name"), "Your name must be 1 to 40 characters long."),
        (invalid.cursor(), "The page cursor is not valid: pass back the next_cursor of the previous page."),
        (invalid.unknown_currency("currency", "cny"), "Did you mean CNY? Currency codes are upper-case."),
        (
            invalid.unknown_currency("currency", "XYZ"),
            "The currency must be an ISO 4217 currency code, such as CNY.",
        ),
        (
            invalid.not_above("min_amount", "max_amount"),
            "The minimum amount must not be more than the maximum amount.",
        ),
        (invalid.needs_user(), "Sign in with a customer account to do this."),
    ],
)
def test_invalid_builders_say_what_is_wrong(error: InvalidInput, en: str) -> None:
    assert error.code == "validation_error" and error.detail
    assert localized_message(error.code, "en", 422, error.user_text, error.extra.get("field")) == en


def test_currency_suggestions() -> None:
    assert invalid.currency_suggestion("cny") == "CNY"
    assert invalid.currency_suggestion("Usd") == "USD"
    for given in ("CNY", "xyz", "cnyy", 12, None):
        assert invalid.currency_suggestion(given) is None


@pytest.mark.parametrize("given", ["RMB", "rmb", "¥", "￥", "元", "人民币"])
def test_other_names_for_the_renminbi_point_to_cny(given: str) -> None:
    assert invalid.currency_hint(given) == ("currency_alias", "CNY")
    error = invalid.unknown_currency("currency", given)
    assert localized_message(error.code, "en", 422, error.user_text, "currency") == (
        "Did you mean CNY? Write the currency as its ISO 4217 code: CNY."
    )
    assert localized_message(error.code, "zh-CN", 422, error.user_text, "currency") == (
        "您是想填写 CNY 吗？币种请填写 ISO 4217 代码 CNY。"
    )
    schema = unknown_currency(given)
    assert (schema.type, schema.context) == ("currency_alias", {"suggestion": "CNY"})
    assert invalid.currency_hint("cny") == ("currency_case", "CNY")
    assert invalid.currency_hint("XYZ") is None and invalid.currency_hint(12) is None


def test_amount_bounds_are_said_in_money() -> None:
    error = invalid.amount_range("amount", 1, 100_000)
    assert localized_message(error.code, "en", 422, error.user_text, "amount") == (
        "The amount must be from ¥0.01 to ¥1,000.00: a whole number of fen from 1 to 100,000."
    )
    assert localized_message(error.code, "zh-CN", 422, error.user_text, "amount") == (
        "金额须在 ¥0.01 到 ¥1,000.00 之间，即以分为单位、1 到 100,000 之间的整数。"
    )
    small = variant_for("greater_than_equal", "amount.amount", {"ge": 1}, json_body=True)
    assert specific_message(small, "en") == "The amount must be at least ¥0.01 (1 fen)."
    assert specific_message(small, "zh-CN") == "金额不能少于 ¥0.01（1 分）。"
    large = variant_for("less_than_equal", "max_amount", {"le": 10**15}, json_body=True)
    assert specific_message(large, "en") == (
        "The maximum amount must be at most ¥10,000,000,000,000.00 (1,000,000,000,000,000 fen)."
    )
    # An amount in another currency, or a number that is not money, keeps its bare bound.
    other = variant_for("greater_than_equal", "amount.amount", {"ge": 1}, json_body=True, currency="USD")
    assert specific_message(other, "en") == "The amount must be at least 1."
    assert variant_for("greater_than_equal", "limit", {"ge": 1}, json_body=True).variant == "too_small"


@pytest.mark.parametrize(
    ("field", "en", "zh"),
    [
        (
            "pin",
            'The payment PIN must be 6 digits written as text, in quotes: "123456", not 123456.',
            '支付密码须为放在英文双引号中的 6 位数字文本，例如 "123456"，而不是数字 123456。',
        ),
        (
            "second_factor.code",
            'The code must be 6 digits written as text, in quotes: "123456", not 123456.',
            '验证码须为放在英文双引号中的 6 位数字文本，例如 "123456"，而不是数字 123456。',
        ),
        (
            "account_number",
            "The bank card number must be sent as text, in quotes (a JSON string), not as a number.",
            "银行卡号须以文本形式发送，即放在英文双引号中的 JSON 字符串，而不是数字。",
        ),
    ],
)
def test_a_number_sent_for_digits_is_told_to_go_in_quotes(field: str, en: str, zh: str) -> None:
    text = variant_for("string_type", field, {}, json_body=True, given=123456)
    assert (specific_message(text, "en"), specific_message(text, "zh-CN")) == (en, zh)
    # Not a number: the plain "must be text".
    assert variant_for("string_type", field, {}, json_body=True, given=True).variant == "not_text"
    assert variant_for("string_type", field, {}, json_body=True, given=[1]).variant == "not_text"


def test_a_wrong_pin_at_step_up_says_how_many_attempts_are_left() -> None:
    wrong = wrong_proof("pin", pin_attempts_left=3)
    assert wrong.code == "second_factor_invalid" and wrong.extra["attempts_left"] == 3
    assert localized_message(wrong.code, "en", 422, wrong.user_text, None) == (
        "The payment PIN is not correct. Attempts left before it is locked: 3."
    )
    assert localized_message(wrong.code, "zh-CN", 422, wrong.user_text, None) == (
        "支付密码错误，还可以再试 3 次，之后将被锁定。"
    )
    locked = wrong_proof("pin", pin_attempts_left=0, pin_locked_until=1_800_000_000_000_000)
    assert locked.extra["next_step"] == "try_after_unlock" and locked.extra["locked_until"]
    assert "locked" in localized_message(locked.code, "en", 422, locked.user_text, None)
    other = wrong_proof("totp")
    assert other.user_text is None and "attempts_left" not in other.extra


def test_the_headers_message_says_what_is_too_large_and_what_to_do() -> None:
    en, zh = messages("en")["error.headers_too_large"], messages("zh-CN")["error.headers_too_large"]
    assert "headers" in en and "cookies" in en and "Please try again" not in en
    assert "请求头" in zh and "Cookie" in zh


def test_the_main_wallet_is_named_in_the_readers_language() -> None:
    assert shown_wallet_name("main", MAIN_WALLET_NAME, "zh-CN") == "主钱包"
    assert shown_wallet_name("main", MAIN_WALLET_NAME, "en") == "Main wallet"
    assert shown_wallet_name("sub", MAIN_WALLET_NAME, "zh-CN") == MAIN_WALLET_NAME  # a pocket called Main
    assert shown_wallet_name("sub", "旅行", "en") == "旅行"


def test_a_renamed_error_names_its_new_field() -> None:
    original = invalid.text_length("name", 40, shown="full_name")
    renamed = invalid.renamed(original, "account_name")
    assert renamed.extra["field"] == "account_name" and "account_name" in renamed.detail
    assert localized_message("validation_error", "zh-CN", 422, renamed.user_text, "account_name") == (
        "户名须为 1 到 40 个字符。"
    )


def test_bad_input_with_a_field_but_no_message_still_names_the_field() -> None:
    assert localized_message("validation_error", "zh-CN", 422, None, "memo") == "备注填写有误，请检查后重试。"
    assert localized_message("validation_error", "en", 422, None, "memo") == (
        "The memo is not valid. Check it and try again."
    )
    assert (
        localized_message("validation_error", "en", 422, None, None)
        == messages("en")["error.validation_error"]
    )


def test_weak_credentials_say_their_first_reason() -> None:
    pin = weak_pin(["not_six_digits"])
    assert pin.code == "weak_pin" and pin.extra["reasons"] == ["not_six_digits"]
    assert pin.extra["next_step"] == "check_input"
    assert localized_message("weak_pin", "zh-CN", 422, pin.user_text, None) == "支付密码必须是 6 位数字。"
    sequential = weak_pin(["sequential", "common"])
    assert "next_step" not in sequential.extra
    assert "123456" in localized_message("weak_pin", "en", 422, sequential.user_text, None)
    short = weak_password(["too_short", "too_weak"])
    assert localized_message("weak_password", "en", 422, short.user_text, None) == (
        "The password is too short: use at least 8 characters."
    )


# -- schema validation errors --------------------------------------------------------------------------


class _Money(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: StrictInt = Field(ge=1, le=1000)
    currency: StrictStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(max_length=5)
    amount: _Money
    events: list[StrictStr] = Field(default_factory=list, max_length=2)


def _pydantic_errors(data: Any) -> list[dict[str, Any]]:
    try:
        _Body.model_validate(data)
    except ValidationError as exc:
        return [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
    raise AssertionError("valid")


def test_each_schema_error_gets_its_field_and_a_message() -> None:
    errors = _pydantic_errors(
        {"name": "toolong", "amount": {"amount": 0, "currency": 1, "x": 1}, "events": ["a", "b", "c"]}
    )
    described = describe_validation_errors(errors, "zh-CN", "application/json")
    by_field = {e["field"]: e["message"] for e in described.errors}
    assert by_field == {
        "name": "名称太长，最多 5 个字符。",
        "amount.amount": "金额不能少于 ¥0.01（1 分）。",
        "amount.currency": "币种须以文本形式发送，即放在英文双引号中的 JSON 字符串，而不是数字。",
        "amount.x": "请求中不应包含「amount.x」，请删除后重试。",
        "events": "事件类型最多 2 项。",
    }
    assert described.user_text == variant_for("string_too_long", "name", {"max_length": 5}, json_body=True)
    assert (
        described.detail.startswith("the request is not valid: name: ") and "(and 4 more)" in described.detail
    )
    for entry in described.errors:
        assert {"loc", "msg", "type", "field", "message"} <= entry.keys()


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/plain", "not_json_content_type"),
        ("application/x-www-form-urlencoded", "not_json_content_type"),
        (None, "not_json_content_type"),
        ("application/json", "body_not_object"),
        ("application/merge-patch+json; charset=utf-8", "body_not_object"),
    ],
)
def test_a_body_that_is_not_a_json_object(content_type: str | None, expected: str) -> None:
    error = {"loc": ("body",), "msg": "Input should be a valid dictionary", "type": "model_attributes_type"}
    described = describe_validation_errors([error], "en", content_type)
    assert described.user_text.variant == expected
    assert "field" not in described.errors[0]


def test_a_missing_body_and_broken_json() -> None:
    for content_type in (None, "application/json"):
        missing = describe_validation_errors(
            [{"loc": ("body",), "msg": "Field required", "type": "missing"}], "en", content_type
        )
        assert missing.errors[0]["message"] == (
            "The request body is empty. Send this request's fields as a JSON object, with the header "
            "Content-Type: application/json."
        )
    broken = describe_validation_errors(
        [{"loc": ("body", 7), "msg": "JSON decode error", "type": "json_invalid"}],
        "zh-CN",
        "application/json",
    )
    assert broken.errors[0]["message"] == "请求内容不是有效的 JSON，请检查后重新发送。"
    assert "field" not in broken.errors[0]  # 7 is a character position, not a field


def test_literal_choices_and_validators_that_name_their_variant() -> None:
    literal = variant_for(
        "literal_error", "budget.on_limit", {"expected": "'warn' or 'block'"}, json_body=True
    )
    assert literal == UserText(
        "validation_error", "one_of", {"field": "budget.on_limit", "choices": ["warn", "block"]}
    )
    currency = unknown_currency("cny")
    assert (currency.type, currency.context) == ("currency_case", {"suggestion": "CNY"})
    assert variant_for(currency.type, "amount.currency", currency.context or {}, json_body=True) == UserText(
        "validation_error", "currency_case", {"field": "amount.currency", "suggestion": "CNY"}
    )
    one = exactly_one_of("wallet_id", "phone")
    on_body = variant_for(one.type, "", one.context or {}, json_body=True)
    assert specific_message(on_body, "zh-CN") == "请求中须填写且只能填写以下一项：wallet_id、phone。"
    assert variant_for("something_new", "memo", {}, json_body=True).variant == "invalid"


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("body",), ""),
        (("body", "amount", "currency"), "amount.currency"),
        (("body", "events", 0), "events[0]"),
        (("query", "limit"), "limit"),
        (("body", "to", "wallet_id"), "to.wallet_id"),
    ],
)
def test_field_paths(loc: tuple[Any, ...], path: str) -> None:
    assert field_path(loc) == path


def test_a_problem_carries_the_specific_message() -> None:
    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/v1/x",
            "query_string": b"",
            "headers": [(b"accept-language", b"zh-CN")],
        }
    )
    body = json.loads(
        bytes(
            problem(
                request,
                "validation_error",
                "x",
                **invalid.phone("new_phone").extra,
                user_text=invalid.phone("new_phone").user_text,
            ).body
        )
    )
    assert body["user_message"].startswith("新手机号格式不正确")
    assert body["field"] == "new_phone" and body["reason"] == "invalid_phone"
    assert_helpful(body, "zh-CN")
    assert re.search("请核对", body["next_step_message"])

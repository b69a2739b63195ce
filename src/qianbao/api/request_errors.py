"""Schema validation errors (pydantic, via FastAPI) described for people, in zh-CN and en.

Each error of `RequestValidationError.errors()` becomes an `errors[]` entry: pydantic's own `loc`, `msg`
and `type` (technical English, kept as they were), plus `field` (its JSON path, `amount.currency`) and
`message` (what is wrong and what to do, in the negotiated language). The first error is the problem's
`user_message`. Each pydantic error type maps to a `validation_error` message variant; a schema validator
can name a variant itself by raising `PydanticCustomError("<variant>", "...", {<its parameters>})`.

Some readings need more than the error type: a number sent for text is told to go in quotes (a PIN as
"123456"), and the bounds of an amount of money are said in money (¥0.01) when it is in CNY. A route whose
parameter means something else than the usual label of its name registers its own (`labelled`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic_core import PydanticCustomError
from starlette.requests import Request

from qianbao.error_codes import FIELD_LABEL_BY_NAME, VARIANT_BY_MSGID, user_text
from qianbao.error_messages import specific_message, user_message
from qianbao.errors import UserText
from qianbao.invalid import AMOUNT_CURRENCY, currency_hint
from qianbao.money import Money

# pydantic error types that need nothing but the field to be described.
PLAIN_VARIANTS: Mapping[str, str] = {
    "missing": "required",
    "string_type": "not_text",
    "int_type": "not_whole_number",
    "int_parsing": "not_whole_number",
    "int_from_float": "not_whole_number",
    "float_type": "not_number",
    "float_parsing": "not_number",
    "bool_type": "not_boolean",
    "bool_parsing": "not_boolean",
    "dict_type": "not_object",
    "model_type": "not_object",
    "model_attributes_type": "not_object",
    "list_type": "not_list",
    "extra_forbidden": "extra_field",
    "string_pattern_mismatch": "invalid_format",
    "url_parsing": "invalid_format",
    "url_scheme": "invalid_format",
    "url_type": "invalid_format",
    "date_type": "date",
    "date_parsing": "date",
    "date_from_datetime_parsing": "date",
    "datetime_type": "date_time",
    "datetime_parsing": "date_time",
    "datetime_from_date_parsing": "date_time",
    "timezone_aware": "needs_time_zone",
}
# pydantic error types described with one of their context values: (variant, parameter, context key).
BOUNDED_VARIANTS: Mapping[str, tuple[str, str, str]] = {
    "string_too_long": ("too_long", "max", "max_length"),
    "too_short": ("too_few_items", "min", "min_length"),
    "too_long": ("too_many_items", "max", "max_length"),
    "greater_than_equal": ("too_small", "min", "ge"),
    "less_than_equal": ("too_large", "max", "le"),
    "greater_than": ("greater_than", "than", "gt"),
    "less_than": ("less_than", "than", "lt"),
}
# How a message names the body as a whole (a model validator of the body failed): label `field.body`.
BODY = "body"
BODY_IS_NOT_AN_OBJECT = frozenset({"dict_type", "model_type", "model_attributes_type"})
# Text fields that hold a six-digit PIN or one-time code (by the last segment of their path): a JSON number
# sent for one is told to be six digits in quotes.
SIX_DIGIT_FIELDS = frozenset({"pin", "code", "new_code", "old_code", "totp_code"})
# Whole-number fields that hold an amount of money in minor units (`amount.amount`, the history filters).
AMOUNT_FIELDS = frozenset({"amount", "min_amount", "max_amount"})
MONEY_BOUNDS: Mapping[str, tuple[str, str, str]] = {
    "greater_than_equal": ("amount_too_small", "min", "least"),
    "less_than_equal": ("amount_too_large", "max", "most"),
}
_QUOTED = re.compile(r"'([^']*)'")


@dataclass(frozen=True, slots=True)
class DescribedErrors:
    detail: str
    user_text: UserText
    errors: list[dict[str, Any]]


def describe_validation_errors(
    raw: Sequence[Mapping[str, Any]],
    language: str,
    content_type: str | None,
    *,
    body: object = None,
    labels: Mapping[str, str] | None = None,
) -> DescribedErrors:
    """The problem's parts for a request that failed schema validation (at least one error). `body` is the
    parsed JSON body (for the currency of an amount), `labels` the route's own field labels."""
    json_body = _is_json(content_type)
    errors: list[dict[str, Any]] = []
    texts: list[UserText] = []
    for error in raw:
        loc = list(error.get("loc", ()))
        kind = str(error.get("type", ""))
        field = "" if kind == "json_invalid" else field_path(loc)  # its loc is a character position
        text = variant_for(
            kind,
            field,
            error.get("ctx") or {},
            json_body=json_body,
            given=error.get("input"),
            currency=_amount_currency(loc, body),
        )
        entry: dict[str, Any] = {"loc": loc, "msg": str(error.get("msg", "")), "type": kind}
        if field:
            entry["field"] = field
        entry["message"] = specific_message(text, language, labels=labels) or user_message(
            "validation_error", language, 422
        )
        errors.append(entry)
        texts.append(text)
    first = errors[0] if errors else {"msg": "the request is not valid"}
    where = f"{first['field']}: " if first.get("field") else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    detail = f"the request is not valid: {where}{first['msg']}{more}"
    return DescribedErrors(detail, texts[0] if texts else user_text("validation_error", "not_json"), errors)


def field_path(loc: Sequence[object]) -> str:
    """`["body", "amount", "currency"]` → `amount.currency`; `["body", "events", 0]` → `events[0]`;
    `["query", "limit"]` → `limit`; the body itself → the empty string."""
    path = ""
    for part in loc[1:]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def variant_for(
    kind: str,
    field: str,
    ctx: Mapping[str, Any],
    *,
    json_body: bool,
    given: object = None,
    currency: str | None = AMOUNT_CURRENCY,
) -> UserText:
    """The message variant that says what is wrong with `field` for a pydantic error `kind`; `given` is the
    value sent, `currency` that of an amount at `field` (its bounds are said in money in CNY)."""
    if kind == "json_invalid":
        return user_text("validation_error", "not_json")
    if not field:  # the body itself: empty, sent as text or a form, or JSON but not an object
        if kind == "missing":
            return user_text("validation_error", "body_required")
        if not json_body:
            return user_text("validation_error", "not_json_content_type")
        if kind in BODY_IS_NOT_AN_OBJECT:
            return user_text("validation_error", "body_not_object")
    last = field.rsplit(".", 1)[-1]
    if kind == "string_type" and isinstance(given, int | float) and not isinstance(given, bool):
        variant = "six_digits_as_text" if last in SIX_DIGIT_FIELDS else "number_as_text"
        return user_text("validation_error", variant, field=field)
    bound = ctx.get(BOUNDED_VARIANTS[kind][2]) if kind in MONEY_BOUNDS else None
    if last in AMOUNT_FIELDS and currency == AMOUNT_CURRENCY and type(bound) is int:
        variant, param, money = MONEY_BOUNDS[kind]
        shown = {param: bound, money: Money(bound, AMOUNT_CURRENCY)}
        return user_text("validation_error", variant, field=field, **shown)
    if kind in PLAIN_VARIANTS:
        return user_text("validation_error", PLAIN_VARIANTS[kind], field=field)
    if kind == "string_too_short":
        minimum = ctx.get("min_length")
        if isinstance(minimum, int) and minimum > 1:
            return user_text("validation_error", "too_short", field=field, min=minimum)
        return user_text("validation_error", "required", field=field)
    if kind in BOUNDED_VARIANTS:
        variant, param, key = BOUNDED_VARIANTS[kind]
        bound = ctx.get(key)
        if isinstance(bound, int | float) and not isinstance(bound, bool):
            return user_text("validation_error", variant, field=field, **{param: bound})
    if kind in ("literal_error", "enum"):
        choices = _QUOTED.findall(str(ctx.get("expected", "")))
        if choices:
            return user_text("validation_error", "one_of", field=field, choices=choices)
    own = VARIANT_BY_MSGID.get(f"error.validation_error.{kind}")
    if own is not None and set(own.params) - {"field"} <= set(ctx):
        params = {name: ctx[name] for name in own.params if name != "field"}
        return user_text("validation_error", kind, field=field or BODY, **params)
    return user_text("validation_error", "invalid", field=field)


def _amount_currency(loc: Sequence[object], body: object) -> str | None:
    """The currency of the amount at `loc`: the `currency` beside it in the body, else (a query parameter,
    or no currency sent) `AMOUNT_CURRENCY`, every wallet's. None when the one beside it is not text."""
    if not loc or loc[0] != "body":
        return AMOUNT_CURRENCY
    holder = body
    for part in loc[1:-1]:
        if isinstance(holder, Mapping) and isinstance(part, str):
            holder = holder.get(part)
        elif isinstance(holder, list) and isinstance(part, int) and 0 <= part < len(holder):
            holder = holder[part]
        else:
            return AMOUNT_CURRENCY
    given = holder.get("currency", AMOUNT_CURRENCY) if isinstance(holder, Mapping) else AMOUNT_CURRENCY
    return given if isinstance(given, str) else None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


# -- for schema validators ---------------------------------------------------------------------------


def schema_error(variant: str, message: str, **params: Any) -> PydanticCustomError:
    """What a schema validator raises to be described by `validation_error` variant `variant` with
    `params` (the field is where pydantic found the error). `message` is pydantic's English `msg`."""
    user_text("validation_error", variant, **params)  # a registered variant with its parameters
    return PydanticCustomError(variant, message.replace("{", "(").replace("}", ")"), params)


def exactly_one_of(*names: str) -> PydanticCustomError:
    return schema_error("exactly_one_of", f"give exactly one of {', '.join(names)}", choices=list(names))


def unknown_currency(given: str) -> PydanticCustomError:
    """Not a usable ISO 4217 code; `cny`, `RMB` or `¥` get a did-you-mean `CNY`."""
    hint = currency_hint(given)
    if hint is not None:
        variant, suggestion = hint
        return schema_error(variant, f"the ISO 4217 code is {suggestion}", suggestion=suggestion)
    return schema_error("unknown_currency", "not a known ISO 4217 currency code")


# -- route labels ------------------------------------------------------------------------------------

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_ROUTE_LABELS: dict[Callable[..., Any], Mapping[str, str]] = {}


def labelled(labels: Mapping[str, str]) -> Callable[[Endpoint], Endpoint]:
    """Names some parameters of an endpoint by other labels than the usual ones of their names (path →
    label name, a `field.<name>` of the registry): history's `from` and `to` are a period's start and
    end, while elsewhere `from` is a payer and `to` a recipient. Applies to every message of the route."""
    unknown = set(labels.values()) - FIELD_LABEL_BY_NAME.keys()
    if unknown:
        raise KeyError(f"unregistered field labels {sorted(unknown)}")
    frozen = MappingProxyType(dict(labels))

    def register(endpoint: Endpoint) -> Endpoint:
        _ROUTE_LABELS[endpoint] = frozen
        return endpoint

    return register


def route_labels(request: Request) -> Mapping[str, str]:
    """The labels the request's route registered with `labelled` (none for most routes)."""
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    return _ROUTE_LABELS.get(endpoint, {}) if callable(endpoint) else {}

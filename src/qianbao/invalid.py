"""Bad input, said precisely: one constructor per kind of problem, each an `InvalidInput`
(`validation_error`) with technical English `detail`, the `field` it concerns, and a `UserText` that tells
the user in their language what is wrong and what to do (`error.validation_error.<variant>` in the
catalogs).

    raise invalid.text_length("name", MAX_NAME)        # "名称须为 1 到 20 个字符。"
    raise invalid.one_of("purpose", SUB_WALLET_PURPOSES)

`because(variant, detail, …)` covers the kinds without a constructor of their own. Extras (`reason=`,
`unknown=`…) go into the problem body as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qianbao.error_codes import user_text
from qianbao.errors import InvalidInput, UserText
from qianbao.money import Money, UnknownCurrencyError, currency

# Amounts checked here are in CNY (every wallet's currency): their bounds are said in yuan and fen.
AMOUNT_CURRENCY = "CNY"
# Other names and signs people write for a currency, and the ISO 4217 code they mean.
CURRENCY_ALIASES = {"RMB": "CNY", "¥": "CNY", "￥": "CNY", "元": "CNY", "人民币": "CNY", "YUAN": "CNY"}


def because(
    variant: str,
    detail: str,
    *,
    field: str | None = None,
    params: Mapping[str, Any] | None = None,
    **extra: Any,
) -> InvalidInput:
    """Bad input described by the message variant `variant` with `params` (the field comes from `field`)."""
    text = user_text("validation_error", variant, **dict(params or {}))
    if field is not None:
        extra["field"] = field
    return InvalidInput(detail, user_text=text, **extra)


def invalid(field: str, detail: str, **extra: Any) -> InvalidInput:
    """The value of `field` is not valid, with no more to say than `detail` does in English."""
    return because("invalid", detail, field=field, **extra)


def invalid_format(field: str, detail: str, **extra: Any) -> InvalidInput:
    return because("invalid_format", detail, field=field, **extra)


def required(field: str, detail: str | None = None) -> InvalidInput:
    return because("required", detail or f"{field} is required", field=field)


def not_text(field: str) -> InvalidInput:
    return because("not_text", f"{field} must be text", field=field)


def text_length(
    field: str, maximum: int, *, minimum: int = 1, printable: bool = False, shown: str | None = None
) -> InvalidInput:
    """Text of `minimum` to `maximum` characters (printable: no control characters either). `shown` names
    the field in the message when its label differs from its path (`name` at sign-up is the user's name)."""
    kind = "printable characters" if printable else "characters"
    params: dict[str, Any] = {"min": minimum, "max": maximum}
    if shown is not None:
        params["field"] = shown
    return because(
        "text_length", f"{field} must be {minimum} to {maximum} {kind}", field=field, params=params
    )


def too_long(field: str, maximum: int, *, printable: bool = False) -> InvalidInput:
    kind = "printable characters" if printable else "characters"
    return because(
        "too_long", f"{field} must be at most {maximum} {kind}", field=field, params={"max": maximum}
    )


def control_characters(field: str, *, shown: str | None = None) -> InvalidInput:
    params = {} if shown is None else {"field": shown}
    return because(
        "control_characters", f"{field} must not contain control characters", field=field, params=params
    )


def one_of(field: str, choices: Sequence[str]) -> InvalidInput:
    listed = ", ".join(choices)
    return because(
        "one_of", f"{field} must be one of {listed}", field=field, params={"choices": list(choices)}
    )


def only_from(field: str, choices: Sequence[str], detail: str, **extra: Any) -> InvalidInput:
    """A list of which some values are not among `choices`."""
    return because("only_from", detail, field=field, params={"choices": list(choices)}, **extra)


def exactly_one_of(field: str, choices: Sequence[str]) -> InvalidInput:
    listed = ", ".join(choices)
    return because(
        "exactly_one_of",
        f"{field} needs exactly one of {listed}",
        field=field,
        params={"choices": list(choices)},
    )


def at_least_one_of(field: str, choices: Sequence[str]) -> InvalidInput:
    listed = ", ".join(choices)
    return because(
        "at_least_one_of", f"give at least one of {listed}", field=field, params={"choices": list(choices)}
    )


def cursor(field: str = "cursor") -> InvalidInput:
    return because("cursor", f"invalid {field}: pass back the next_cursor of a previous page", field=field)


def out_of_range(field: str, low: int, high: int) -> InvalidInput:
    return because(
        "out_of_range", f"{field} must be {low} to {high}", field=field, params={"min": low, "max": high}
    )


def amount_range(field: str, low: int, high: int) -> InvalidInput:
    """An amount of CNY in fen from `low` to `high`, said in money too ("¥0.01 to …")."""
    return because(
        "amount_range",
        f"{field} must be a whole number of minor units from {low} to {high}",
        field=field,
        params={
            "min": low,
            "max": high,
            "least": Money(low, AMOUNT_CURRENCY),
            "most": Money(high, AMOUNT_CURRENCY),
        },
    )


def seconds_range(field: str, low: int, high: int) -> InvalidInput:
    return because(
        "seconds_range",
        f"{field} must be {low} to {high} seconds",
        field=field,
        params={"min": low, "max": high},
    )


def phone(field: str = "phone", detail: str | None = None) -> InvalidInput:
    return because(
        "phone", detail or f"{field} is not a valid phone number", field=field, reason="invalid_phone"
    )


def six_digits(field: str) -> InvalidInput:
    return because("six_digits", f"{field} must be six digits", field=field)


def date(field: str) -> InvalidInput:
    return because("date", f"{field} must be a date, YYYY-MM-DD", field=field)


def date_time(field: str) -> InvalidInput:
    return because("date_time", f"{field} must be an RFC 3339 date-time with a time zone", field=field)


def needs_time_zone(field: str) -> InvalidInput:
    return because("needs_time_zone", f"{field} needs a time zone offset (Z or +08:00)", field=field)


def within_years(field: str, years: int, detail: str) -> InvalidInput:
    return because("within_years", detail, field=field, params={"years": years})


def before(field: str, other: str) -> InvalidInput:
    return because("before", f"{field} must be before {other}", field=field, params={"other": other})


def not_above(field: str, other: str) -> InvalidInput:
    return because("not_above", f"{field} must not be above {other}", field=field, params={"other": other})


def unknown_currency(field: str, given: object) -> InvalidInput:
    """Not an ISO 4217 code; a lower-case known one (`cny`) or another name for one (`RMB`, `¥`) gets a
    did-you-mean."""
    hint = currency_hint(given)
    if hint is not None:
        variant, suggestion = hint
        return because(
            variant,
            f"{field} must be an ISO 4217 code: {suggestion}, not {given}",
            field=field,
            params={"suggestion": suggestion},
        )
    return because("unknown_currency", f"{field} is not a known ISO 4217 code", field=field)


def currency_hint(given: object) -> tuple[str, str] | None:
    """(message variant, ISO 4217 code) for a currency written otherwise than its code: `currency_alias`
    for another name or sign (`RMB`, `rmb`, `¥`, `元` → CNY), `currency_case` for a code in lower case
    (`cny`); None when there is nothing to suggest."""
    if not isinstance(given, str):
        return None
    alias = CURRENCY_ALIASES.get(given.strip().upper())
    if alias is not None:
        return "currency_alias", alias
    suggestion = currency_suggestion(given)
    return None if suggestion is None else ("currency_case", suggestion)


def currency_suggestion(given: object) -> str | None:
    """The upper-case code a mistyped currency code stands for (`cny` → `CNY`), or None."""
    if not isinstance(given, str) or len(given) != 3 or given.upper() == given:
        return None
    try:
        return currency(given.upper()).code
    except UnknownCurrencyError:
        return None


def currency_only(field: str, expected: str, detail: str) -> InvalidInput:
    return because("currency_only", detail, field=field, params={"currency": expected})


def needs_user() -> InvalidInput:
    return because("needs_user", "this operation needs a signed-in user")


def renamed(exc: InvalidInput, field: str) -> InvalidInput:
    """The same bad input reported for another field (a shared cleaner used for a field of another name,
    such as a sign-up name check for a bank account's holder)."""
    old = exc.extra.get("field")
    detail = exc.detail.replace(old, field, 1) if isinstance(old, str) and old else exc.detail
    text = exc.user_text
    if text is not None:
        text = UserText(text.code, text.variant, {k: v for k, v in text.params.items() if k != "field"})
    return InvalidInput(detail, user_text=text, **{**exc.extra, "field": field})

"""The registry of error codes: every `code` the API can answer, its HTTP status and what to do next.

One entry per code. The user-facing text is not here: it lives in the gettext catalogs
(`qianbao/locale/<lang>/LC_MESSAGES/qianbao.po`, msgid `error.<code>` and `next_step.<name>`) so that
translators edit catalogs, not code. `qianbao.api.problems` renders a problem from an entry, and
`qianbao errors docs` writes docs/errors.md from this table.

Adding a code:

1. add `ErrorCode("my_code", 422, "lower_amount", area=PAYMENTS, when="…")` to `ERROR_CODES` below
   (the next step may be `None`; a new next step goes into `NEXT_STEPS`);
2. run `qianbao errors sync-catalogs`, then fill the new empty `msgstr` in both .po files;
3. run `qianbao errors docs --output docs/errors.md`.

tests/unit/test_error_catalog.py fails until all three are done, and also when a code raised in src is
missing here.

Specific messages. A code's message (`error.<code>`) is the fallback; an error may carry a `UserText`
naming a more specific entry, `error.<code>.<variant>` with parameters (which field is wrong, the
longest length allowed…). Variants are registered in `MESSAGE_VARIANTS` with their parameters, and
built with `user_text(code, variant, **params)`; the field labels that `{field}` shows are in
`FIELD_LABELS`. Adding either follows the same three steps as a code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from qianbao.errors import UserText

GENERAL = "General"
SIGN_IN = "Sign-in and security"
IDENTITY = "Identity verification (KYC)"
PAYMENTS = "Payments and transfers"
WALLETS = "Wallets"
MERCHANTS = "Merchants, QR codes and checkout"
INTEGRATIONS = "API integrations"
AREAS = (PAYMENTS, WALLETS, MERCHANTS, SIGN_IN, IDENTITY, INTEGRATIONS, GENERAL)


@dataclass(frozen=True, slots=True)
class NextStep:
    """What the user can do about an error. `name` is the stable `next_step` value of a problem."""

    name: str
    when: str
    # A second message used when the error says until when a lock lasts (`{until}` in its text).
    has_until_variant: bool = False

    @property
    def msgid(self) -> str:
        return f"next_step.{self.name}"

    @property
    def until_msgid(self) -> str | None:
        return f"next_step.{self.name}.until" if self.has_until_variant else None


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One stable error code. `next_step` is the default; an error may carry its own (`next_step=` in
    its extras), which wins."""

    code: str
    status: int
    next_step: str | None
    area: str
    when: str

    @property
    def msgid(self) -> str:
        return f"error.{self.code}"


NEXT_STEPS: tuple[NextStep, ...] = (
    NextStep("top_up", "Add money to the wallet and try again."),
    NextStep("lower_amount", "Try again with a smaller amount."),
    NextStep("verify_identity", "Complete identity verification (KYC) to get higher limits."),
    NextStep("verify_bank_account", "Link and verify a bank account first."),
    NextStep("try_tomorrow", "Today's limit is used up; it resets at midnight China time."),
    NextStep(
        "try_after_unlock",
        "Wait until the lock ends; the message names the time when the error carries it.",
        has_until_variant=True,
    ),
    NextStep("retry_later", "A temporary condition: wait a moment and try again."),
    NextStep("retry", "Start the operation again from the beginning."),
    NextStep("contact_support", "Contact customer service, quoting the problem's `support_reference`."),
    NextStep("check_input", "Correct what was entered and try again."),
    NextStep("choose_stronger", "Choose a harder-to-guess password or PIN."),
    NextStep("request_new_code", "Ask for a new one-time code."),
    NextStep("sign_in", "Sign in (again)."),
    NextStep("confirm_identity", "Pass a step-up challenge (SMS code, PIN, authenticator or passkey)."),
    NextStep("refresh_code", "Refresh the payment code (付款码) and show the new one."),
    NextStep(
        "enable_payment_codes",
        "Turn payment codes on again in the app (with step-up): a new secret, and new codes.",
    ),
    NextStep("ask_merchant", "Ask the merchant for a new QR code or to start the payment again."),
    NextStep("contact_merchant", "Contact the merchant."),
    NextStep(
        "ask_payee",
        "Do not pay this code; ask the payee (merchant or person) to show a fresh code, and check the "
        "name the app shows.",
    ),
    NextStep("adjust_budget", "Lower the amount or raise the sub-wallet's monthly budget."),
    NextStep("wait_for_approval", "Another operator must approve the action (four-eyes rule)."),
)

ERROR_CODES: tuple[ErrorCode, ...] = (
    # -- payments and transfers ----------------------------------------------------------------------
    ErrorCode(
        "insufficient_funds",
        422,
        "top_up",
        PAYMENTS,
        "The paying wallet's available balance (balance minus holds) is below the amount.",
    ),
    ErrorCode(
        "limit_exceeded_single",
        422,
        "verify_identity",
        PAYMENTS,
        "The amount is above the single-payment limit of the payer's KYC tier. Extras: `limit`, "
        "`remaining`, `kyc_tier`.",
    ),
    ErrorCode(
        "limit_exceeded_daily",
        422,
        "try_tomorrow",
        PAYMENTS,
        "The payment would take the payer over today's outflow limit. Extras: `limit`, `remaining`, "
        "`kyc_tier`.",
    ),
    ErrorCode(
        "balance_cap_exceeded",
        422,
        "lower_amount",
        PAYMENTS,
        "The receiving wallets would hold more than their owner's KYC balance cap. `remaining` is shown "
        "only for one's own wallets.",
    ),
    ErrorCode(
        "currency_mismatch",
        422,
        "check_input",
        PAYMENTS,
        "The amount's currency differs from a wallet's, or the two wallets hold different currencies.",
    ),
    ErrorCode("same_wallet", 422, "check_input", PAYMENTS, "The payer and the payee wallet are the same."),
    ErrorCode(
        "recipient_not_found",
        404,
        "check_input",
        PAYMENTS,
        "No open wallet is registered for the phone number or wallet id paid to.",
    ),
    ErrorCode(
        "risk_declined",
        422,
        "contact_support",
        PAYMENTS,
        "The risk engine declined the payment.",
    ),
    ErrorCode(
        "payment_confirmation_expired",
        422,
        "retry",
        PAYMENTS,
        "A payment waiting for the customer's confirmation (step-up) was not confirmed in time; its hold "
        "was voided.",
    ),
    ErrorCode(
        "refund_exceeds_payment",
        422,
        "lower_amount",
        PAYMENTS,
        "The refund is more than the payment's amount not yet refunded.",
    ),
    ErrorCode(
        "payment_not_refundable",
        409,
        "contact_support",
        PAYMENTS,
        "The payment cannot be refunded (it did not succeed, or is fully refunded).",
    ),
    ErrorCode(
        "payment_not_pending",
        409,
        None,
        PAYMENTS,
        "A payment waiting for the customer's confirmation was already confirmed, declined or canceled. "
        "Extras: `payment_id`, `payment_status`.",
    ),
    ErrorCode(
        "request_not_pending",
        409,
        None,
        PAYMENTS,
        "A money request was already paid, declined or canceled.",
    ),
    # -- wallets -------------------------------------------------------------------------------------
    ErrorCode(
        "wallet_frozen",
        423,
        "contact_support",
        WALLETS,
        "A wallet of the operation is frozen, debit-frozen (for paying out) or closed.",
    ),
    ErrorCode(
        "wallet_locked",
        423,
        "try_after_unlock",
        WALLETS,
        "The sub-wallet is locked (a locked pot) and cannot be spent from yet. Extras: `locked_until`.",
    ),
    ErrorCode(
        "budget_exceeded",
        422,
        "adjust_budget",
        WALLETS,
        "The payment would go over the sub-wallet's monthly budget, set to block at 100%.",
    ),
    ErrorCode(
        "wallet_close_refused",
        409,
        None,
        WALLETS,
        "The wallet cannot be closed: it is the main wallet, money is on hold, or the main wallet has no "
        "room for its balance. Extras: `reason` (`main_wallet`, `pending_holds`, `exceeds_ceiling`).",
    ),
    # -- merchants, QR codes, payment codes and checkout -----------------------------------------------
    ErrorCode("merchant_not_found", 404, "check_input", MERCHANTS, "No such merchant (or not yours)."),
    ErrorCode(
        "merchant_inactive",
        423,
        "contact_merchant",
        MERCHANTS,
        "The merchant is suspended or closed and cannot take payments.",
    ),
    ErrorCode(
        "qr_code_invalid",
        422,
        "check_input",
        MERCHANTS,
        "The QR payload is malformed, fails its CRC, or is not a qianbao merchant code.",
    ),
    ErrorCode(
        "qr_code_expired",
        422,
        "ask_merchant",
        MERCHANTS,
        "A dynamic merchant QR code is past its expiry.",
    ),
    ErrorCode(
        "qr_code_used",
        409,
        "ask_merchant",
        MERCHANTS,
        "A dynamic (single-use) merchant QR code was already paid.",
    ),
    ErrorCode(
        "qr_code_altered",
        422,
        "ask_payee",
        MERCHANTS,
        "A qianbao QR code differs from the code qianbao issued for the payee its id names (another "
        "merchant's name, an edited amount…), or a receive code's signature does not hold (a swapped "
        "wallet id or amount). Nothing is paid. Extras: `mismatches` (`field`, `tag`, `in_code`, "
        "`on_record`).",
    ),
    ErrorCode(
        "qr_code_unsigned",
        422,
        "ask_payee",
        MERCHANTS,
        "A personal receive code without a signature (issued before receive codes were signed): it "
        "cannot be verified. The payee shows a fresh code.",
    ),
    ErrorCode(
        "amount_mismatch",
        422,
        "check_input",
        MERCHANTS,
        "The amount sent differs from the amount embedded in a dynamic QR code.",
    ),
    ErrorCode(
        "payment_code_invalid",
        422,
        "refresh_code",
        MERCHANTS,
        "The customer's payment code is wrong, expired, already used or from another device.",
    ),
    ErrorCode(
        "payment_code_blocked",
        423,
        "enable_payment_codes",
        MERCHANTS,
        "`GET /v1/payment-codes/current`: too many wrong codes named this device, from any merchants, so it "
        "shows no codes until the customer enables payment codes again. A merchant presenting any code of "
        "it gets `payment_code_invalid`.",
    ),
    ErrorCode(
        "intent_state_conflict",
        409,
        None,
        MERCHANTS,
        "The payment intent is not in a state that allows the action (already succeeded, canceled…).",
    ),
    ErrorCode(
        "intent_expired",
        422,
        "ask_merchant",
        MERCHANTS,
        "The payment intent passed its expiry before it was confirmed.",
    ),
    # -- sign-in and security --------------------------------------------------------------------------
    ErrorCode("unauthenticated", 401, "sign_in", SIGN_IN, "No valid session token or API key."),
    ErrorCode(
        "step_up_required",
        401,
        "confirm_identity",
        SIGN_IN,
        "The operation needs fresh proof. Extras: `challenge_id`, `methods`, `reasons`.",
    ),
    ErrorCode("forbidden", 403, None, SIGN_IN, "Authenticated, but not allowed to do this."),
    ErrorCode(
        "rate_limited",
        429,
        "retry_later",
        SIGN_IN,
        "Too many attempts in a short time. Extras: `retry_after` (seconds, also the Retry-After header).",
    ),
    ErrorCode(
        "pin_locked",
        423,
        "try_after_unlock",
        SIGN_IN,
        "The payment PIN is locked after too many wrong attempts. Extras: `retry_after`, `locked_until_us`.",
    ),
    ErrorCode(
        "account_frozen",
        423,
        "contact_support",
        SIGN_IN,
        "The user's account is frozen (by risk or an operator): no payments, no security changes.",
    ),
    ErrorCode(
        "weak_password",
        422,
        "choose_stronger",
        SIGN_IN,
        "The password policy refuses the password. Extras: `reasons`.",
    ),
    ErrorCode(
        "weak_pin",
        422,
        "choose_stronger",
        SIGN_IN,
        "The PIN is easy to guess (repeated, sequential, a date, from the phone number). Extras: `reasons`.",
    ),
    ErrorCode(
        "verification_failed",
        422,
        "request_new_code",
        SIGN_IN,
        "A one-time code is wrong, expired, already used, or was never sent.",
    ),
    ErrorCode(
        "second_factor_invalid",
        422,
        "check_input",
        SIGN_IN,
        "The TOTP code, recovery code or passkey assertion was not correct.",
    ),
    ErrorCode(
        "second_factor_required",
        422,
        "confirm_identity",
        SIGN_IN,
        "The account has a second factor and the request did not include one.",
    ),
    ErrorCode(
        "challenge_invalid",
        422,
        "retry",
        SIGN_IN,
        "A step-up challenge is unknown, expired, failed, already used, or for another operation.",
    ),
    ErrorCode("passkey_invalid", 422, "retry", SIGN_IN, "A passkey registration or assertion failed."),
    ErrorCode(
        "passkey_already_registered",
        409,
        None,
        SIGN_IN,
        "The passkey is already registered (to this or another account).",
    ),
    ErrorCode(
        "phone_taken",
        409,
        "sign_in",
        SIGN_IN,
        "Sign-up or a phone change with a number that already has an account.",
    ),
    ErrorCode(
        "recovery_not_possible",
        422,
        "contact_support",
        SIGN_IN,
        "Self-service account recovery failed (deliberately not saying which check).",
    ),
    # -- identity verification -------------------------------------------------------------------------
    ErrorCode(
        "kyc_rejected",
        422,
        "check_input",
        IDENTITY,
        "Identity verification declined the details (name and ID number do not match, bank account refused).",
    ),
    ErrorCode(
        "id_number_in_use",
        409,
        "contact_support",
        IDENTITY,
        "The ID number is already verified for another user.",
    ),
    ErrorCode(
        "approval_required",
        202,
        "wait_for_approval",
        IDENTITY,
        "An operator action needs a second operator's approval; it was queued, not done.",
    ),
    # -- API integrations ------------------------------------------------------------------------------
    ErrorCode(
        "idempotency_key_reused",
        409,
        None,
        INTEGRATIONS,
        "The Idempotency-Key was already used with a different request body.",
    ),
    ErrorCode(
        "idempotency_key_in_use",
        409,
        "retry_later",
        INTEGRATIONS,
        "A request with the same Idempotency-Key is still being processed.",
    ),
    ErrorCode(
        "signature_invalid",
        401,
        None,
        INTEGRATIONS,
        "A signed API request's signature does not verify.",
    ),
    ErrorCode(
        "signature_expired",
        401,
        None,
        INTEGRATIONS,
        "A signed API request's timestamp is outside the allowed window.",
    ),
    ErrorCode(
        "signature_malformed",
        401,
        None,
        INTEGRATIONS,
        "The request-signing headers are missing or malformed.",
    ),
    ErrorCode(
        "signature_replayed",
        401,
        None,
        INTEGRATIONS,
        "A signed request's (key, nonce) was already seen inside the replay window.",
    ),
    # -- general ---------------------------------------------------------------------------------------
    ErrorCode(
        "validation_error",
        422,
        "check_input",
        GENERAL,
        "Bad input (a field missing, malformed or out of range). Nothing was changed. Extras: `errors` "
        "or `field`.",
    ),
    ErrorCode("not_found", 404, None, GENERAL, "No such object, or it is not the caller's."),
    ErrorCode("conflict", 409, None, GENERAL, "The request clashes with the object's current state."),
    ErrorCode("method_not_allowed", 405, None, GENERAL, "The HTTP method is not supported on this path."),
    ErrorCode(
        "payload_too_large",
        413,
        "check_input",
        GENERAL,
        "The request body is larger than the route accepts (64 KiB for JSON, 8 MiB for an image upload by "
        "default); it was not read. Extras: `limit` (bytes).",
    ),
    ErrorCode(
        "request_timeout",
        408,
        "retry",
        GENERAL,
        "An image upload's body did not arrive within the time allowed (30 s); the connection is closed. "
        "Extras: `limit_s`.",
    ),
    ErrorCode(
        "headers_too_large",
        431,
        None,
        GENERAL,
        "The request line and headers are too large, or there are too many header lines. Extras: `limit`, "
        "`limit_count`.",
    ),
    ErrorCode(
        "service_unavailable",
        503,
        "retry_later",
        GENERAL,
        "A dependency (the database…) is not reachable.",
    ),
    ErrorCode("internal_error", 500, "contact_support", GENERAL, "An unexpected error (a bug)."),
)


@dataclass(frozen=True, slots=True)
class MessageVariant:
    """A user message more specific than its code's: msgid `error.<code>.<variant>`, with the named
    `params` as `{placeholders}`. `field` (and `other`) are JSON paths shown by their label, `choices`
    a list of values, numbers are grouped by locale."""

    code: str
    variant: str
    params: tuple[str, ...]
    when: str

    @property
    def msgid(self) -> str:
        return f"error.{self.code}.{self.variant}"


@dataclass(frozen=True, slots=True)
class FieldLabel:
    """How `{field}` names a field of a request in a message (msgid `field.<name>`); the last segment of
    a JSON path is looked up (`amount.currency` → `currency`), an unknown one is shown as the path."""

    name: str
    when: str

    @property
    def msgid(self) -> str:
        return f"field.{self.name}"


def _invalid(variant: str, params: tuple[str, ...], when: str) -> MessageVariant:
    return MessageVariant("validation_error", variant, params, when)


F = ("field",)

MESSAGE_VARIANTS: tuple[MessageVariant, ...] = (
    # -- validation_error: what is wrong with which field ----------------------------------------------
    _invalid("invalid", F, "The field's value is not valid (no more specific message applies)."),
    _invalid("required", F, "A required field is missing or empty."),
    _invalid("not_text", F, "The field must be a string."),
    _invalid(
        "number_as_text",
        F,
        "A number was sent for a field of text made of digits (a phone or card number…): it must be a "
        "JSON string, in quotes.",
    ),
    _invalid(
        "six_digits_as_text",
        F,
        "A number was sent for a six-digit PIN or code: it must be a JSON string of six digits, in quotes.",
    ),
    _invalid("not_whole_number", F, "The field must be an integer."),
    _invalid("not_number", F, "The field must be a number."),
    _invalid("not_boolean", F, "The field must be true or false."),
    _invalid("not_object", F, "The field must be a JSON object."),
    _invalid("not_list", F, "The field must be a JSON array."),
    _invalid("too_short", ("field", "min"), "The text is shorter than `min` characters."),
    _invalid("too_long", ("field", "max"), "The text is longer than `max` characters."),
    _invalid("text_length", ("field", "min", "max"), "The text must be `min` to `max` characters."),
    _invalid("control_characters", F, "The text contains line breaks or other control characters."),
    _invalid("nul_character", (), "The query string or body contains a NUL character."),
    _invalid("too_few_items", ("field", "min"), "The list has fewer than `min` items."),
    _invalid("too_many_items", ("field", "max"), "The list has more than `max` items."),
    _invalid("too_small", ("field", "min"), "The number is below `min`."),
    _invalid("too_large", ("field", "max"), "The number is above `max`."),
    _invalid(
        "amount_too_small",
        ("field", "min", "least"),
        "An amount below `min` minor units; `least` is that bound as money (¥0.01).",
    ),
    _invalid(
        "amount_too_large",
        ("field", "max", "most"),
        "An amount above `max` minor units; `most` is that bound as money.",
    ),
    _invalid("greater_than", ("field", "than"), "The number must be more than `than`."),
    _invalid("less_than", ("field", "than"), "The number must be less than `than`."),
    _invalid("out_of_range", ("field", "min", "max"), "The number must be from `min` to `max`."),
    _invalid(
        "amount_range",
        ("field", "min", "max", "least", "most"),
        "An amount must be a whole number of minor units (fen) from `min` to `max`, that is from `least` to "
        "`most` as money.",
    ),
    _invalid("seconds_range", ("field", "min", "max"), "A duration must be `min` to `max` seconds."),
    _invalid("one_of", ("field", "choices"), "The value must be one of `choices`."),
    _invalid("only_from", ("field", "choices"), "Every value of the list must be one of `choices`."),
    _invalid("exactly_one_of", ("field", "choices"), "Exactly one of `choices` must be given in the field."),
    _invalid("at_least_one_of", ("field", "choices"), "At least one of `choices` must be given."),
    _invalid("extra_field", F, "The request has a field the endpoint does not take."),
    _invalid("not_json", (), "The request body is not valid JSON."),
    _invalid("json_too_deep", (), "The JSON body nests arrays or objects too deeply to be read."),
    _invalid("body_required", (), "The request body is empty, and the endpoint needs a JSON object."),
    _invalid(
        "not_json_content_type",
        (),
        "The body was sent as something else than JSON (text/plain, a form…) to an endpoint taking JSON.",
    ),
    _invalid("body_not_object", (), "The JSON body is not an object (an array, a number…)."),
    _invalid("invalid_format", F, "The text does not have the required format."),
    _invalid("cursor", F, "The page cursor is not one a previous page gave out."),
    _invalid("phone", F, "Not a valid phone number."),
    _invalid("six_digits", F, "A PIN or code must be exactly six digits."),
    _invalid("date", F, "Not a date like 2026-11-30."),
    _invalid("date_time", F, "Not an RFC 3339 date and time with a time zone."),
    _invalid("date_or_date_time", F, "Neither a date nor an RFC 3339 date and time."),
    _invalid("needs_time_zone", F, "A date and time without a time zone offset."),
    _invalid("in_future", F, "The time must be in the future."),
    _invalid("within_years", ("field", "years"), "The date must be from now to at most `years` years ahead."),
    _invalid("before", ("field", "other"), "The field must be earlier than the `other` field."),
    _invalid("not_above", ("field", "other"), "The field must not be more than the `other` field."),
    _invalid("unknown_currency", F, "Not an ISO 4217 currency code."),
    _invalid(
        "currency_case",
        ("field", "suggestion"),
        "A currency code in lower case (cny): `suggestion` is the upper-case code.",
    ),
    _invalid(
        "currency_alias",
        ("field", "suggestion"),
        "Another name or sign for a currency (RMB, ¥, 元): `suggestion` is its ISO 4217 code.",
    ),
    _invalid("currency_only", ("field", "currency"), "Only `currency` is accepted here."),
    _invalid("id_number", F, "Not a valid 18-character resident ID number."),
    _invalid("birth_date", F, "The ID number's birth date is impossible."),
    _invalid("too_young", ("field", "years"), "Identity verification needs an age of at least `years`."),
    _invalid("digits_count", ("field", "min", "max"), "The number must have `min` to `max` digits."),
    _invalid("check_digit", F, "The number's check digit is wrong (a typo)."),
    _invalid("needs_user", (), "The operation needs a signed-in user (not an API key or operator)."),
    _invalid("same_phone", F, "The new phone number is the account's current one."),
    _invalid("pin_not_set", F, "The user has no payment PIN yet."),
    _invalid("idempotency_key", ("max",), "The Idempotency-Key header is empty, too long or not printable."),
    _invalid(
        "idempotency_key_other_payment", (), "The Idempotency-Key was used for a refund of another payment."
    ),
    _invalid("webhook_url", F, "A webhook URL that is not allowed (scheme, host, credentials, fragment)."),
    _invalid("event_types", F, "Unknown webhook event types."),
    _invalid("image_missing", (), "An image upload without a body."),
    _invalid("image_too_large", ("max",), "An image over `max` MiB."),
    _invalid(
        "image_too_many_pixels",
        ("size",),
        "An image with more pixels than `size` (width × height, such as 4096 × 4096) holds.",
    ),
    _invalid("not_an_image", (), "The upload is not an image that can be read."),
    _invalid(
        "unsupported_image_format", ("format",), "An image in another format than PNG, JPEG, WebP or GIF."
    ),
    _invalid("no_qr_code", (), "No QR code was found in the image."),
    _invalid("qr_payload", (), "The text is not a well-formed EMVCo QR payload."),
    _invalid("amount_needed", F, "A QR code without an amount was paid without one."),
    _invalid("device_needed", (), "Payment codes need a session signed in with a device_id."),
    _invalid("main_wallet_setting", F, "The main wallet does not have this setting (sub-wallets only)."),
    _invalid("colour", ("field", "choices"), "A colour that is neither #RRGGBB nor a palette name."),
    _invalid(
        "return_url", F, "A checkout return URL that is not https (http in sandbox) or has credentials."
    ),
    _invalid("cap_cannot_expire", F, "Operators: a balance_cap limit override was given an expiry."),
    _invalid(
        "params_exactly", ("field", "names"), "Operators: an approval's params must hold exactly `names`."
    ),
    _invalid("not_a_hold", F, "Operators: the transfer named is not a pending (held) transfer."),
    _invalid("not_enhanced_application", F, "Operators: the KYC application is not for tier 1 (enhanced)."),
    # -- other codes -----------------------------------------------------------------------------------
    MessageVariant(
        "unauthenticated",
        "bad_credentials",
        (),
        "Signing in: the phone number or password is wrong (never says which).",
    ),
    MessageVariant(
        "unauthenticated",
        "operator_credentials",
        (),
        "Operator sign-in: the username, password or authenticator code is wrong.",
    ),
    MessageVariant(
        "second_factor_invalid",
        "wrong_pin",
        ("attempts_left",),
        "Step-up: the PIN is wrong; `attempts_left` more wrong PINs lock it.",
    ),
    MessageVariant(
        "second_factor_invalid",
        "wrong_pin_locked",
        (),
        "Step-up: the PIN is wrong, and this wrong PIN locked it (the next step says until when).",
    ),
    MessageVariant("weak_pin", "not_six_digits", (), "The PIN is not exactly six digits."),
    MessageVariant("weak_pin", "repeated", (), "The PIN uses only one or two different digits."),
    MessageVariant("weak_pin", "sequential", (), "The PIN is a run of digits (123456, 987654)."),
    MessageVariant("weak_pin", "common", (), "The PIN is one of the most common PINs."),
    MessageVariant("weak_pin", "date_like", (), "The PIN looks like a date (a birthday)."),
    MessageVariant("weak_pin", "from_phone", (), "The PIN is part of the user's phone number."),
    MessageVariant("weak_password", "too_short", ("min",), "The password is shorter than `min` characters."),
    MessageVariant("weak_password", "too_long", ("max",), "The password is longer than `max` characters."),
    MessageVariant("weak_password", "too_common", (), "The password is on a list of common passwords."),
    MessageVariant("weak_password", "too_weak", (), "The password is easy to guess (a pattern, a word…)."),
    MessageVariant(
        "weak_password", "contains_personal_info", (), "The password contains the name or phone number."
    ),
    MessageVariant("weak_password", "invalid_characters", (), "The password contains control characters."),
    MessageVariant(
        "recipient_not_found", "phone", (), "No open wallet is registered for the phone number paid to."
    ),
    MessageVariant("recipient_not_found", "wallet_id", (), "No open wallet has the wallet id paid to."),
    MessageVariant(
        "recipient_not_found", "receive_code", (), "The wallet of a personal receive code is gone or closed."
    ),
    MessageVariant(
        "recipient_not_found",
        "payer_wallet_id",
        (),
        "A money request names the payer by a wallet id that no open wallet has.",
    ),
    MessageVariant("not_found", "wallet", (), "No wallet of the caller has this id."),
    MessageVariant(
        "rate_limited",
        "uploads_in_progress",
        (),
        "A QR picture upload while the same user's earlier ones are still being read.",
    ),
    MessageVariant(
        "service_unavailable",
        "image_decoder_busy",
        (),
        "A QR picture upload while the server is reading as many pictures as it takes at once.",
    ),
)

FIELD_LABELS: tuple[FieldLabel, ...] = tuple(
    FieldLabel(name, when)
    for name, when in (
        ("account_name", "the name on a bank account"),
        ("account_number", "a bank account (card) number"),
        ("action", "Operators: the action an approval is asked for"),
        ("actor_id", "Operators: who did something (audit filter)"),
        ("all", "all of them (mark every notification read)"),
        ("approve", "Operators: whether a KYC application is approved"),
        ("amount", "an amount of money"),
        ("amount_minor", "an amount of money, in minor units"),
        ("body", "the request body as a whole (a rule across its fields failed)"),
        ("budget", "a sub-wallet's monthly budget"),
        ("ceremony_id", "the id of a passkey sign-in started before"),
        ("city", "a city"),
        ("code", "a one-time code (SMS, authenticator or recovery code)"),
        ("colour", "a sub-wallet's colour"),
        ("cookie", "whether the session goes in a cookie"),
        ("cursor", "a page cursor (`next_cursor` of a previous page)"),
        ("counterparty", "the other wallet of a transaction (history filter)"),
        ("credential", "a passkey credential"),
        ("currency", "a currency code (CNY)"),
        ("description", "a description"),
        ("device_id", "the id of the user's device"),
        ("direction", "debit or credit (history filter)"),
        ("display_name", "an operator's display name"),
        ("enabled", "whether a webhook endpoint is on"),
        ("event", "Operators: the kind of audit event (audit filter)"),
        ("events", "the event types a webhook endpoint receives"),
        ("expires_at", "when something ends"),
        ("expires_in", "how long something stays valid, in seconds"),
        ("expires_in_days", "how many days a money request stays open"),
        ("format", "the form a QR code is sent in (json, svg, png)"),
        ("from", "who is asked to pay (a money request)"),
        ("from_wallet_id", "the wallet a payment is made from"),
        ("full_name", "a person's own name (sign-up): shown for `name` where it is the user's name"),
        ("goal", "a sub-wallet's savings goal"),
        ("icon", "a sub-wallet's icon"),
        ("id_number", "a resident ID card number"),
        ("ids", "the ids of notifications"),
        ("limit", "how many items a page holds"),
        ("locked_until", "the time until which a sub-wallet is locked"),
        ("max_amount", "the largest amount (history filter)"),
        ("mcc", "a merchant category code"),
        ("memo", "the note that goes with a payment"),
        ("merchant_id", "a merchant's id"),
        ("method", "how a step-up challenge is answered (sms, pin, totp…)"),
        ("min_amount", "the smallest amount (history filter)"),
        ("name", "a name (of a person, wallet, merchant, key…)"),
        ("new_code", "the SMS code sent to the new phone number"),
        ("new_password", "the new password"),
        ("new_phone", "the new phone number"),
        ("no_pin_daily", "the daily allowance for payments without a PIN"),
        ("no_pin_per_payment", "the per-payment allowance without a PIN"),
        ("note", "an operator's note"),
        ("old_code", "the SMS code sent to the current phone number"),
        ("on_limit", "what a budget does at 100% (warn or block)"),
        ("order_id", "a merchant's order number"),
        ("params", "Operators: the parameters of an approval"),
        ("password", "a password"),
        ("payload", "the text of a QR code"),
        ("payment_code", "a customer's payment code (付款码)"),
        ("period_end", "the end of the period shown (`to` of the history filters)"),
        ("period_start", "the start of the period shown (`from` of the history filters)"),
        ("phone", "a phone number"),
        ("pin", "the six-digit payment PIN"),
        ("previous_secret_valid_s", "how long a webhook's previous secret stays valid, in seconds"),
        ("purpose", "what a sub-wallet is for"),
        ("q", "the text searched for"),
        ("qr", "the text of a QR code"),
        ("reason", "the reason given for an action"),
        ("return_url", "where checkout sends the customer back to"),
        ("role", "the caller's side of a money request (payer or requester)"),
        ("roles", "an operator's roles"),
        ("scopes", "what an API key may do"),
        ("second_factor", "an authenticator or recovery code given with a request"),
        ("status", "a status (list filter)"),
        ("target", "a savings goal's target amount"),
        ("target_date", "the date a savings goal should be reached"),
        ("to", "who receives the money (a transfer; also a sandbox message's phone or e-mail)"),
        ("to_wallet_id", "the wallet that receives the money"),
        ("totp_code", "a code from an authenticator app"),
        ("type", "a transaction type (history filter)"),
        ("unread", "only unread notifications"),
        ("url", "a webhook endpoint's URL"),
        ("user_id", "Operators: whose events (audit filter)"),
        ("username", "an operator's user name"),
        ("wallet_id", "a wallet id"),
    )
)

BY_CODE: Mapping[str, ErrorCode] = MappingProxyType({entry.code: entry for entry in ERROR_CODES})
NEXT_STEP_BY_NAME: Mapping[str, NextStep] = MappingProxyType({step.name: step for step in NEXT_STEPS})
VARIANT_BY_MSGID: Mapping[str, MessageVariant] = MappingProxyType({v.msgid: v for v in MESSAGE_VARIANTS})
FIELD_LABEL_BY_NAME: Mapping[str, FieldLabel] = MappingProxyType(
    {label.name: label for label in FIELD_LABELS}
)


def lookup(code: str) -> ErrorCode | None:
    return BY_CODE.get(code)


def status_for(code: str) -> int | None:
    entry = BY_CODE.get(code)
    return None if entry is None else entry.status


def user_text(code: str, variant: str, **params: Any) -> UserText:
    """A specific message for an error; refuses (a programming error) a variant or parameters that are
    not registered, so that a typo cannot silently fall back to the generic message."""
    text = UserText(code, variant, params)
    registered = VARIANT_BY_MSGID.get(text.msgid)
    if registered is None:
        raise KeyError(f"unregistered message variant {text.msgid}")
    unknown = set(params) - set(registered.params)
    missing = set(registered.params) - set(params) - {"field"}  # `field` may come from the error's extra
    if unknown or missing:
        raise TypeError(f"{text.msgid} takes {registered.params}, got {sorted(params)}")
    return text


def all_msgids() -> list[tuple[str, str]]:
    """Every msgid the catalogs must translate, in registry order, with a note for translators."""
    ids = [(entry.msgid, f"{entry.code} ({entry.status}): {entry.when}") for entry in ERROR_CODES]
    for step in NEXT_STEPS:
        ids.append((step.msgid, f"next step {step.name}: {step.when}"))
        if step.until_msgid is not None:
            ids.append((step.until_msgid, f"next step {step.name}, when the end time is known: {{until}}"))
    for v in MESSAGE_VARIANTS:
        shown = ", ".join(f"{{{name}}}" for name in v.params) or "none"
        ids.append((v.msgid, f"{v.code}, specific: {v.when} Placeholders: {shown}."))
    ids += [(label.msgid, f"field label: {label.when}") for label in FIELD_LABELS]
    return ids

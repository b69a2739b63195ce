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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

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
        "The wallet cannot be closed: it is the main wallet, or locked, or money is on hold. Extras: "
        "`reason`.",
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
        "Too many wrong codes named this device, from any merchants: its codes pay no more (a right one "
        "included) until the customer enables payment codes again. Also `GET /v1/payment-codes/current`.",
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

BY_CODE: Mapping[str, ErrorCode] = MappingProxyType({entry.code: entry for entry in ERROR_CODES})
NEXT_STEP_BY_NAME: Mapping[str, NextStep] = MappingProxyType({step.name: step for step in NEXT_STEPS})


def lookup(code: str) -> ErrorCode | None:
    return BY_CODE.get(code)


def status_for(code: str) -> int | None:
    entry = BY_CODE.get(code)
    return None if entry is None else entry.status


def all_msgids() -> list[tuple[str, str]]:
    """Every msgid the catalogs must translate, in registry order, with a note for translators."""
    ids = [(entry.msgid, f"{entry.code} ({entry.status}): {entry.when}") for entry in ERROR_CODES]
    for step in NEXT_STEPS:
        ids.append((step.msgid, f"next step {step.name}: {step.when}"))
        if step.until_msgid is not None:
            ids.append((step.until_msgid, f"next step {step.name}, when the end time is known: {{until}}"))
    return ids

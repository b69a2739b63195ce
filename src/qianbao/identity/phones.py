"""Phone numbers: parsed and validated with `phonenumbers`, stored and compared in E.164."""

from __future__ import annotations

import phonenumbers

from qianbao import invalid

DEFAULT_REGION = "CN"


def normalise_phone(text: str, region: str = DEFAULT_REGION) -> str:
    """`138 0013 8000` or `+86 138-0013-8000` → `+8613800138000`; InvalidInput unless a valid number."""
    if not isinstance(text, str) or not text.strip() or len(text) > 32:
        raise invalid.phone("phone", "phone must be a phone number")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise invalid.phone("phone", "phone is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise invalid.phone("phone", "phone is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def national_digits(e164: str) -> str:
    """The national significant number (what people type and what a PIN must not be taken from)."""
    try:
        return str(phonenumbers.parse(e164).national_number)
    except phonenumbers.NumberParseException:
        return "".join(ch for ch in e164 if ch.isdigit())

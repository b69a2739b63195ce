"""Display masking of personal data for API responses, pages and logs.

Why: most places that show PII only need enough of it for a person to recognise their own data (or to
confirm a payee), never the whole value. Every function here is total: whatever string it is given,
it returns a masked string and never raises, because a masking failure must not break a response or,
worse, make a caller fall back to printing the raw value. Input that is empty, too short to reveal any
part of safely, or unparsable yields :data:`FULLY_MASKED` (or, for phones, a fallback described below).

Every result contains at least one ``*``. Masks keep the value's length visible (one ``*`` per hidden
character) except where noted, matching what users of Chinese payment apps are used to.
"""

from __future__ import annotations

import phonenumbers

__all__ = [
    "FULLY_MASKED",
    "mask_account_number",
    "mask_email",
    "mask_id_number",
    "mask_name",
    "mask_name_for_payee",
    "mask_phone",
]

FULLY_MASKED = "****"

_CHINA_COUNTRY_CODE = 86
_CHINA_MOBILE_DIGITS = 11
_MIN_PHONE_DIGITS_SHOWN = 6  # below this, showing 2 + 2 digits would reveal most of the number
_RESIDENT_ID_LENGTH = 18
_MIN_ID_LENGTH_SHOWN = 8
_MIN_ACCOUNT_LENGTH_SHOWN = 8  # showing the last 4 of anything shorter reveals at least half of it


def mask_phone(e164: str) -> str:
    """A phone number for display.

    - Chinese mobile numbers (+86, 11-digit national number): ``+8613800138000`` → ``138****8000``
      (first 3, four stars, last 4; no country prefix, as Chinese apps show them).
    - Any other number that `phonenumbers` can parse: ``+CC`` prefix, a space, then the national number
      with its first 2 and last 2 digits kept: ``+447911123456`` → ``+44 79******56``. National numbers
      shorter than 6 digits are all stars: ``+CC ****…``.
    - Unparsable input (no ``+``, letters, too short): all but the last 2 characters become stars;
      fewer than 6 characters give ``****``.
    """
    text = e164.strip()
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return _mask_all_but_last(text, 2, minimum=6)
    national = phonenumbers.national_significant_number(number)
    if number.country_code == _CHINA_COUNTRY_CODE and len(national) == _CHINA_MOBILE_DIGITS:
        return national[:3] + "****" + national[-4:]
    prefix = f"+{number.country_code} "
    if len(national) < _MIN_PHONE_DIGITS_SHOWN:
        return prefix + "*" * max(len(national), len(FULLY_MASKED))
    return prefix + national[:2] + "*" * (len(national) - 4) + national[-2:]


def mask_name(name: str) -> str:
    """A person's name for display to its owner or staff: each word keeps its first character.

    ``张三`` → ``张*``, ``欧阳娜娜`` → ``欧***``, ``Alice Wang`` → ``A**** W***``. Runs of whitespace
    (including the ideographic space) become one space. One-character words are a single ``*``
    (``A B`` → ``* *``), so no name is shown in full; an empty name is ``****``.
    """
    words = name.split()
    if not words:
        return FULLY_MASKED
    return " ".join(word[0] + "*" * (len(word) - 1) if len(word) > 1 else "*" for word in words)


def mask_name_for_payee(name: str) -> str:
    """A recipient's name as a payer sees it to confirm the transfer.

    - One word (Chinese names, single Latin names): the last character is kept, the rest are stars:
      ``李四`` → ``*四``, ``王小明`` → ``**明``, ``Madonna`` → ``******a``.
    - Several words (Latin names, given name first): every word is starred except the first letter of the
      last word (usually the family name): ``Alice Wang`` → ``***** W***``.

    One-character names (and a one-character last word) are ``*``; an empty name is ``****``.
    """
    words = name.split()
    if not words:
        return FULLY_MASKED
    if len(words) == 1:
        word = words[0]
        return "*" * (len(word) - 1) + word[-1] if len(word) > 1 else "*"
    *others, last = words
    masked_last = last[0] + "*" * (len(last) - 1) if len(last) > 1 else "*"
    return " ".join(["*" * len(word) for word in others] + [masked_last])


def mask_id_number(value: str) -> str:
    """An identity document number: 18-character resident IDs keep their first 4 and last 4 characters
    (``110101199003074514`` → ``1101**********4514``); other numbers of at least 8 characters keep the
    first 2 and last 2; anything shorter is ``****``. Spaces and dashes are ignored."""
    cleaned = _without_separators(value)
    if len(cleaned) == _RESIDENT_ID_LENGTH:
        return cleaned[:4] + "*" * (_RESIDENT_ID_LENGTH - 8) + cleaned[-4:]
    if len(cleaned) >= _MIN_ID_LENGTH_SHOWN:
        return cleaned[:2] + "*" * (len(cleaned) - 4) + cleaned[-2:]
    return FULLY_MASKED


def mask_email(value: str) -> str:
    """An email address: the local part keeps its first character, the domain is kept:
    ``alice@example.com`` → ``a****@example.com``. A one-character local part is ``*``. Anything
    without a non-empty local part and domain around the last ``@``, or containing whitespace, is
    ``****``."""
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or any(character.isspace() for character in text):
        return FULLY_MASKED
    masked_local = local[0] + "*" * (len(local) - 1) if len(local) > 1 else "*"
    return f"{masked_local}@{domain}"


def mask_account_number(value: str) -> str:
    """A bank card or account number: ``**** `` and its last 4 characters (``6222 0212 3456 1234`` →
    ``**** 1234``), always four stars so the length stays hidden. Spaces and dashes are ignored; numbers
    shorter than 8 characters, or containing anything but letters and digits (IBANs have letters), are
    ``****``."""
    cleaned = _without_separators(value)
    if len(cleaned) < _MIN_ACCOUNT_LENGTH_SHOWN or not cleaned.isalnum():
        return FULLY_MASKED
    return f"{FULLY_MASKED} {cleaned[-4:]}"


def _without_separators(value: str) -> str:
    return "".join(value.split()).replace("-", "")


def _mask_all_but_last(text: str, keep: int, *, minimum: int) -> str:
    if len(text) < minimum:
        return FULLY_MASKED
    return "*" * (len(text) - keep) + text[-keep:]

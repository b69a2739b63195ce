"""EMVCo Merchant-Presented Mode (MPM) QR payloads: build, parse, CRC, render.

The format (EMV QR Code Specification for Payment Systems, Merchant-Presented Mode) is a flat string of
data objects, each ``ID`` (two digits) + ``length`` (two digits) + ``value``. Some IDs are templates whose
value is itself a list of data objects: merchant account information (26–51), additional data (62), the
merchant information language template (64) and the unreserved templates (80–99). The payload starts
with the payload format indicator (``00``) and ends with the CRC (``63``, length ``04``): CRC-16/CCITT-FALSE
over the UTF-8 bytes of everything up to and including ``"6304"``, as four upper-case hex digits.

Length is counted in characters, as the specification says ("the number of characters in the value"),
not in UTF-8 bytes: ``0104最佳运输`` is the spec's own example. Both :func:`parse` and
:func:`build_merchant_qr` count Unicode code points. The merchant name (59, at most 25 characters) and
city (60, at most 15) may be non-ASCII (Chinese names, as UnionPay QR does in practice), counted the same
way. The 512 limit applies to the UTF-8 encoding of the whole payload (what goes into the QR symbol).

Numeric data objects accept ASCII digits only: the payload format indicator (00), point of initiation
(01), MCC (52), currency (53) and tip indicator (55) are ``N`` fields, and the amounts (54, 56, 57) are
ASCII digits with at most one ``.``. Python's ``\\d``, ``str.isdigit()``, ``int()`` and ``Decimal()`` all
accept other scripts' digits (``"١٢٣"`` reads as 123), so every check here names ``0``–``9`` explicitly.

qianbao's own codes carry qianbao's globally unique identifier (``dev.qianbao``) in the merchant account
template (26). A personal receive code is also signed: the unreserved template 80 holds the same
identifier (ID 00) and a server-computed MAC (ID 01) over the wallet id, currency and amount
(:func:`personal_signing_message`); the key never leaves the server, so this module only carries the
value. :func:`differences` lists the data objects in which a scanned code departs from the code qianbao
would issue from its own records, which is how the server tells an altered code from a genuine one.

This module is pure: no database, no clock. Malformed input raises :class:`qianbao.errors.InvalidInput`
with a stable ``reason`` (see ``REASONS``); a payload whose CRC does not match still parses, with
``crc_ok=False``, so a caller can show what it says and decide.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import segno
from iso4217 import Currency

from qianbao import invalid
from qianbao.errors import InvalidInput
from qianbao.money import UnknownCurrencyError
from qianbao.money import currency as currency_info

__all__ = [
    "GLOBALLY_UNIQUE_ID",
    "MAX_PAYLOAD_BYTES",
    "REASONS",
    "SIGNATURE_TAG",
    "TEMPLATE_TAGS",
    "Difference",
    "ParsedQr",
    "PERSONAL_KIND",
    "build_merchant_qr",
    "build_personal_qr",
    "crc16_ccitt_false",
    "differences",
    "parse",
    "personal_signing_message",
    "qr_png",
    "qr_svg",
]

GLOBALLY_UNIQUE_ID = "dev.qianbao"
MAX_PAYLOAD_BYTES = 512
TEMPLATE_TAGS = frozenset(
    [f"{t:02d}" for t in range(26, 52)] + ["62", "64"] + [f"{t:02d}" for t in range(80, 100)]
)
MAX_NAME_CHARS = 25
MAX_CITY_CHARS = 15
MAX_REFERENCE_CHARS = 25
MAX_AMOUNT_CHARS = 13
# A qianbao personal receive code: the account template's ID 02 says so (merchant codes have no ID 02),
# and ID 01 is then a wallet id, not a merchant id. P2P codes carry MCC 0000 (no merchant category).
PERSONAL_KIND = "personal"
PERSONAL_MCC = "0000"
# The signature of a personal code: unreserved template 80 (EMVCo reserves 80-99 for such use), ID 00 =
# qianbao's identifier (whose template it is), ID 01 = the MAC as lower-case hex.
SIGNATURE_TAG = "80"
SIGNATURE_HEX_CHARS = 32

# Stable `reason` codes carried by InvalidInput (problem+json field `reason`).
REASONS = (
    "empty",  # no payload at all
    "too_long",  # over 512 bytes of UTF-8
    "truncated",  # a data object ends before its ID+length, or its value is shorter than its length
    "invalid_tag",  # an ID that is not two ASCII digits
    "invalid_length",  # a length that is not two ASCII digits
    "duplicate_tag",  # the same ID twice at one level
    "missing_payload_format_indicator",  # the first data object is not ID 00
    "missing_crc",  # no ID 63
    "misplaced_crc",  # ID 63 is not the last data object, or its length is not 04
    "invalid_numeric",  # a numeric ID (00, 01, 52, 53, 55, 56, 57) holds anything but its ASCII digits
    "invalid_country",  # ID 58 is not two ASCII letters
    "invalid_amount",  # ID 54 is not an exact decimal in the currency's minor units
    "unknown_currency",  # ID 54 present but ID 53 is not a usable ISO 4217 numeric code
    # build_merchant_qr only:
    "invalid_mcc",
    "invalid_currency",
    "invalid_amount_for_static",
    "invalid_text",
    "text_too_long",
    "invalid_signature",
)

_DIGITS = frozenset("0123456789")
# `[0-9]`, never `\d`: on str patterns `\d` matches every Unicode decimal digit ("١٢٣", "１２３").
_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_SIGNATURE = re.compile(f"[0-9a-f]{{{SIGNATURE_HEX_CHARS}}}")
# ``N`` data objects and their exact lengths (EMV QRCPS MPM, section 4.6).
_NUMERIC_LENGTHS = {"00": 2, "01": 2, "52": 4, "53": 3, "55": 2}
# Fixed tip (56) and percentage tip (57): "ans", restricted to digits and one ".".
_DECIMAL_TAGS = ("56", "57")
_ALPHA_BY_NUMERIC: dict[str, str] = {f"{c.number:03d}": c.code for c in Currency}


def crc16_ccitt_false(data: bytes | str) -> str:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR) as 4 upper-case hex."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    crc = 0xFFFF
    for byte in raw:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return f"{crc:04X}"


def _malformed(reason: str, detail: str, **extra: Any) -> InvalidInput:
    if "field" in extra:  # building a code from a merchant's data: the field is what to correct
        return InvalidInput(detail, reason=reason, **extra)
    return invalid.because("qr_payload", detail, reason=reason, **extra)


def _two_digits(text: str) -> bool:
    return len(text) == 2 and text[0] in _DIGITS and text[1] in _DIGITS


def _data_objects(text: str, *, template: str | None) -> list[tuple[str, str]]:
    """Split `text` into (ID, value) pairs; lengths count characters. Raise InvalidInput if malformed."""
    where = {"template": template} if template else {}
    inside = f" inside template {template}" if template else ""
    objects: list[tuple[str, str]] = []
    seen: set[str] = set()
    i = 0
    while i < len(text):
        if len(text) - i < 4:
            raise _malformed("truncated", f"a data object is cut short at character {i}{inside}", **where)
        tag, length = text[i : i + 2], text[i + 2 : i + 4]
        if not _two_digits(tag):
            raise _malformed("invalid_tag", f"the ID at character {i}{inside} is not two digits", **where)
        if not _two_digits(length):
            raise _malformed(
                "invalid_length", f"the length of ID {tag}{inside} is not two digits", tag=tag, **where
            )
        start = i + 4
        end = start + int(length)
        if end > len(text):
            raise _malformed(
                "truncated", f"the value of ID {tag}{inside} is shorter than its length", tag=tag, **where
            )
        if tag in seen:
            raise _malformed("duplicate_tag", f"ID {tag} appears twice{inside}", tag=tag, **where)
        seen.add(tag)
        objects.append((tag, text[start:end]))
        i = end
    return objects


@dataclass(frozen=True, slots=True)
class ParsedQr:
    """A decoded MPM payload. `fields` maps each ID to its value, or, for templates, to their own map."""

    crc_ok: bool
    fields: Mapping[str, str | Mapping[str, str]]
    point_of_initiation: Literal["static", "dynamic"] | None
    merchant_name: str | None
    merchant_city: str | None
    mcc: str | None
    currency: str | None
    amount_minor: int | None
    country: str | None

    def template(self, tag: str) -> Mapping[str, str] | None:
        value = self.fields.get(tag)
        return value if isinstance(value, Mapping) else None

    def _qianbao_account(self) -> Mapping[str, str] | None:
        for tag in (f"{t:02d}" for t in range(26, 52)):
            account = self.template(tag)
            if account is not None and account.get("00") == GLOBALLY_UNIQUE_ID:
                return account
        return None

    @property
    def is_qianbao(self) -> bool:
        """The code carries qianbao's identifier in a merchant account template (any kind)."""
        return self._qianbao_account() is not None

    @property
    def qianbao_merchant_id(self) -> str | None:
        """The merchant id from qianbao's merchant account template (GUI ``dev.qianbao``), if any."""
        account = self._qianbao_account()
        if account is None or "02" in account:  # ID 02: a personal code (or a kind we do not know)
            return None
        return account.get("01")

    @property
    def qianbao_wallet_id(self) -> str | None:
        """The wallet id of a qianbao personal receive code (account template ID 02 = personal), if any."""
        account = self._qianbao_account()
        if account is None or account.get("02") != PERSONAL_KIND:
            return None
        return account.get("01")

    @property
    def qianbao_signature(self) -> str | None:
        """The MAC of a qianbao personal code (unreserved template with qianbao's identifier), if any."""
        for tag in (f"{t:02d}" for t in range(80, 100)):
            template = self.template(tag)
            if template is not None and template.get("00") == GLOBALLY_UNIQUE_ID:
                return template.get("01")
        return None

    @property
    def order_ref(self) -> str | None:
        """The reference label (62/05), if any."""
        additional = self.template("62")
        return additional.get("05") if additional is not None else None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "crc_ok": self.crc_ok,
            "point_of_initiation": self.point_of_initiation,
            "merchant_name": self.merchant_name,
            "merchant_city": self.merchant_city,
            "mcc": self.mcc,
            "currency": self.currency,
        }
        if self.amount_minor is not None:
            body["amount"] = {"amount": self.amount_minor, "currency": self.currency}
        body["country"] = self.country
        body["fields"] = {tag: v if isinstance(v, str) else dict(v) for tag, v in self.fields.items()}
        wallet_id = self.qianbao_wallet_id
        if wallet_id is not None:
            body["qianbao"] = {"kind": PERSONAL_KIND, "wallet_id": wallet_id}
        return body


# What each data object is, for telling a payer which part of a code differs from the records.
FIELD_NAMES: Mapping[str, str] = {
    "00": "payload_format_indicator",
    "01": "point_of_initiation",
    "26": "merchant_account",
    "52": "mcc",
    "53": "currency",
    "54": "amount",
    "55": "tip_indicator",
    "56": "tip_fixed",
    "57": "tip_percentage",
    "58": "country",
    "59": "merchant_name",
    "60": "merchant_city",
    "61": "postal_code",
    "62": "additional_data",
    "64": "merchant_name_alternate_language",
    SIGNATURE_TAG: "signature",
}


@dataclass(frozen=True, slots=True)
class Difference:
    """One data object in which a scanned code departs from the genuine code: what the code says, and
    what the code issued from the server's records says (``None``: absent from that code)."""

    field: str
    tag: str
    in_code: str | None
    on_record: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"field": self.field, "tag": self.tag, "in_code": self.in_code, "on_record": self.on_record}


def _tlv_text(value: str | Mapping[str, str]) -> str:
    """A field as it appears in the payload (a template as its own data objects)."""
    if isinstance(value, str):
        return value
    return "".join(f"{tag}{len(inner):02d}{inner}" for tag, inner in value.items())


def differences(scanned: ParsedQr, genuine: ParsedQr) -> list[Difference]:
    """Every data object (but the CRC) that differs between a scanned code and the genuine one, in ID
    order: changed, added or left out. Order of objects inside the payload does not matter."""
    found: list[Difference] = []
    for tag in sorted((set(scanned.fields) | set(genuine.fields)) - {"63"}):
        said, recorded = scanned.fields.get(tag), genuine.fields.get(tag)
        if said != recorded:
            found.append(
                Difference(
                    field=FIELD_NAMES.get(tag, f"id_{tag}"),
                    tag=tag,
                    in_code=None if said is None else _tlv_text(said),
                    on_record=None if recorded is None else _tlv_text(recorded),
                )
            )
    return found


def _check_numeric(fields: Mapping[str, str | Mapping[str, str]]) -> None:
    """Refuse numeric data objects that hold anything but ASCII digits (and, for amounts, one ".")."""
    for tag, length in _NUMERIC_LENGTHS.items():
        value = fields.get(tag)
        if isinstance(value, str) and not (len(value) == length and set(value) <= _DIGITS):
            raise _malformed(
                "invalid_numeric", f"ID {tag} must be {length} digits (0-9)", tag=tag, field=FIELD_NAMES[tag]
            )
    for tag in _DECIMAL_TAGS:
        value = fields.get(tag)
        if isinstance(value, str) and (_AMOUNT.fullmatch(value) is None or len(value) > MAX_AMOUNT_CHARS):
            detail = f"ID {tag} must be a decimal number (0-9 and '.')"
            raise _malformed("invalid_numeric", detail, tag=tag, field=FIELD_NAMES[tag])
    country = fields.get("58")
    if isinstance(country, str) and _COUNTRY.fullmatch(country) is None:
        raise _malformed("invalid_country", "the country code (ID 58) must be two letters (A-Z)", tag="58")


def _amount_minor(text: str, currency: str | None) -> int:
    match = _AMOUNT.fullmatch(text)
    if match is None or len(text) > MAX_AMOUNT_CHARS:
        raise _malformed("invalid_amount", "the transaction amount (ID 54) is not a decimal number", tag="54")
    if currency is None:
        raise _malformed(
            "unknown_currency", "the payload has an amount but no known currency (ID 53)", tag="53"
        )
    try:
        exponent = currency_info(currency).exponent
    except UnknownCurrencyError:
        raise _malformed("unknown_currency", f"the currency {currency} has no minor unit", tag="53") from None
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > exponent and fraction[exponent:].strip("0"):
        raise _malformed(
            "invalid_amount",
            f"the amount (ID 54) has more decimals than {currency} allows ({exponent})",
            tag="54",
        )
    fraction = fraction[:exponent].ljust(exponent, "0")
    scale: int = 10**exponent
    return int(whole) * scale + (int(fraction) if fraction else 0)


def parse(payload: str) -> ParsedQr:
    """Decode any EMVCo MPM payload (UnionPay, PIX, PayNow, qianbao…). A wrong CRC gives crc_ok=False."""
    if not isinstance(payload, str):
        raise TypeError("payload must be a str")
    if not payload:
        raise _malformed("empty", "the QR payload is empty")
    if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
        raise _malformed("too_long", f"the QR payload is longer than {MAX_PAYLOAD_BYTES} bytes")
    objects = _data_objects(payload, template=None)
    if objects[0][0] != "00":
        raise _malformed(
            "missing_payload_format_indicator", "the payload does not start with ID 00 (payload format)"
        )
    tags = [tag for tag, _ in objects]
    if "63" not in tags:
        raise _malformed("missing_crc", "the payload has no CRC (ID 63)")
    last_tag, crc = objects[-1]
    if last_tag != "63" or len(crc) != 4:
        raise _malformed("misplaced_crc", "the CRC (ID 63, length 04) must be the last data object")
    crc_ok = crc.upper() == crc16_ccitt_false(payload[:-4])

    fields: dict[str, str | Mapping[str, str]] = {}
    for tag, value in objects:
        fields[tag] = dict(_data_objects(value, template=tag)) if tag in TEMPLATE_TAGS else value
    _check_numeric(fields)

    def text(tag: str) -> str | None:
        value = fields.get(tag)
        return value if isinstance(value, str) else None

    method = text("01")
    initiation: Literal["static", "dynamic"] | None = (
        "static" if method == "11" else "dynamic" if method == "12" else None
    )
    numeric = text("53")
    currency = _ALPHA_BY_NUMERIC.get(numeric) if numeric is not None else None
    amount_text = text("54")
    return ParsedQr(
        crc_ok=crc_ok,
        fields=fields,
        point_of_initiation=initiation,
        merchant_name=text("59"),
        merchant_city=text("60"),
        mcc=text("52"),
        currency=currency,
        amount_minor=_amount_minor(amount_text, currency) if amount_text is not None else None,
        country=text("58"),
    )


def _data_object(tag: str, value: str) -> str:
    if not 0 < len(value) <= 99:
        raise _malformed("text_too_long", f"the value of ID {tag} must be 1 to 99 characters", tag=tag)
    return f"{tag}{len(value):02d}{value}"


def _text(field: str, value: str, max_chars: int) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise _malformed(
            "invalid_text", f"{field} must be non-empty text without surrounding spaces", field=field
        )
    if any(unicodedata.category(ch) in {"Cc", "Cs"} for ch in value):
        raise _malformed("invalid_text", f"{field} must not contain control characters", field=field)
    if len(value) > max_chars:
        raise _malformed("text_too_long", f"{field} is longer than {max_chars} characters", field=field)
    return value


def _amount_text(amount_minor: int, exponent: int) -> str:
    """ID 54 for an amount in minor units: "12.34" (exactly the currency's decimals)."""
    if type(amount_minor) is not int or amount_minor <= 0:
        raise _malformed(
            "invalid_amount", "the amount must be a positive integer of minor units", field="amount_minor"
        )
    whole, fraction = divmod(amount_minor, 10**exponent)
    text = f"{whole}.{fraction:0{exponent}d}" if exponent else str(whole)
    if len(text) > MAX_AMOUNT_CHARS:
        raise _malformed("invalid_amount", "the amount is too large for an EMVCo code", field="amount_minor")
    return text


def _iso4217(currency: str) -> tuple[int, int]:
    """(ISO 4217 numeric code, exponent) of a currency with a minor unit, or ``invalid_currency``."""
    try:
        info = currency_info(currency)
    except (UnknownCurrencyError, TypeError):
        raise _malformed(
            "invalid_currency", "the currency must be an ISO 4217 code with a minor unit", field="currency"
        ) from None
    return info.numeric, info.exponent


def build_merchant_qr(
    *,
    merchant_id: str,
    name: str,
    city: str,
    mcc: str,
    currency: str = "CNY",
    amount_minor: int | None = None,
    order_ref: str | None = None,
    dynamic: bool,
) -> str:
    """Build a qianbao merchant-presented payload (static `11` or dynamic `12`) with its CRC.

    The amount (ID 54) is only allowed on dynamic codes (static codes: the customer enters it); a dynamic
    code may still leave it out. Name ≤ 25 and city ≤ 15 characters (code points, non-ASCII allowed).
    """
    # The merchant account template is "0011dev.qianbao" + "01" + length + id: at most 99 characters.
    _text("merchant_id", merchant_id, 99 - 4 - len(GLOBALLY_UNIQUE_ID) - 4)
    _text("name", name, MAX_NAME_CHARS)
    _text("city", city, MAX_CITY_CHARS)
    if order_ref is not None:
        _text("order_ref", order_ref, MAX_REFERENCE_CHARS)
    if not (len(mcc) == 4 and set(mcc) <= _DIGITS):
        raise _malformed("invalid_mcc", "the merchant category code must be four digits", field="mcc")
    numeric, exponent = _iso4217(currency)
    if amount_minor is not None and not dynamic:
        raise _malformed(
            "invalid_amount_for_static",
            "a static code carries no amount: the customer enters it",
            field="amount_minor",
        )
    amount_text = None if amount_minor is None else _amount_text(amount_minor, exponent)

    account = _data_object("00", GLOBALLY_UNIQUE_ID) + _data_object("01", merchant_id)
    parts = [
        _data_object("00", "01"),
        _data_object("01", "12" if dynamic else "11"),
        _data_object("26", account),
        _data_object("52", mcc),
        _data_object("53", f"{numeric:03d}"),
    ]
    if amount_text is not None:
        parts.append(_data_object("54", amount_text))
    parts += [_data_object("58", "CN"), _data_object("59", name), _data_object("60", city)]
    if order_ref is not None:
        parts.append(_data_object("62", _data_object("05", order_ref)))
    body = "".join(parts) + "6304"
    payload = body + crc16_ccitt_false(body)
    if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:  # pragma: no cover - the field limits prevent it
        raise _malformed("too_long", f"the QR payload would be longer than {MAX_PAYLOAD_BYTES} bytes")
    return payload


def personal_signing_message(*, wallet_id: str, currency: str | None, amount_minor: int | None) -> str:
    """What the signature of a personal code covers, unambiguously encoded (JSON, so no value can run
    into the next): the wallet paid, the currency (alphabetic) and the fixed amount (minor units) or
    ``null``. The name is left out on purpose: the server compares it with its records instead, so a
    payer is told which field was changed."""
    return json.dumps(["personal-v1", wallet_id, currency, amount_minor], ensure_ascii=True)


def build_personal_qr(
    *,
    wallet_id: str,
    name: str,
    city: str,
    currency: str = "CNY",
    amount_minor: int | None = None,
    signature: str | None,
) -> str:
    """Build a qianbao personal receive code (P2P): static (`11`, it can be paid any number of times),
    the account template carrying the wallet id and the personal marker, MCC 0000, optionally a fixed
    amount (ID 54), which the payer's app then cannot change, and the server's `signature` (lower-case
    hex of :func:`personal_signing_message`) in template 80. Name ≤ 25 and city ≤ 15 characters.
    ``signature=None`` builds the unsigned layout of codes issued before signatures (tests only)."""
    _text("wallet_id", wallet_id, 99 - 4 - len(GLOBALLY_UNIQUE_ID) - 4 - 4 - len(PERSONAL_KIND) - 4)
    _text("name", name, MAX_NAME_CHARS)
    _text("city", city, MAX_CITY_CHARS)
    numeric, exponent = _iso4217(currency)
    if signature is not None and _SIGNATURE.fullmatch(signature) is None:
        raise _malformed(
            "invalid_signature",
            f"the signature must be {SIGNATURE_HEX_CHARS} lower-case hex digits",
            field="signature",
        )
    account = (
        _data_object("00", GLOBALLY_UNIQUE_ID)
        + _data_object("01", wallet_id)
        + _data_object("02", PERSONAL_KIND)
    )
    parts = [
        _data_object("00", "01"),
        _data_object("01", "11"),
        _data_object("26", account),
        _data_object("52", PERSONAL_MCC),
        _data_object("53", f"{numeric:03d}"),
    ]
    if amount_minor is not None:
        parts.append(_data_object("54", _amount_text(amount_minor, exponent)))
    parts += [_data_object("58", "CN"), _data_object("59", name), _data_object("60", city)]
    if signature is not None:
        signed = _data_object("00", GLOBALLY_UNIQUE_ID) + _data_object("01", signature)
        parts.append(_data_object(SIGNATURE_TAG, signed))
    body = "".join(parts) + "6304"
    return body + crc16_ccitt_false(body)


def _symbol(payload: str) -> segno.QRCode:
    return segno.make(payload, error="m", micro=False, encoding="utf-8")


def qr_svg(payload: str, *, scale: int = 4) -> str:
    """The payload as an inline SVG QR code (error correction M)."""
    return str(_symbol(payload).svg_inline(scale=scale))


def qr_png(payload: str, *, scale: int = 6) -> bytes:
    """The payload as a PNG QR code (error correction M)."""
    out = io.BytesIO()
    _symbol(payload).save(out, kind="png", scale=scale)
    return out.getvalue()

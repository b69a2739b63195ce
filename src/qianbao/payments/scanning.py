"""A scanned QR code on its way to a payment: a qianbao EMVCo payload with a good checksum, or
`qr_code_invalid` with a `reason`. Merchant codes (`merchant_payments`) and personal receive codes
(`receive_qr`) both start here, then check which kind they got."""

from __future__ import annotations

from qianbao.errors import InvalidInput
from qianbao.payments import emvco


class QrCodeInvalid(InvalidInput):
    code = "qr_code_invalid"


class AmountMismatch(InvalidInput):
    """The amount given differs from the amount the code carries."""

    code = "amount_mismatch"


def parse_scanned(payload: object) -> emvco.ParsedQr:
    """Any EMVCo payload whose checksum holds (the caller then checks it is the kind it can pay)."""
    if not isinstance(payload, str):
        raise QrCodeInvalid("qr must be the text of the QR code", field="qr")
    try:
        parsed = emvco.parse(payload)
    except InvalidInput as exc:
        raise QrCodeInvalid(exc.detail, reason=exc.extra.get("reason"), field="qr") from None
    if not parsed.crc_ok:
        raise QrCodeInvalid(
            "the QR code's checksum does not match: scan it again", reason="bad_crc", field="qr"
        )
    return parsed

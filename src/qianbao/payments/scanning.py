"""A scanned QR code on its way to a payment: a qianbao EMVCo payload with a good checksum, or
`qr_code_invalid` with a `reason`. Merchant codes (`merchant_payments`) and personal receive codes
(`receive_qr`) both start here, then check which kind they got, and then that the code is the one
qianbao issued (`qr_verification`): a code that its records contradict is `qr_code_altered`."""

from __future__ import annotations

from collections.abc import Sequence

from qianbao.errors import InvalidInput
from qianbao.payments import emvco


class QrCodeInvalid(InvalidInput):
    code = "qr_code_invalid"


class AmountMismatch(InvalidInput):
    """The amount given differs from the amount the code carries."""

    code = "amount_mismatch"


class QrCodeAltered(InvalidInput):
    """A qianbao code says something the server's records contradict (payee name, amount, …), or its
    signature does not hold: it is not the code qianbao issued. `mismatches` lists the fields."""

    code = "qr_code_altered"


class QrCodeUnsigned(InvalidInput):
    """A personal receive code without a signature (issued before codes were signed): unverifiable."""

    code = "qr_code_unsigned"


def refuse_altered(differences: Sequence[emvco.Difference]) -> None:
    """Pay nothing from a code that departs from the records: the payer may have been shown another
    payee or amount than the one the server would use."""
    if differences:
        raise QrCodeAltered(
            "this QR code differs from the code qianbao issued for this payee: it has been altered",
            mismatches=[difference.as_json() for difference in differences],
        )


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

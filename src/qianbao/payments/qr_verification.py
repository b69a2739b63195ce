"""Is a scanned qianbao code the code qianbao issued? The server-verified view of a QR code.

Anyone can print an EMVCo payload: the CRC only catches accidents (whoever edits a field recomputes it).
So for a code that carries qianbao's identifier, the server rebuilds the code its own records give —
the merchant's static code, the dynamic code stored under the code's reference, or the receive code of
the wallet a valid signature names — and compares it field by field with what was scanned
(`emvco.differences`). The payer is shown what the records say (registered name, city and MCC, the
stored amount, the payee's masked name) and every field that differs; paying refuses a code that
differs (`qr_code_altered`), so no field the records contradict is ever used.

Merchant codes are not signed: everything on them is public, and the merchant id alone decides who is
paid. A code with another merchant's id therefore pays that merchant only if it also carries that
merchant's registered name, city and MCC, i.e. if the payer was shown who is really paid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import Connection

from qianbao.identity.context import IdentityContext
from qianbao.payments import dynamic_qr, emvco
from qianbao.payments.merchants import Merchant, merchant_by_id, static_qr_payload
from qianbao.payments.receive_qr import PersonalCheck, check_personal_code

Kind = Literal["merchant", "personal", "unknown"]


def genuine_merchant_code(merchant: Merchant, code: dynamic_qr.DynamicQr | None) -> emvco.ParsedQr:
    """The code qianbao issues for a merchant: its static code, or the dynamic code `code`."""
    payload = static_qr_payload(merchant) if code is None else dynamic_qr.payload_for(merchant, code)
    return emvco.parse(payload)


def merchant_code_differences(
    parsed: emvco.ParsedQr, merchant: Merchant, code: dynamic_qr.DynamicQr | None
) -> list[emvco.Difference]:
    """Where a scanned merchant code departs from the genuine one (empty: it is genuine)."""
    return emvco.differences(parsed, genuine_merchant_code(merchant, code))


@dataclass(frozen=True, slots=True)
class QrVerification:
    """The server's view of a qianbao code. `reason` is None for a genuine code, else one of
    `bad_crc`, `merchant_not_found`, `qr_code_not_found`, `unsigned`, `bad_signature`,
    `recipient_not_found`, `altered` or `unknown_kind`."""

    kind: Kind
    reason: str | None
    differences: tuple[emvco.Difference, ...] = ()
    merchant: Merchant | None = None
    payee_wallet_id: str | None = None
    payee_name_masked: str | None = None
    amount: int | None = None
    currency: str | None = None
    qr_code_status: str | None = None

    @property
    def verified(self) -> bool:
        return self.reason is None

    def as_json(self) -> dict[str, Any]:
        merchant = self.merchant
        return {
            "verified": self.verified,
            "kind": self.kind,
            "reason": self.reason,
            "merchant": None
            if merchant is None
            else {"id": merchant.id, "name": merchant.name, "city": merchant.city, "mcc": merchant.mcc},
            "payee": None
            if self.payee_wallet_id is None
            else {"wallet_id": self.payee_wallet_id, "name_masked": self.payee_name_masked},
            "amount": None if self.amount is None else {"amount": self.amount, "currency": self.currency},
            "qr_code_status": self.qr_code_status,
            "mismatches": [difference.as_json() for difference in self.differences],
        }


def _merchant_view(conn: Connection, parsed: emvco.ParsedQr, merchant_id: str, now_us: int) -> QrVerification:
    merchant = merchant_by_id(conn, merchant_id)
    if merchant is None or merchant.status == "closed":
        return QrVerification("merchant", "merchant_not_found")
    code = None
    if parsed.point_of_initiation == "dynamic":
        code = dynamic_qr.code_by_reference(conn, merchant.id, parsed.order_ref)
        if code is None:
            return QrVerification("merchant", "qr_code_not_found", merchant=merchant)
    found = tuple(merchant_code_differences(parsed, merchant, code))
    return QrVerification(
        "merchant",
        "altered" if found else None,
        found,
        merchant=merchant,
        amount=None if code is None else code.amount,
        currency=merchant.currency if code is None else code.currency,
        qr_code_status=None if code is None else code.shown_status(now_us),
    )


def _personal_view(parsed: emvco.ParsedQr, check: PersonalCheck) -> QrVerification:
    wallet = check.wallet
    return QrVerification(
        "personal",
        check.reason,
        check.differences,
        payee_wallet_id=None if wallet is None else wallet.id,
        payee_name_masked=check.name_masked,
        # A signed amount is the payee's: shown only once the signature holds.
        amount=None if wallet is None else parsed.amount_minor,
        currency=None if wallet is None else wallet.currency,
    )


def verify_scanned(ctx: IdentityContext, parsed: emvco.ParsedQr) -> QrVerification | None:
    """The server-verified view of a code carrying qianbao's identifier; None for other schemes' codes
    (UnionPay, PIX…), which qianbao has no records of."""
    merchant_id = parsed.qianbao_merchant_id
    if merchant_id is not None:
        with ctx.db.read() as conn:
            view = _merchant_view(conn, parsed, merchant_id, ctx.now())
    elif parsed.qianbao_wallet_id is not None:
        with ctx.db.read() as conn:
            view = _personal_view(parsed, check_personal_code(ctx, conn, parsed))
    elif parsed.is_qianbao:
        view = QrVerification("unknown", "unknown_kind")
    else:
        return None
    if not parsed.crc_ok:  # a damaged or edited payload is never "verified", whatever it says
        return replace(view, reason="bad_crc")
    return view

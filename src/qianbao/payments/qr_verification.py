"""Is a scanned qianbao code the code qianbao issued? The server-verified view of a QR code.

Anyone can print an EMVCo payload: the CRC only catches accidents (whoever edits a field recomputes it).
So for a code that carries qianbao's identifier, the server rebuilds the code its own records give —
the merchant's static code, the dynamic code stored under the code's reference, or the receive code of
the wallet a valid signature names — and compares it field by field with what was scanned
(`emvco.differences`). The payer is shown what the records say (registered name, city and MCC, the
stored amount, the payee's masked name) and every field that differs; paying refuses a code that
differs (`qr_code_altered`), so no field the records contradict is ever used. The records' values are
shown in the parsed code's own top-level fields too (`as_recorded`): a client that reads only those (as
clients of `POST /v1/qr-codes/parse` did before `verification` existed) is never shown a forged name or
amount. What the code itself says stays in its raw `fields` and in each mismatch's `in_code`.

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
# The top-level fields of a parsed code (`ParsedQr.as_json`) that say who is paid and how much: for a
# qianbao code they show the records' values.
RECORDED_FIELDS = ("merchant_name", "merchant_city", "mcc", "currency", "amount")


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
    `recipient_not_found`, `altered` or `unknown_kind`. `issued` is the code qianbao issued for this
    payee, rebuilt from the records (None when they do not say: an unknown merchant or dynamic code, a
    receive code whose signature fails)."""

    kind: Kind
    reason: str | None
    differences: tuple[emvco.Difference, ...] = ()
    merchant: Merchant | None = None
    payee_wallet_id: str | None = None
    payee_name_masked: str | None = None
    amount: int | None = None
    currency: str | None = None
    qr_code_status: str | None = None
    issued: emvco.ParsedQr | None = None

    @property
    def verified(self) -> bool:
        return self.reason is None

    def recorded_fields(self) -> dict[str, Any]:
        """Who is paid and how much (`RECORDED_FIELDS`, shaped as in `ParsedQr.as_json`) as the records
        have them: the issued code's values; for a known merchant whose dynamic code is unknown, the
        merchant and no amount; with no record of the payee, nothing (all None)."""
        if self.issued is not None:
            issued = self.issued.as_json()
            return {name: issued.get(name) for name in RECORDED_FIELDS}
        merchant = self.merchant
        if merchant is not None:
            return {
                "merchant_name": merchant.name,
                "merchant_city": merchant.city,
                "mcc": merchant.mcc,
                "currency": merchant.currency,
                "amount": None,
            }
        return dict.fromkeys(RECORDED_FIELDS)

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
    issued = genuine_merchant_code(merchant, code)
    found = tuple(emvco.differences(parsed, issued))
    return QrVerification(
        "merchant",
        "altered" if found else None,
        found,
        merchant=merchant,
        amount=None if code is None else code.amount,
        currency=merchant.currency if code is None else code.currency,
        qr_code_status=None if code is None else code.shown_status(now_us),
        issued=issued,
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
        issued=check.issued,
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


def as_recorded(parsed: emvco.ParsedQr, view: QrVerification | None) -> dict[str, Any]:
    """`parsed.as_json()`, and for a qianbao code (`view`, from `verify_scanned`) who is paid and how much
    as the records have them in place of what the code says, with `verified` and `verification`. An
    amount the records do not hold is left out, as for a code without ID 54. A genuine code shows
    exactly what it says; other schemes' codes (no `view`) are shown as they are."""
    shown = parsed.as_json()
    if view is None:
        return shown
    shown.update(view.recorded_fields())
    if shown["amount"] is None:
        del shown["amount"]
    shown["verified"] = view.verified
    shown["verification"] = view.as_json()
    return shown

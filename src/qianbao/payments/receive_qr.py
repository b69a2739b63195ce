"""Personal receive codes (收款码): a wallet's EMVCo QR code that anyone with qianbao can pay by P2P transfer.

The payload is EMVCo merchant-presented mode (`emvco.build_personal_qr`): a static code whose merchant
account template holds qianbao's globally unique identifier, the wallet id and the `personal` marker, the
owner's name as a payer sees it when confirming (masked: `*四`), and optionally a fixed amount. The code
names a wallet, nothing secret: paying it is an ordinary transfer (`POST /v1/transfers` with
`"to": {"qr": …}`) with the transfer's limits and step-up. Because the code is static, it never expires;
the wallet's status decides whether it can still be paid (a closed wallet: `recipient_not_found`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import segno
from sqlalchemy import Connection

from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.identity.users import get_user
from qianbao.ledger.model import AccountStatus
from qianbao.ledger.queries import LedgerReader
from qianbao.payments import emvco
from qianbao.payments.errors import CurrencyMismatch, decline_error, recipient_not_found
from qianbao.payments.inputs import check_amount, require_user_id
from qianbao.payments.scanning import AmountMismatch, QrCodeInvalid, parse_scanned
from qianbao.security.masking import mask_name_for_payee
from qianbao.wallets.service import WalletRow, own_wallet_row, plausible_id, wallet_row

# EMVCo needs a merchant city (ID 60); a person's code has none, so it names the country.
PERSONAL_CITY = "China"


@dataclass(frozen=True, slots=True)
class ReceiveQr:
    payload: str
    wallet_id: str
    amount: int | None
    currency: str
    name_masked: str


def receive_qr(
    ctx: IdentityContext, principal: Principal, wallet_id: str, *, amount: int | None = None
) -> ReceiveQr:
    """The caller's receive code for one of their wallets, with an optional fixed amount (minor units)."""
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        wallet = own_wallet_row(conn, user_id, wallet_id)
        name = get_user(conn, ctx.keys, user_id).name
    if amount is not None:
        check_amount(amount, wallet.currency)
    account = LedgerReader(ctx.db).get_account(wallet.id)
    if account is None or account.status in (AccountStatus.FROZEN, AccountStatus.CLOSED):
        raise decline_error("wallet_frozen", currency_code=wallet.currency)
    shown = mask_name_for_payee(name)[-emvco.MAX_NAME_CHARS :]
    payload = emvco.build_personal_qr(
        wallet_id=wallet.id,
        name=shown,
        city=PERSONAL_CITY,
        currency=wallet.currency,
        amount_minor=amount,
    )
    return ReceiveQr(payload, wallet.id, amount, wallet.currency, shown)


def parse_personal_qr(payload: object) -> emvco.ParsedQr:
    """A qianbao personal code with a good CRC, or `qr_code_invalid` with a `reason`."""
    parsed = parse_scanned(payload)
    if parsed.qianbao_wallet_id is None:
        raise QrCodeInvalid(
            "this is not a qianbao personal receive code (pay merchant codes as merchant payments)",
            reason="not_personal",
            field="qr",
        )
    return parsed


def qr_recipient(
    ctx: IdentityContext, conn: Connection, payload: object, *, amount: int, currency_code: str
) -> WalletRow:
    """The wallet a personal code pays, checked against the transfer's amount and currency.

    Unknown or closed wallets (or closed users) are `recipient_not_found`; an amount embedded in the code
    must equal the transfer's (`amount_mismatch`): the payer's app shows it and must not change it."""
    parsed = parse_personal_qr(payload)
    if parsed.currency is not None and parsed.currency != currency_code:
        raise CurrencyMismatch(f"the code asks for {parsed.currency}, not {currency_code}", field="qr")
    if parsed.amount_minor is not None and parsed.amount_minor != amount:
        raise AmountMismatch(
            "the amount differs from the amount in the QR code",
            field="amount",
            expected={"amount": parsed.amount_minor, "currency": parsed.currency},
        )
    wallet_id = parsed.qianbao_wallet_id
    target = wallet_row(conn, wallet_id) if plausible_id(wallet_id) and wallet_id is not None else None
    if target is None:
        raise recipient_not_found("the wallet of this code does not exist", by="receive_code")
    account = LedgerReader(ctx.db).get_account(target.id)
    if account is None or account.status is AccountStatus.CLOSED:
        raise recipient_not_found("the wallet of this code is closed", by="receive_code")
    if get_user(conn, ctx.keys, target.user_id).status == "closed":
        raise recipient_not_found("the wallet of this code is closed", by="receive_code")
    return target


def qr_svg_document(payload: str, *, scale: int = 4) -> bytes:
    """The code as a standalone SVG file (with its XML namespace; `emvco.qr_svg` is for inline use)."""
    out = io.BytesIO()
    segno.make(payload, error="m", micro=False, encoding="utf-8").save(out, kind="svg", scale=scale)
    return out.getvalue()

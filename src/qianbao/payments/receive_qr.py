"""Personal receive codes (收款码): a wallet's EMVCo QR code that anyone with qianbao can pay by P2P transfer.

The payload is EMVCo merchant-presented mode (`emvco.build_personal_qr`): a static code whose merchant
account template holds qianbao's globally unique identifier, the wallet id and the `personal` marker, the
owner's name as a payer sees it when confirming (masked: `*四`), optionally a fixed amount, and a
signature in the unreserved template 80. Paying it is an ordinary transfer (`POST /v1/transfers` with
`"to": {"qr": …}`) with the transfer's limits and step-up. Because the code is static, it never expires;
the wallet's status decides whether it can still be paid (a closed wallet: `recipient_not_found`).

Why a signature: the code names a wallet, and anyone can print a code with another wallet id and the
original owner's name next to it. The signature is an HMAC-SHA256 (truncated to 128 bits) over the
wallet id, currency and amount, keyed by the key ring's index key (`KeyRing.digest`, a key of the
server's, never printed or stored next to the data, and not rotated casually), under its own kind, so
it is useless for anything else. A code whose signature does not hold (a swapped wallet id or amount)
is `qr_code_altered`; a code without one (issued before codes were signed) cannot be verified and is
`qr_code_unsigned`: the payee shows a fresh code. The name is not signed but compared with the owner's
current masked name, so a payer is told precisely which field changed.
"""

from __future__ import annotations

import hmac
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
from qianbao.payments.scanning import (
    AmountMismatch,
    QrCodeInvalid,
    QrCodeUnsigned,
    parse_scanned,
    refuse_altered,
)
from qianbao.security.keyring import KeyRing
from qianbao.security.masking import mask_name_for_payee
from qianbao.wallets.service import WalletRow, own_wallet_row, plausible_id, wallet_row

# EMVCo needs a merchant city (ID 60); a person's code has none, so it names the country.
PERSONAL_CITY = "China"
# The key ring digest kind of receive-code signatures (domain separation from blind indexes).
SIGNATURE_KIND = "receive_qr.signature.v1"


@dataclass(frozen=True, slots=True)
class ReceiveQr:
    payload: str
    wallet_id: str
    amount: int | None
    currency: str
    name_masked: str


def code_signature(keys: KeyRing, *, wallet_id: str, currency: str | None, amount: int | None) -> str:
    """The signature a genuine receive code for this wallet, currency and amount carries."""
    message = emvco.personal_signing_message(wallet_id=wallet_id, currency=currency, amount_minor=amount)
    return keys.digest(SIGNATURE_KIND, message)[: emvco.SIGNATURE_HEX_CHARS]


def _shown_name(owner_name: str) -> str:
    return mask_name_for_payee(owner_name)[-emvco.MAX_NAME_CHARS :]


def _genuine_payload(keys: KeyRing, wallet: WalletRow, owner_name: str, amount: int | None) -> str:
    """The code qianbao issues for this wallet and amount, as its records say today."""
    return emvco.build_personal_qr(
        wallet_id=wallet.id,
        name=_shown_name(owner_name),
        city=PERSONAL_CITY,
        currency=wallet.currency,
        amount_minor=amount,
        signature=code_signature(keys, wallet_id=wallet.id, currency=wallet.currency, amount=amount),
    )


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
    payload = _genuine_payload(ctx.keys, wallet, name, amount)
    return ReceiveQr(payload, wallet.id, amount, wallet.currency, _shown_name(name))


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


@dataclass(frozen=True, slots=True)
class PersonalCheck:
    """What the server's records say about a scanned personal code. `reason` is None for a genuine
    code, else `unsigned`, `bad_signature`, `recipient_not_found` or `altered`. The wallet and the
    owner's masked name are known only when the signature holds: a forged code learns nothing; so is
    `issued`, the code qianbao issues for that wallet and amount today."""

    reason: str | None
    differences: tuple[emvco.Difference, ...]
    wallet: WalletRow | None = None
    name_masked: str | None = None
    issued: emvco.ParsedQr | None = None


def check_personal_code(ctx: IdentityContext, conn: Connection, parsed: emvco.ParsedQr) -> PersonalCheck:
    """Check a personal code's signature, then compare it with the code its wallet's records give."""
    wallet_id, signature = parsed.qianbao_wallet_id, parsed.qianbao_signature
    if wallet_id is None or signature is None:  # (no wallet id: not a personal code; callers check first)
        return PersonalCheck("unsigned", ())
    expected = code_signature(
        ctx.keys, wallet_id=wallet_id, currency=parsed.currency, amount=parsed.amount_minor
    )
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        # The right signature is never shown: that would sign any wallet id for whoever asks.
        return PersonalCheck(
            "bad_signature", (emvco.Difference("signature", emvco.SIGNATURE_TAG, signature, None),)
        )
    target = wallet_row(conn, wallet_id) if plausible_id(wallet_id) else None
    account = None if target is None else LedgerReader(ctx.db).get_account(target.id)
    if target is None or account is None or account.status is AccountStatus.CLOSED:
        return PersonalCheck("recipient_not_found", ())
    owner = get_user(conn, ctx.keys, target.user_id)
    if owner.status == "closed":
        return PersonalCheck("recipient_not_found", ())
    genuine = emvco.parse(_genuine_payload(ctx.keys, target, owner.name, parsed.amount_minor))
    found = tuple(emvco.differences(parsed, genuine))
    return PersonalCheck("altered" if found else None, found, target, _shown_name(owner.name), genuine)


def qr_recipient(
    ctx: IdentityContext, conn: Connection, payload: object, *, amount: int, currency_code: str
) -> WalletRow:
    """The wallet a personal code pays, checked against the records and the transfer's amount.

    An unsigned code is `qr_code_unsigned`; a code whose signature does not hold or whose fields differ
    from the records (a swapped wallet id, a changed name) is `qr_code_altered`; unknown or closed
    wallets (or closed users) are `recipient_not_found`; an amount embedded in the code must equal the
    transfer's (`amount_mismatch`): the payer's app shows it and must not change it."""
    parsed = parse_personal_qr(payload)
    check = check_personal_code(ctx, conn, parsed)
    if check.reason == "unsigned":
        raise QrCodeUnsigned(
            "this receive code carries no signature (it predates signed codes): ask the payee for a "
            "fresh code",
            field="qr",
        )
    if check.reason == "recipient_not_found":
        raise recipient_not_found("the wallet of this code does not exist or is closed", by="receive_code")
    refuse_altered(check.differences)
    if check.wallet is None:  # pragma: no cover - every other reason has been refused above
        raise recipient_not_found("the wallet of this code does not exist or is closed", by="receive_code")
    if parsed.currency != currency_code:
        raise CurrencyMismatch(f"the code asks for {parsed.currency}, not {currency_code}", field="qr")
    if parsed.amount_minor is not None and parsed.amount_minor != amount:
        raise AmountMismatch(
            "the amount differs from the amount in the QR code",
            field="amount",
            expected={"amount": parsed.amount_minor, "currency": parsed.currency},
        )
    return check.wallet


def qr_svg_document(payload: str, *, scale: int = 4) -> bytes:
    """The code as a standalone SVG file (with its XML namespace; `emvco.qr_svg` is for inline use)."""
    out = io.BytesIO()
    segno.make(payload, error="m", micro=False, encoding="utf-8").save(out, kind="svg", scale=scale)
    return out.getvalue()

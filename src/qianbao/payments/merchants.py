"""Merchants: a business profile owned by a user, with its own merchant wallet (a ledger account).

A merchant has a name and city (as printed on its QR code: at most 25 and 15 characters, the EMVCo
limits), a merchant category code (ISO 18245, four digits) that sets its discount rate, and a status:
only an `active` merchant can be paid. The merchant wallet is a ledger account that can never go negative
and has no balance cap (consumer KYC caps do not apply to business takings); its id is `mwl_…`.

Who may act for a merchant: its owner, signed in, or an API key of the owner with the right scope (the
route decides the scope). Anyone else gets 404, as for wallets.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select

from qianbao import invalid
from qianbao.errors import Conflict, Locked, NotFound
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, RequestInfo
from qianbao.ids import new_id
from qianbao.ledger.model import AccountSpec, ResultCode
from qianbao.ledger.system_accounts import system_account_specs
from qianbao.payments import emvco
from qianbao.payments.fees import fee_rate_ppm
from qianbao.payments.inputs import require_user_id
from qianbao.payments.merchant_tables import merchants
from qianbao.security import audit
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.service import plausible_id

MERCHANT_WALLET_CODE = "wallet.merchant"
MAX_MERCHANTS_PER_USER = 5
MERCHANT_CURRENCIES = ("CNY",)


class MerchantNotFound(NotFound):
    """A QR code or charge names a merchant that does not exist (or is closed)."""

    code = "merchant_not_found"


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    owner_user_id: str
    name: str
    mcc: str
    city: str
    wallet_id: str
    currency: str
    status: str
    created_at: int


def _merchant(row: Any) -> Merchant:
    m = row._mapping
    return Merchant(
        id=str(m["id"]),
        owner_user_id=str(m["owner_user_id"]),
        name=str(m["name"]),
        mcc=str(m["mcc"]),
        city=str(m["city"]),
        wallet_id=str(m["wallet_id"]),
        currency=str(m["currency"]),
        status=str(m["status"]),
        created_at=int(m["created_at"]),
    )


def _clean_text(field: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str):
        raise invalid.not_text(field)
    cleaned = unicodedata.normalize("NFC", " ".join(value.split()))
    if not cleaned or len(cleaned) > max_chars:
        raise invalid.text_length(field, max_chars)
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise invalid.control_characters(field)
    return cleaned


def clean_mcc(value: object) -> str:
    if not (isinstance(value, str) and len(value) == 4 and value.isascii() and value.isdigit()):
        raise invalid.invalid_format("mcc", "mcc must be a four-digit merchant category code (ISO 18245)")
    if value == "0000":
        raise invalid.invalid_format("mcc", "0000 is not a merchant category code")
    return value


def merchant_by_id(conn: Connection, merchant_id: str) -> Merchant | None:
    if not plausible_id(merchant_id):
        return None
    row = conn.execute(select(merchants).where(merchants.c.id == merchant_id)).first()
    return None if row is None else _merchant(row)


def own_merchant(conn: Connection, principal: Principal, merchant_id: str) -> Merchant:
    """The caller's merchant, or 404 (someone else's merchant does not exist for them)."""
    user_id = require_user_id(principal)
    merchant = merchant_by_id(conn, merchant_id)
    if merchant is None or merchant.owner_user_id != user_id:
        raise NotFound("no such merchant")
    return merchant


def payable_merchant(conn: Connection, merchant_id: str | None) -> Merchant:
    """The merchant a customer is about to pay: it must exist and be active."""
    return payable(None if merchant_id is None else merchant_by_id(conn, merchant_id))


def merchants_by_ids(conn: Connection, merchant_ids: Iterable[str | None]) -> dict[str, Merchant]:
    ids = sorted({m for m in merchant_ids if m is not None and plausible_id(m)})
    if not ids:
        return {}
    return {str(r.id): _merchant(r) for r in conn.execute(select(merchants).where(merchants.c.id.in_(ids)))}


def payable(merchant: Merchant | None) -> Merchant:
    """`payable_merchant` of a merchant already read."""
    if merchant is None or merchant.status == "closed":
        raise MerchantNotFound("no merchant with this id accepts payments")
    if merchant.status != "active":
        raise Locked("merchant_inactive", "this merchant cannot accept payments at the moment")
    return merchant


def merchant_names_by_wallet(conn: Connection, wallet_ids: set[str]) -> dict[str, Merchant]:
    """Merchants by their wallet id (history shows a merchant as the counterparty by name)."""
    ids = [w for w in wallet_ids if plausible_id(w)]
    if not ids:
        return {}
    rows = conn.execute(select(merchants).where(merchants.c.wallet_id.in_(ids)))
    return {str(r.wallet_id): _merchant(r) for r in rows}


def rate_for(ctx: IdentityContext, merchant: Merchant) -> int:
    settings = ctx.settings
    return fee_rate_ppm(merchant.mcc, settings.merchant_fee_ppm, settings.merchant_fee_ppm_by_mcc)


def create_merchant(
    ctx: IdentityContext,
    principal: Principal,
    *,
    name: object,
    mcc: object,
    city: object,
    currency_code: str | None,
    info: RequestInfo,
) -> Merchant:
    """Register a merchant for the caller and open its merchant wallet, in one transaction."""
    user_id = require_user_id(principal)
    clean_name = _clean_text("name", name, emvco.MAX_NAME_CHARS)
    clean_city = _clean_text("city", city, emvco.MAX_CITY_CHARS)
    code = clean_mcc(mcc)
    currency_code = "CNY" if currency_code is None else currency_code
    if currency_code not in MERCHANT_CURRENCIES:
        raise invalid.currency_only("currency", "CNY", "merchants take CNY only for now")
    now = ctx.now()
    merchant_id = new_id("mch")
    wallet_id = new_id("mwl")
    with ctx.uow() as uow:
        conn = uow.conn
        count = conn.execute(
            select(func.count()).select_from(merchants).where(merchants.c.owner_user_id == user_id)
        ).scalar_one()
        if count >= MAX_MERCHANTS_PER_USER:
            raise Conflict(
                f"at most {MAX_MERCHANTS_PER_USER} merchants per user", limit=MAX_MERCHANTS_PER_USER
            )
        spec = AccountSpec(
            id=wallet_id,
            currency=currency_code,
            code=MERCHANT_WALLET_CODE,
            owner_ref=merchant_id,
            debits_must_not_exceed_credits=True,
        )
        # The fee account must exist before the first payment's fee can be posted to it.
        system = system_account_specs(currency_code, sandbox=ctx.settings.is_sandbox)
        *system_results, result = ctx.ledger.create_accounts_in(conn, [*system, spec])
        if result.code is not ResultCode.OK or any(
            r.code not in (ResultCode.OK, ResultCode.EXISTS) for r in system_results
        ):
            raise Conflict(f"the merchant wallet could not be opened: {result.code}")
        conn.execute(
            insert(merchants).values(
                id=merchant_id,
                owner_user_id=user_id,
                name=clean_name,
                mcc=code,
                city=clean_city,
                wallet_id=wallet_id,
                currency=currency_code,
                status="active",
                created_at=now,
            )
        )
        audit.record(
            conn,
            now,
            "merchant.created",
            audit.Actor(
                "user", user_id, ip=info.ip, device_id=principal.device_id, session_id=principal.session_id
            ),
            subject_user_id=user_id,
            details={"merchant_id": merchant_id, "mcc": code},
        )
        uow.emit(
            OutboxEvent(
                "merchant.created",
                "merchant",
                merchant_id,
                {"merchant_id": merchant_id, "merchant_user_id": user_id, "mcc": code},
            )
        )
        uow.commit()
    return Merchant(
        merchant_id, user_id, clean_name, code, clean_city, wallet_id, currency_code, "active", now
    )


def get_merchant(ctx: IdentityContext, principal: Principal, merchant_id: str) -> Merchant:
    with ctx.db.read() as conn:
        return own_merchant(conn, principal, merchant_id)


def list_merchants(ctx: IdentityContext, principal: Principal) -> list[Merchant]:
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(merchants)
            .where(merchants.c.owner_user_id == user_id)
            .order_by(merchants.c.created_at, merchants.c.id)
        )
        return [_merchant(r) for r in rows]


def static_qr_payload(merchant: Merchant) -> str:
    """The merchant's printed code: static (`11`), no amount: the customer enters it."""
    return emvco.build_merchant_qr(
        merchant_id=merchant.id,
        name=merchant.name,
        city=merchant.city,
        mcc=merchant.mcc,
        currency=merchant.currency,
        dynamic=False,
    )

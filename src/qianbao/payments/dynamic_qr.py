"""Dynamic merchant-presented QR codes: amount and order embedded, single use, expiring.

A merchant (or its till, with an API key) creates a code for one order; the payload is EMVCo with point
of initiation `12`, the amount in ID 54 and an unguessable reference in the additional data (62/05). The
first successful payment claims the code with a conditional UPDATE in the payment's own transaction
(`claim`), so two customers scanning the same code cannot both pay it; an expired or canceled code cannot
be paid at all. `expired` is not stored: an `active` code past `expires_at` is shown as expired.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from qianbao import invalid
from qianbao.errors import Conflict, Locked, NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ids import new_id
from qianbao.payments import emvco
from qianbao.payments.inputs import check_amount
from qianbao.payments.merchant_tables import merchant_qr_codes
from qianbao.payments.merchants import Merchant, own_merchant
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.service import plausible_id

MAX_ORDER_ID = 64
_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class QrCodeExpired(QianbaoError):
    code = "qr_code_expired"


class QrCodeUsed(Conflict):
    code = "qr_code_used"


@dataclass(frozen=True, slots=True)
class DynamicQr:
    id: str
    merchant_id: str
    reference: str
    amount: int
    currency: str
    order_id: str | None
    status: str  # active | paid | canceled (stored); `shown_status` adds expired
    payment_id: str | None
    created_at: int
    expires_at: int

    def shown_status(self, now_us: int) -> str:
        if self.status == "active" and now_us >= self.expires_at:
            return "expired"
        return self.status


def _code(row: Any) -> DynamicQr:
    m = row._mapping
    return DynamicQr(
        id=m["id"],
        merchant_id=m["merchant_id"],
        reference=m["reference"],
        amount=int(m["amount"]),
        currency=m["currency"],
        order_id=m["order_id"],
        status=m["status"],
        payment_id=m["payment_id"],
        created_at=int(m["created_at"]),
        expires_at=int(m["expires_at"]),
    )


def clean_order_id(order_id: object) -> str | None:
    """A merchant's order number: printable ASCII without spaces, up to 64 characters."""
    if order_id is None:
        return None
    if not (
        isinstance(order_id, str)
        and 0 < len(order_id) <= MAX_ORDER_ID
        and order_id.isascii()
        and order_id.isprintable()
        and " " not in order_id
    ):
        raise invalid.invalid_format(
            "order_id", f"order_id must be 1 to {MAX_ORDER_ID} printable ASCII characters without spaces"
        )
    return order_id


def payload_for(merchant: Merchant, code: DynamicQr) -> str:
    return emvco.build_merchant_qr(
        merchant_id=merchant.id,
        name=merchant.name,
        city=merchant.city,
        mcc=merchant.mcc,
        currency=code.currency,
        amount_minor=code.amount,
        order_ref=code.reference,
        dynamic=True,
    )


def create_code(
    ctx: IdentityContext,
    principal: Principal,
    merchant_id: str,
    *,
    amount: int,
    currency_code: str,
    order_id: object,
    expires_in_s: int | None,
) -> tuple[Merchant, DynamicQr]:
    check_amount(amount, currency_code)
    order = clean_order_id(order_id)
    ttl = ctx.settings.dynamic_qr_ttl_s if expires_in_s is None else expires_in_s
    if type(ttl) is not int or not 30 <= ttl <= 24 * 3600:
        raise invalid.seconds_range("expires_in", 30, 24 * 3600)
    now = ctx.now()
    code = DynamicQr(
        id=new_id("qrc"),
        merchant_id=merchant_id,
        reference="Q" + "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(20)),
        amount=amount,
        currency=currency_code,
        order_id=order,
        status="active",
        payment_id=None,
        created_at=now,
        expires_at=now + ttl * 1_000_000,
    )
    with ctx.uow() as uow:
        merchant = own_merchant(uow.conn, principal, merchant_id)
        if merchant.status != "active":
            raise Locked("merchant_inactive", "the merchant is not active", merchant_status=merchant.status)
        if currency_code != merchant.currency:
            raise invalid.currency_only(
                "currency", merchant.currency, f"the merchant takes {merchant.currency}"
            )
        payload_for(merchant, code)  # the amount must fit an EMVCo code before anything is stored
        uow.conn.execute(insert(merchant_qr_codes).values(**_values(code)))
        uow.emit(
            OutboxEvent(
                "qr_code.created",
                "qr_code",
                code.id,
                {
                    "qr_code_id": code.id,
                    "merchant_id": merchant.id,
                    "merchant_user_id": merchant.owner_user_id,
                },
            )
        )
        uow.commit()
    return merchant, code


def _values(code: DynamicQr) -> dict[str, Any]:
    return {
        "id": code.id,
        "merchant_id": code.merchant_id,
        "reference": code.reference,
        "amount": code.amount,
        "currency": code.currency,
        "order_id": code.order_id,
        "status": code.status,
        "payment_id": code.payment_id,
        "created_at": code.created_at,
        "expires_at": code.expires_at,
    }


def get_code(
    ctx: IdentityContext, principal: Principal, merchant_id: str, code_id: str
) -> tuple[Merchant, DynamicQr]:
    with ctx.db.read() as conn:
        merchant = own_merchant(conn, principal, merchant_id)
        found = code_by_id(conn, code_id)
    if found is None or found.merchant_id != merchant.id:
        raise NotFound("no such QR code")
    return merchant, found


def cancel_code(
    ctx: IdentityContext, principal: Principal, merchant_id: str, code_id: str
) -> tuple[Merchant, DynamicQr]:
    """Withdraw an unpaid code (the customer walked away); a paid code stays paid."""
    with ctx.uow() as uow:
        merchant = own_merchant(uow.conn, principal, merchant_id)
        found = code_by_id(uow.conn, code_id)
        if found is None or found.merchant_id != merchant.id:
            raise NotFound("no such QR code")
        if found.status == "paid":
            raise QrCodeUsed(
                "this code has been paid; refund the payment instead", payment_id=found.payment_id
            )
        uow.conn.execute(
            update(merchant_qr_codes)
            .where(merchant_qr_codes.c.id == code_id, merchant_qr_codes.c.status == "active")
            .values(status="canceled")
        )
        uow.commit()
    return merchant, code_by_id_read(ctx, code_id)


def code_by_id(conn: Connection, code_id: str) -> DynamicQr | None:
    if not plausible_id(code_id):
        return None
    row = conn.execute(select(merchant_qr_codes).where(merchant_qr_codes.c.id == code_id)).first()
    return None if row is None else _code(row)


def code_by_id_read(ctx: IdentityContext, code_id: str) -> DynamicQr:
    with ctx.db.read() as conn:
        found = code_by_id(conn, code_id)
    if found is None:
        raise NotFound("no such QR code")
    return found


def code_by_reference(conn: Connection, merchant_id: str, reference: str | None) -> DynamicQr | None:
    if reference is None or not plausible_id(reference):
        return None
    row = conn.execute(
        select(merchant_qr_codes).where(
            merchant_qr_codes.c.reference == reference, merchant_qr_codes.c.merchant_id == merchant_id
        )
    ).first()
    return None if row is None else _code(row)


def check_payable(code: DynamicQr | None, now_us: int) -> DynamicQr:
    """Refuse a code that cannot be paid, with the reason the customer needs."""
    if code is None:
        raise QrCodeExpired("this code is not valid any more: ask the merchant for a new one")
    if code.status == "paid":
        raise QrCodeUsed("this code has already been paid")
    if code.status == "canceled" or now_us >= code.expires_at:
        raise QrCodeExpired("this code has expired: ask the merchant for a new one", expired=True)
    return code


def claim(conn: Connection, code: DynamicQr, payment_id: str, now_us: int) -> None:
    """Mark the code paid in the payment's transaction; raises if another payment got it first."""
    claimed = conn.execute(
        update(merchant_qr_codes)
        .where(
            merchant_qr_codes.c.id == code.id,
            merchant_qr_codes.c.status == "active",
            merchant_qr_codes.c.expires_at > now_us,
        )
        .values(status="paid", payment_id=payment_id)
    ).rowcount
    if claimed != 1:
        current = code_by_id(conn, code.id)
        check_payable(current, now_us)
        raise QrCodeUsed("this code has already been paid")

"""Merchant payment and refund records: rows of `merchant_payments` and `refunds`, and their outbox events.

The customer's note on a payment and the merchant's reason for a refund are free text (often names or
phone numbers), stored encrypted like transfer memos. Events carry ids and amounts only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, Table, select

from qianbao import invalid
from qianbao.payments.merchant_tables import merchant_payments, refunds
from qianbao.security.fields import context
from qianbao.security.keyring import KeyRing
from qianbao.store.outbox import OutboxEvent

PAYMENT_MEMO_CONTEXT = context("merchant_payments", "memo_cipher")
REFUND_REASON_CONTEXT = context("refunds", "reason_cipher")


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    id: str
    ledger_transfer_id: str
    method: str
    merchant_id: str
    merchant_user_id: str
    merchant_wallet_id: str
    payer_user_id: str
    payer_wallet_id: str
    amount: int
    currency: str
    fee: int
    refunded_amount: int
    fee_refunded: int
    status: str
    failure_code: str | None
    order_id: str | None
    qr_code_id: str | None
    memo: str | None
    created_at: int
    expires_at: int | None = None  # a pending payment's confirmation deadline

    @property
    def refund_status(self) -> str:
        if self.refunded_amount == 0:
            return "none"
        return "refunded" if self.refunded_amount == self.amount else "partially_refunded"


@dataclass(frozen=True, slots=True)
class RefundRecord:
    id: str
    payment_id: str
    ledger_transfer_id: str
    amount: int
    fee_refunded: int
    currency: str
    to_wallet_id: str
    status: str
    failure_code: str | None
    reason: str | None
    created_at: int


def payment_from_row(row: Any, keys: KeyRing) -> PaymentRecord:
    m = row._mapping
    return PaymentRecord(
        id=m["id"],
        ledger_transfer_id=m["ledger_transfer_id"],
        method=m["method"],
        merchant_id=m["merchant_id"],
        merchant_user_id=m["merchant_user_id"],
        merchant_wallet_id=m["merchant_wallet_id"],
        payer_user_id=m["payer_user_id"],
        payer_wallet_id=m["payer_wallet_id"],
        amount=int(m["amount"]),
        currency=m["currency"],
        fee=int(m["fee"]),
        refunded_amount=int(m["refunded_amount"]),
        fee_refunded=int(m["fee_refunded"]),
        status=m["status"],
        failure_code=m["failure_code"],
        order_id=m["order_id"],
        qr_code_id=m["qr_code_id"],
        memo=keys.decrypt_optional(m["memo_cipher"], context=PAYMENT_MEMO_CONTEXT),
        created_at=int(m["created_at"]),
        expires_at=None if m["expires_at"] is None else int(m["expires_at"]),
    )


def refund_from_row(row: Any, keys: KeyRing) -> RefundRecord:
    m = row._mapping
    return RefundRecord(
        id=m["id"],
        payment_id=m["payment_id"],
        ledger_transfer_id=m["ledger_transfer_id"],
        amount=int(m["amount"]),
        fee_refunded=int(m["fee_refunded"]),
        currency=m["currency"],
        to_wallet_id=m["to_wallet_id"],
        status=m["status"],
        failure_code=m["failure_code"],
        reason=keys.decrypt_optional(m["reason_cipher"], context=REFUND_REASON_CONTEXT),
        created_at=int(m["created_at"]),
    )


def _one(conn: Connection, table: Table, id: str | None, ledger_id: str | None) -> Row[Any] | None:
    """The row with this id or this ledger transfer id (both are unique)."""
    if id is not None:
        return conn.execute(select(table).where(table.c.id == id)).first()
    if ledger_id is not None:
        return conn.execute(select(table).where(table.c.ledger_transfer_id == ledger_id)).first()
    raise ValueError("give id or ledger_id")


def payment_by(
    conn: Connection, keys: KeyRing, *, id: str | None = None, ledger_id: str | None = None
) -> PaymentRecord | None:
    row = _one(conn, merchant_payments, id, ledger_id)
    return None if row is None else payment_from_row(row, keys)


def payments_by_ledger_ids(
    conn: Connection, keys: KeyRing, ledger_ids: list[str]
) -> dict[str, PaymentRecord]:
    """Payment records by their main ledger transfer id (history: order id, note, merchant)."""
    if not ledger_ids:
        return {}
    rows = conn.execute(
        select(merchant_payments).where(merchant_payments.c.ledger_transfer_id.in_(ledger_ids))
    )
    return {str(r.ledger_transfer_id): payment_from_row(r, keys) for r in rows}


def payments_by_ids(
    conn: Connection, keys: KeyRing, ids: Iterable[str], *, lock: bool = False
) -> dict[str, PaymentRecord]:
    """Payment records by id, one statement for all of them. With `lock` (PostgreSQL; SQLite has one
    writer) the rows are locked in id order for the rest of the caller's transaction."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    query = select(merchant_payments).where(merchant_payments.c.id.in_(wanted))
    if lock and conn.dialect.name == "postgresql":
        query = query.order_by(merchant_payments.c.id).with_for_update()
    rows = conn.execute(query)
    return {str(r.id): payment_from_row(r, keys) for r in rows}


def refunds_by_ledger_ids(
    conn: Connection, keys: KeyRing, ledger_ids: Iterable[str]
) -> dict[str, RefundRecord]:
    """Refund records by their ledger transfer id (an earlier attempt's outcome), one statement."""
    wanted = sorted(set(ledger_ids))
    if not wanted:
        return {}
    rows = conn.execute(select(refunds).where(refunds.c.ledger_transfer_id.in_(wanted)))
    return {str(r.ledger_transfer_id): refund_from_row(r, keys) for r in rows}


def payment_row(keys: KeyRing, p: PaymentRecord, scope: str, key: str | None) -> dict[str, Any]:
    """The record as a row of `merchant_payments` (the note encrypted; the key bound, if there is one)."""
    return {
        "id": p.id,
        "ledger_transfer_id": p.ledger_transfer_id,
        "method": p.method,
        "merchant_id": p.merchant_id,
        "merchant_user_id": p.merchant_user_id,
        "merchant_wallet_id": p.merchant_wallet_id,
        "payer_user_id": p.payer_user_id,
        "payer_wallet_id": p.payer_wallet_id,
        "amount": p.amount,
        "currency": p.currency,
        "fee": p.fee,
        "refunded_amount": p.refunded_amount,
        "fee_refunded": p.fee_refunded,
        "status": p.status,
        "failure_code": p.failure_code,
        "order_id": p.order_id,
        "qr_code_id": p.qr_code_id,
        "memo_cipher": None if p.memo is None else keys.encrypt(p.memo, context=PAYMENT_MEMO_CONTEXT),
        "created_at": p.created_at,
        "expires_at": p.expires_at,
        "idempotency_scope": scope if key is not None else None,
        "idempotency_key": key,
    }


def refund_row(keys: KeyRing, r: RefundRecord, scope: str, key: str | None) -> dict[str, Any]:
    """The record as a row of `refunds` (the reason encrypted; the key bound, if there is one)."""
    return {
        "id": r.id,
        "payment_id": r.payment_id,
        "ledger_transfer_id": r.ledger_transfer_id,
        "amount": r.amount,
        "fee_refunded": r.fee_refunded,
        "currency": r.currency,
        "to_wallet_id": r.to_wallet_id,
        "status": r.status,
        "failure_code": r.failure_code,
        "reason_cipher": None if r.reason is None else keys.encrypt(r.reason, context=REFUND_REASON_CONTEXT),
        "created_at": r.created_at,
        "idempotency_scope": scope if key is not None else None,
        "idempotency_key": key,
    }


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def payment_event(p: PaymentRecord, event_type: str | None = None) -> OutboxEvent:
    """`payment.succeeded` / `payment.failed` (or an explicit type): ids and amounts, no personal data.
    No fee either: the payer receives these events too, and the fee is the merchant's business (the
    merchant reads it with `GET /v1/payments/{id}`)."""
    payload = {
        "payment_id": p.id,
        "status": p.status,
        "method": p.method,
        "merchant_id": p.merchant_id,
        "merchant_user_id": p.merchant_user_id,
        "payer_user_id": p.payer_user_id,
        "payer_wallet_id": p.payer_wallet_id,
        "amount": _money(p.amount, p.currency),
        "order_id": p.order_id,
        "failure_code": p.failure_code,
    }
    return OutboxEvent(event_type or f"payment.{p.status}", "payment", p.id, payload)


def refund_event(r: RefundRecord, p: PaymentRecord) -> OutboxEvent:
    payload = {
        "refund_id": r.id,
        "payment_id": p.id,
        "status": r.status,
        "merchant_id": p.merchant_id,
        "merchant_user_id": p.merchant_user_id,
        "payer_user_id": p.payer_user_id,
        "to_wallet_id": r.to_wallet_id,
        "amount": _money(r.amount, r.currency),
        "order_id": p.order_id,
        "failure_code": r.failure_code,
    }
    return OutboxEvent(f"refund.{r.status}", "refund", r.id, payload)


def _cursor(record: PaymentRecord) -> str:
    return f"{record.created_at}.{record.id}"


def payments_page(
    conn: Connection, keys: KeyRing, merchant_id: str, *, limit: int, cursor: str | None
) -> tuple[list[PaymentRecord], str | None]:
    """A merchant's payments, newest first, `limit` per page; the cursor is `<created_at>.<id>`. Declined
    attempts are the payer's business and not listed."""
    query = select(merchant_payments).where(
        merchant_payments.c.merchant_id == merchant_id, merchant_payments.c.status != "failed"
    )
    if cursor is not None:
        at, _, after_id = cursor.partition(".")
        if not (at.isdigit() and after_id and len(cursor) <= 80):
            raise invalid.cursor()
        query = query.where(
            (merchant_payments.c.created_at < int(at))
            | ((merchant_payments.c.created_at == int(at)) & (merchant_payments.c.id < after_id))
        )
    rows = conn.execute(
        query.order_by(merchant_payments.c.created_at.desc(), merchant_payments.c.id.desc()).limit(limit + 1)
    ).all()
    page = [payment_from_row(r, keys) for r in rows[:limit]]
    return page, (_cursor(page[-1]) if len(rows) > limit and page else None)


def merchant_entries(
    conn: Connection, keys: KeyRing, ledger_ids: list[str]
) -> dict[str, tuple[PaymentRecord, RefundRecord | None]]:
    """For wallet history: the payment (and refund) behind each ledger transfer of a merchant payment.

    A payment's transfers are its id, `<id>:post` (a confirmed hold) and `<id>:void`; a refund's is the
    refund's own id."""
    if not ledger_ids:
        return {}
    base = {i: i.removesuffix(":post").removesuffix(":void") for i in ledger_ids}
    found_refunds = {
        str(r.ledger_transfer_id): refund_from_row(r, keys)
        for r in conn.execute(select(refunds).where(refunds.c.ledger_transfer_id.in_(ledger_ids)))
    }
    payment_ids = {r.payment_id for r in found_refunds.values()}
    rows = conn.execute(
        select(merchant_payments).where(
            merchant_payments.c.ledger_transfer_id.in_(set(base.values()))
            | merchant_payments.c.id.in_(payment_ids)
        )
    )
    payments = [payment_from_row(r, keys) for r in rows]
    by_ledger = {p.ledger_transfer_id: p for p in payments}
    by_id = {p.id: p for p in payments}
    result: dict[str, tuple[PaymentRecord, RefundRecord | None]] = {}
    for ledger_id in ledger_ids:
        refund = found_refunds.get(ledger_id)
        if refund is not None and refund.payment_id in by_id:
            result[ledger_id] = (by_id[refund.payment_id], refund)
        elif base[ledger_id] in by_ledger:
            result[ledger_id] = (by_ledger[base[ledger_id]], None)
    return result

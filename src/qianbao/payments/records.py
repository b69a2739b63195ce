"""Transfer records: the `transfers` table (succeeded and failed P2P transfers, each bound to its ledger
transfer id and Idempotency-Key) and the outbox event written with each record.

The table is read by the transfer use case (replays, new-payee checks) and by wallet history (memo and
transfer id per ledger entry); keeping row access here gives both one mapping. The memo is free text
that often holds names and phone numbers, so it is stored encrypted (`memo_cipher`) like other personal
data: `TransferRecord.memo` is the clear text, and only this module turns it into a column and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from qianbao.payments.tables import transfers
from qianbao.security.fields import context
from qianbao.security.keyring import KeyRing
from qianbao.store.outbox import OutboxEvent

MEMO_CONTEXT = context("transfers", "memo_cipher")


@dataclass(frozen=True, slots=True)
class TransferRecord:
    id: str
    ledger_transfer_id: str
    from_wallet_id: str
    to_wallet_id: str
    from_user_id: str
    to_user_id: str
    amount: int
    currency: str
    memo: str | None
    status: str
    failure_code: str | None
    created_at: int


def record_from_row(row: Any, keys: KeyRing) -> TransferRecord:
    return TransferRecord(
        id=row.id,
        ledger_transfer_id=row.ledger_transfer_id,
        from_wallet_id=row.from_wallet_id,
        to_wallet_id=row.to_wallet_id,
        from_user_id=row.from_user_id,
        to_user_id=row.to_user_id,
        amount=int(row.amount),
        currency=row.currency,
        memo=keys.decrypt_optional(row.memo_cipher, context=MEMO_CONTEXT),
        status=row.status,
        failure_code=row.failure_code,
        created_at=int(row.created_at),
    )


def records_by_ledger_ids(
    conn: Connection, keys: KeyRing, ledger_ids: list[str]
) -> dict[str, TransferRecord]:
    if not ledger_ids:
        return {}
    rows = conn.execute(select(transfers).where(transfers.c.ledger_transfer_id.in_(ledger_ids)))
    return {r.ledger_transfer_id: record_from_row(r, keys) for r in rows}


def record_row(keys: KeyRing, record: TransferRecord, scope: str, key: str | None) -> dict[str, Any]:
    """The record as a row of `transfers` (the memo encrypted; the key bound, if there is one)."""
    return {
        "id": record.id,
        "ledger_transfer_id": record.ledger_transfer_id,
        "from_wallet_id": record.from_wallet_id,
        "to_wallet_id": record.to_wallet_id,
        "from_user_id": record.from_user_id,
        "to_user_id": record.to_user_id,
        "amount": record.amount,
        "currency": record.currency,
        "memo_cipher": None if record.memo is None else keys.encrypt(record.memo, context=MEMO_CONTEXT),
        "status": record.status,
        "failure_code": record.failure_code,
        "created_at": record.created_at,
        "idempotency_scope": scope if key is not None else None,
        "idempotency_key": key,
    }


def transfer_event(record: TransferRecord) -> OutboxEvent:
    # Ids and amounts only: no names, phone numbers or memo (free text may hold personal data).
    payload = {
        "transfer_id": record.id,
        "status": record.status,
        "from_wallet_id": record.from_wallet_id,
        "to_wallet_id": record.to_wallet_id,
        "from_user_id": record.from_user_id,
        "to_user_id": record.to_user_id,
        "amount": {"amount": record.amount, "currency": record.currency},
        "failure_code": record.failure_code,
    }
    return OutboxEvent(f"transfer.{record.status}", "transfer", record.id, payload)

"""Money requests (migration 0007): one user asks another for an amount; the payer accepts or declines.

`status` is stored as `pending`, `paid`, `declined` or `canceled`; `expired` is not stored: a `pending`
request past `expires_at` is shown as expired and can no longer be acted on (every state change is a
conditional UPDATE that re-checks both). A paid request names its transfer (`transfer_id`, unique: one
transfer pays at most one request), written in the same transaction as the ledger transfer. The memo and
the decline reason are free text, so they are stored encrypted like transfer memos.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, String, Table, Text

from qianbao.store.metadata import metadata

REQUEST_STATUSES = ("pending", "paid", "declined", "canceled", "expired")

money_requests = Table(
    "money_requests",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("requester_user_id", String(40), nullable=False),
    Column("to_wallet_id", String(40), nullable=False),
    Column("payer_user_id", String(40), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("memo_cipher", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("transfer_id", String(40), nullable=True, unique=True),
    Column("from_wallet_id", String(40), nullable=True),
    Column("decline_reason_cipher", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("resolved_at", BigInteger, nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(f"status IN {REQUEST_STATUSES!r}", name="status"),
    CheckConstraint("requester_user_id <> payer_user_id", name="parties_differ"),
    CheckConstraint("(status = 'paid') = (transfer_id IS NOT NULL)", name="transfer_iff_paid"),
    CheckConstraint("(status = 'pending') = (resolved_at IS NULL)", name="resolved_iff_not_pending"),
    # Each party's list, newest first (ids sort by creation time).
    Index("ix_money_requests_payer_user_id_id", "payer_user_id", "id"),
    Index("ix_money_requests_requester_user_id_id", "requester_user_id", "id"),
)

"""The message log: every SMS and e-mail the notifier sent, encrypted (migration 0002).

In sandbox mode it is also the "outbox" that `GET /v1/sandbox/messages` reads.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from qianbao.store.metadata import metadata

messages = Table(
    "messages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("channel", String(8), nullable=False),
    Column("to_index", String(64), nullable=False),
    Column("to_cipher", Text, nullable=False),
    Column("template", String(64), nullable=False),
    Column("text_cipher", Text, nullable=False),
    Column("code_cipher", Text, nullable=True),
    Column("user_id", String(40), nullable=True),
    Column("sent_at", BigInteger, nullable=False),
    Index("ix_messages_to_index_sent_at", "to_index", "sent_at"),
)

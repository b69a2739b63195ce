"""The notifier port: SMS and e-mail to people, through a gateway adapter, with an encrypted message log.

Every message is logged (recipient, text and any one-time code encrypted; the recipient also as a blind
index so it can be looked up). In sandbox mode the log *is* the delivery: `GET /v1/sandbox/messages`
reads it. A real deployment plugs an SMS/e-mail gateway in behind `MessageGateway`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, insert, select

from qianbao.clock import Clock
from qianbao.ids import new_id
from qianbao.notify.tables import messages
from qianbao.security.fields import context
from qianbao.security.keyring import KeyRing

log = logging.getLogger(__name__)

SMS = "sms"
EMAIL = "email"


class MessageGateway(Protocol):
    def deliver(self, channel: str, to: str, text: str) -> None: ...


class SandboxGateway:
    """Delivers nothing: in sandbox mode people read their messages from the message log."""

    def deliver(self, channel: str, to: str, text: str) -> None:
        del channel, to, text


@dataclass(frozen=True, slots=True)
class SentMessage:
    id: str
    channel: str
    to: str
    template: str
    text: str
    code: str | None
    sent_at_us: int


class Notifier:
    def __init__(self, keyring: KeyRing, clock: Clock, gateway: MessageGateway | None = None) -> None:
        self._keys = keyring
        self._clock = clock
        self._gateway = gateway or SandboxGateway()

    def send(
        self,
        conn: Connection,
        *,
        to: str,
        template: str,
        text: str,
        code: str | None = None,
        user_id: str | None = None,
        channel: str = SMS,
    ) -> str:
        """Log the message in the caller's transaction and hand it to the gateway."""
        message_id = new_id("msg")
        conn.execute(
            insert(messages).values(
                id=message_id,
                channel=channel,
                to_index=self._keys.digest(channel, to),
                to_cipher=self._keys.encrypt(to, context=context("messages", "to_cipher")),
                template=template,
                text_cipher=self._keys.encrypt(text, context=context("messages", "text_cipher")),
                code_cipher=None
                if code is None
                else self._keys.encrypt(code, context=context("messages", "code_cipher")),
                user_id=user_id,
                sent_at=self._clock.now_us(),
            )
        )
        # Log the template and id only: the recipient and text are personal data.
        log.info("message %s (%s, %s) sent", message_id, channel, template)
        self._gateway.deliver(channel, to, text)
        return message_id

    def sent_to(self, conn: Connection, to: str, *, channel: str = SMS, limit: int = 50) -> list[SentMessage]:
        """Messages sent to one recipient, newest first."""
        rows = conn.execute(
            select(messages)
            .where(messages.c.to_index == self._keys.digest(channel, to))
            .order_by(messages.c.sent_at.desc(), messages.c.id.desc())
            .limit(limit)
        )
        return [
            SentMessage(
                id=r.id,
                channel=r.channel,
                to=self._keys.decrypt(r.to_cipher, context=context("messages", "to_cipher")),
                template=r.template,
                text=self._keys.decrypt(r.text_cipher, context=context("messages", "text_cipher")),
                code=self._keys.decrypt_optional(r.code_cipher, context=context("messages", "code_cipher")),
                sent_at_us=r.sent_at,
            )
            for r in rows
        ]

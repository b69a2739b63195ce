"""Users as stored: reading a user (decrypting their personal data) and finding one by phone number.

Only this module and the use cases that change a user touch `users` directly; other capabilities ask
through these functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Row, select

from qianbao.errors import NotFound
from qianbao.identity.tables import passkeys, users
from qianbao.security.fields import context
from qianbao.security.keyring import KeyRing
from qianbao.security.masking import mask_name, mask_name_for_payee, mask_phone

PHONE = "phone"
ID_NUMBER = "id_number"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    phone: str
    name: str
    kyc_tier: int
    status: str
    status_reason: str | None
    has_pin: bool
    has_totp: bool
    has_id_number: bool
    cooling_off_until: int | None
    created_at: int

    @property
    def phone_masked(self) -> str:
        return mask_phone(self.phone)

    @property
    def name_masked(self) -> str:
        return mask_name(self.name)


def _to_user(keys: KeyRing, row: Row[tuple[object, ...]] | Row[object]) -> User:
    r = row._mapping
    return User(
        id=str(r["id"]),
        phone=keys.decrypt(str(r["phone_cipher"]), context=context("users", "phone_cipher")),
        name=keys.decrypt(str(r["name_cipher"]), context=context("users", "name_cipher")),
        kyc_tier=int(r["kyc_tier"]),
        status=str(r["status"]),
        status_reason=r["status_reason"],
        has_pin=r["pin_hash"] is not None,
        has_totp=r["totp_enabled_at"] is not None,
        has_id_number=r["id_number_cipher"] is not None,
        cooling_off_until=r["cooling_off_until"],
        created_at=int(r["created_at"]),
    )


def get_user(conn: Connection, keys: KeyRing, user_id: str) -> User:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFound("no such user")
    return _to_user(keys, row)


def payee_names(conn: Connection, keys: KeyRing, user_ids: Iterable[str]) -> dict[str, str]:
    """Each user's name as the other side of a payment sees it, masked (``李四`` → ``*四``), in one query.

    Ids without a user are left out."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    rows = conn.execute(select(users.c.id, users.c.name_cipher).where(users.c.id.in_(wanted)))
    name_context = context("users", "name_cipher")
    return {
        str(r.id): mask_name_for_payee(keys.decrypt(str(r.name_cipher), context=name_context)) for r in rows
    }


def find_user_id_by_phone(conn: Connection, keys: KeyRing, phone_e164: str) -> str | None:
    found = conn.execute(
        select(users.c.id).where(users.c.phone_index == keys.digest(PHONE, phone_e164))
    ).scalar()
    return None if found is None else str(found)


def credential_row(conn: Connection, user_id: str, *, lock: bool = False) -> Row[tuple[object, ...]]:
    """The user's row with credential columns; `lock` takes a row lock (PostgreSQL) for counters."""
    query = select(users).where(users.c.id == user_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFound("no such user")
    return row


def has_passkeys(conn: Connection, user_id: str) -> bool:
    return (
        conn.execute(select(passkeys.c.id).where(passkeys.c.user_id == user_id).limit(1)).first() is not None
    )

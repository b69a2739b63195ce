"""Money requests (P2P): a user asks another user for an amount; the payer accepts (pays) or declines.

States: `pending → paid | declined | canceled`, and `expired` for a pending request past `expires_at`
(not stored; default 7 days). Only the two parties see a request (anyone else: 404); only the payer
accepts or declines, only the requester cancels (the other party: 403). Acting on a request that is no
longer pending is `409 request_not_pending` (with its `status`).

Accepting is a P2P transfer in the payment pipeline (`request_flow`), with all its limits, step-up and
Idempotency-Key handling; the request is marked paid in the transfer's own batch (a conditional UPDATE
on `status = 'pending'`), so the ledger transfer and `paid` commit together or not at all. Two
concurrent accepts both try; the second's UPDATE finds the request paid and its whole transfer rolls
back: a request is paid at most once. A declined transfer (insufficient funds…) leaves the request
pending, so the payer can top up and accept again.

Creating is rate-limited per requester (`money_request_create`) against spam, and a request addressed by
phone number also counts as a recipient look-up (`recipient_lookup`), like paying a phone number. Memo
and decline reason are free text: stored encrypted. Outbox events carry ids and amounts only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, and_, insert, or_, select, update

from qianbao import invalid
from qianbao.clock import rfc3339
from qianbao.errors import Conflict, Forbidden, InvalidInput, NotFound
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.identity.phones import normalise_phone
from qianbao.identity.users import find_user_id_by_phone, get_user, payee_names
from qianbao.ids import new_id
from qianbao.ledger.model import AccountStatus
from qianbao.ledger.queries import LedgerReader
from qianbao.payments.errors import (
    CurrencyMismatch,
    SameWallet,
    decline_error,
    recipient_not_found,
)
from qianbao.payments.inputs import check_amount, clean_memo, require_user_id
from qianbao.payments.request_tables import money_requests
from qianbao.security.fields import context
from qianbao.security.keyring import KeyRing
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.service import own_wallet_row, wallet_row

MEMO_CONTEXT = context("money_requests", "memo_cipher")
REASON_CONTEXT = context("money_requests", "decline_reason_cipher")
DEFAULT_EXPIRY_DAYS = 7
MAX_EXPIRY_DAYS = 30
ROLES = ("payer", "requester")
STATUSES = ("pending", "paid", "declined", "canceled", "expired")
_DAY_US = 86_400_000_000
_ID = re.compile(r"mrq_[0-9a-z]{26}")


def is_request_id(value: object) -> bool:
    """Whether `value` has the form of a money request id (anything else is not found, unread)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class RequestNotPending(Conflict):
    code = "request_not_pending"


@dataclass(frozen=True, slots=True)
class NewMoneyRequest:
    to_wallet_id: str  # the requester's own wallet, which receives the money
    amount: int
    currency: str
    payer_phone: str | None = None
    payer_wallet_id: str | None = None  # any wallet of the payer: it names the person
    memo: str | None = None
    expires_in_days: int = DEFAULT_EXPIRY_DAYS


@dataclass(frozen=True, slots=True)
class MoneyRequest:
    id: str
    requester_user_id: str
    to_wallet_id: str
    payer_user_id: str
    amount: int
    currency: str
    memo: str | None
    stored_status: str
    transfer_id: str | None
    from_wallet_id: str | None
    decline_reason: str | None
    created_at: int
    expires_at: int
    resolved_at: int | None

    def status(self, now_us: int) -> str:
        if self.stored_status == "pending" and now_us >= self.expires_at:
            return "expired"
        return self.stored_status


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request as one of its parties sees it: the other party by masked name only."""

    request: MoneyRequest
    status: str
    role: str  # the caller's: payer or requester
    requester_name_masked: str
    payer_name_masked: str


# -- rows ------------------------------------------------------------------------------------------


def request_from_row(row: Row[Any], keys: KeyRing) -> MoneyRequest:
    m = row._mapping
    return MoneyRequest(
        id=m["id"],
        requester_user_id=m["requester_user_id"],
        to_wallet_id=m["to_wallet_id"],
        payer_user_id=m["payer_user_id"],
        amount=int(m["amount"]),
        currency=m["currency"],
        memo=keys.decrypt_optional(m["memo_cipher"], context=MEMO_CONTEXT),
        stored_status=m["status"],
        transfer_id=m["transfer_id"],
        from_wallet_id=m["from_wallet_id"],
        decline_reason=keys.decrypt_optional(m["decline_reason_cipher"], context=REASON_CONTEXT),
        created_at=int(m["created_at"]),
        expires_at=int(m["expires_at"]),
        resolved_at=None if m["resolved_at"] is None else int(m["resolved_at"]),
    )


def request_views(
    ctx: IdentityContext, conn: Connection, user_id: str, found: list[MoneyRequest]
) -> list[RequestView]:
    people = {r.requester_user_id for r in found} | {r.payer_user_id for r in found}
    names = payee_names(conn, ctx.keys, people)
    now = ctx.now()
    return [
        RequestView(
            request=r,
            status=r.status(now),
            role="payer" if r.payer_user_id == user_id else "requester",
            requester_name_masked=names[r.requester_user_id],
            payer_name_masked=names[r.payer_user_id],
        )
        for r in found
    ]


def _load(conn: Connection, keys: KeyRing, user_id: str, request_id: str) -> MoneyRequest:
    """The request if the caller is one of its parties; otherwise it does not exist for them."""
    if not is_request_id(request_id):
        raise NotFound("no such money request")
    row = conn.execute(select(money_requests).where(money_requests.c.id == request_id)).first()
    if row is None:
        raise NotFound("no such money request")
    found = request_from_row(row, keys)
    if user_id not in (found.requester_user_id, found.payer_user_id):
        raise NotFound("no such money request")
    return found


def request_event(kind: str, r: MoneyRequest, **extra: Any) -> OutboxEvent:
    # Ids and the amount only: no names, phone numbers, memo or reason (free text).
    payload = {
        "money_request_id": r.id,
        "from_user_id": r.payer_user_id,
        "to_user_id": r.requester_user_id,
        "to_wallet_id": r.to_wallet_id,
        "amount": {"amount": r.amount, "currency": r.currency},
        **extra,
    }
    return OutboxEvent(f"money_request.{kind}", "money_request", r.id, payload)


def not_pending(status: str) -> RequestNotPending:
    # `status` in a problem is the HTTP status (RFC 9457): the request's own is `request_status`.
    return RequestNotPending(f"the money request is {status}, no longer pending", request_status=status)


# -- creating --------------------------------------------------------------------------------------


def _payer_user_id(ctx: IdentityContext, conn: Connection, new: NewMoneyRequest, phone: str | None) -> str:
    """Who is asked to pay: a phone number's user, or a wallet's owner; closed ones are not found."""
    if phone is not None:
        payer = find_user_id_by_phone(conn, ctx.keys, phone)
    else:
        wallet = wallet_row(conn, str(new.payer_wallet_id))
        payer = None if wallet is None else wallet.user_id
        if wallet is not None:
            account = LedgerReader(ctx.db).get_account(wallet.id)
            if account is None or account.status is AccountStatus.CLOSED:
                payer = None
    if payer is None or get_user(conn, ctx.keys, payer).status == "closed":
        raise recipient_not_found(
            "no user is registered for this phone number or wallet",
            by="phone" if phone is not None else "payer_wallet_id",
        )
    return payer


def create_request(ctx: IdentityContext, principal: Principal, new: NewMoneyRequest) -> RequestView:
    """Ask another user for money, into one of the caller's wallets."""
    user_id = require_user_id(principal)
    check_amount(new.amount, new.currency)
    memo = clean_memo(new.memo)
    if (new.payer_phone is None) == (new.payer_wallet_id is None):
        raise invalid.exactly_one_of("from", ["phone", "wallet_id"])
    if type(new.expires_in_days) is not int or not 1 <= new.expires_in_days <= MAX_EXPIRY_DAYS:
        raise invalid.out_of_range("expires_in_days", 1, MAX_EXPIRY_DAYS)
    phone = None if new.payer_phone is None else normalise_phone(new.payer_phone)
    ctx.limiter.hit("money_request_create", user_id)
    if phone is not None:
        ctx.limiter.hit("recipient_lookup", user_id)
    with ctx.db.read() as conn:
        target = own_wallet_row(conn, user_id, new.to_wallet_id)
        if target.currency != new.currency:
            raise CurrencyMismatch(f"the wallet holds {target.currency}, not {new.currency}")
        payer_id = _payer_user_id(ctx, conn, new, phone)
    if payer_id == user_id:
        raise SameWallet("you cannot request money from yourself")
    account = LedgerReader(ctx.db).get_account(target.id)
    if account is None or account.status in (AccountStatus.FROZEN, AccountStatus.CLOSED):
        raise decline_error("wallet_frozen", currency_code=target.currency)
    now = ctx.now()
    created = MoneyRequest(
        id=new_id("mrq"),
        requester_user_id=user_id,
        to_wallet_id=target.id,
        payer_user_id=payer_id,
        amount=new.amount,
        currency=new.currency,
        memo=memo,
        stored_status="pending",
        transfer_id=None,
        from_wallet_id=None,
        decline_reason=None,
        created_at=now,
        expires_at=now + new.expires_in_days * _DAY_US,
        resolved_at=None,
    )
    with ctx.uow() as uow:
        uow.conn.execute(
            insert(money_requests).values(
                id=created.id,
                requester_user_id=user_id,
                to_wallet_id=target.id,
                payer_user_id=payer_id,
                amount=created.amount,
                currency=created.currency,
                memo_cipher=None if memo is None else ctx.keys.encrypt(memo, context=MEMO_CONTEXT),
                status="pending",
                created_at=now,
                expires_at=created.expires_at,
            )
        )
        uow.emit(request_event("created", created, expires_at=rfc3339(created.expires_at)))
        uow.commit()
    return get_request(ctx, principal, created.id)


# -- reading ---------------------------------------------------------------------------------------


def get_request(ctx: IdentityContext, principal: Principal, request_id: str) -> RequestView:
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        return request_views(ctx, conn, user_id, [_load(conn, ctx.keys, user_id, request_id)])[0]


def list_requests(
    ctx: IdentityContext,
    principal: Principal,
    *,
    role: str | None = None,
    status: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[RequestView], str | None]:
    """The caller's requests (as payer, requester, or either), newest first; `status` as shown."""
    user_id = require_user_id(principal)
    if role is not None and role not in ROLES:
        raise invalid.one_of("role", ROLES)
    if status is not None and status not in STATUSES:
        raise invalid.one_of("status", STATUSES)
    if not 1 <= limit <= 100:
        raise invalid.out_of_range("limit", 1, 100)
    if cursor is not None and not _ID.fullmatch(cursor):
        raise invalid.cursor()
    t = money_requests.c
    mine = {"payer": t.payer_user_id == user_id, "requester": t.requester_user_id == user_id}
    query = select(money_requests).where(mine[role] if role else or_(*mine.values()))
    now = ctx.now()
    if status == "pending":
        query = query.where(t.status == "pending", t.expires_at > now)
    elif status == "expired":
        query = query.where(or_(t.status == "expired", and_(t.status == "pending", t.expires_at <= now)))
    elif status is not None:
        query = query.where(t.status == status)
    if cursor is not None:
        query = query.where(t.id < cursor)
    with ctx.db.read() as conn:
        rows = conn.execute(query.order_by(t.id.desc()).limit(limit + 1)).fetchall()
        found = [request_from_row(r, ctx.keys) for r in rows[:limit]]
        views = request_views(ctx, conn, user_id, found)
    return views, found[-1].id if len(rows) > limit else None


# -- acting ----------------------------------------------------------------------------------------


def _acting(ctx: IdentityContext, principal: Principal, request_id: str, party: str) -> MoneyRequest:
    """The pending request the caller may act on as `party` (payer or requester)."""
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        found = _load(conn, ctx.keys, user_id, request_id)
    allowed = found.payer_user_id if party == "payer" else found.requester_user_id
    if user_id != allowed:
        raise Forbidden(f"only the {party} can do this with a money request")
    status = found.status(ctx.now())
    if status != "pending":
        raise not_pending(status)
    return found


def _resolve(ctx: IdentityContext, found: MoneyRequest, status: str, reason: str | None = None) -> None:
    t = money_requests.c
    with ctx.uow() as uow:
        now = ctx.now()
        changed = uow.conn.execute(
            update(money_requests)
            .where(t.id == found.id, t.status == "pending", t.expires_at > now)
            .values(
                status=status,
                resolved_at=now,
                decline_reason_cipher=None
                if reason is None
                else ctx.keys.encrypt(reason, context=REASON_CONTEXT),
            )
        )
        if changed.rowcount != 1:
            current = uow.conn.execute(select(money_requests).where(t.id == found.id)).first()
            raise not_pending(
                "unknown" if current is None else request_from_row(current, ctx.keys).status(now)
            )
        uow.emit(request_event(status, found))
        uow.commit()


def decline_request(
    ctx: IdentityContext, principal: Principal, request_id: str, *, reason: str | None = None
) -> RequestView:
    """The payer says no (an optional reason, shown to the requester)."""
    try:
        cleaned = clean_memo(reason)
    except InvalidInput as exc:
        raise invalid.renamed(exc, "reason") from None
    found = _acting(ctx, principal, request_id, "payer")
    _resolve(ctx, found, "declined", cleaned)
    return get_request(ctx, principal, found.id)


def cancel_request(ctx: IdentityContext, principal: Principal, request_id: str) -> RequestView:
    """The requester takes the request back."""
    found = _acting(ctx, principal, request_id, "requester")
    _resolve(ctx, found, "canceled")
    return get_request(ctx, principal, found.id)

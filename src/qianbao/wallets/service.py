"""Wallets as their owner sees them: the wallet row plus its ledger account (balance, available, status).

A wallet IS a ledger account with the same id (`wallets.accounts.open_wallet`); the ledger is the only
source of balances. A wallet that is not the caller's is "not found" (never reveal that it exists).
Sub-wallets are pockets (travel, shopping…) in CNY; each has the owner's KYC balance cap as its ceiling.

A wallet's view adds its settings (`settings`: colour, icon, budget, goal, lock) and this month's spending
(`budgets`). Around this module: `editing` (PATCH), `closing` (close a sub-wallet), `spending` (what
payment code calls: locks, budgets, goals) and `accounts` (opening the ledger account).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, func, select

from qianbao import invalid
from qianbao.error_codes import user_text
from qianbao.errors import Conflict, NotFound
from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import limits_for
from qianbao.identity.model import Principal, RequestInfo
from qianbao.ledger.model import Account, AccountStatus
from qianbao.ledger.queries import LedgerReader
from qianbao.money import UnknownCurrencyError, currency
from qianbao.security import audit
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets import budgets, goals
from qianbao.wallets.accounts import open_wallet
from qianbao.wallets.budgets import BudgetStatus
from qianbao.wallets.goals import GoalProgress
from qianbao.wallets.model import WalletSettings
from qianbao.wallets.settings import (
    WalletChanges,
    appearance,
    apply_changes,
    load_settings,
    save_settings,
)
from qianbao.wallets.tables import wallets

SUB_WALLET_PURPOSES = ("travel", "shopping", "savings", "bills", "custom")
SUB_WALLET_CURRENCIES = ("CNY",)
MAX_SUB_WALLETS = 10
MAX_WALLET_NAME = 32
MAX_ID_LENGTH = 64
STATUS_BY_LEDGER = {
    AccountStatus.OPEN: "active",
    AccountStatus.DEBIT_FROZEN: "debit_frozen",
    AccountStatus.FROZEN: "frozen",
    AccountStatus.CLOSED: "closed",
}


@dataclass(frozen=True, slots=True)
class WalletRow:
    id: str
    user_id: str
    kind: str
    name: str
    purpose: str
    currency: str
    created_at: int
    closed_at: int | None = None


@dataclass(frozen=True, slots=True)
class WalletView:
    id: str
    user_id: str
    kind: str
    name: str
    purpose: str
    currency: str
    balance: int
    available: int
    balance_cap: int | None
    status: str
    created_at: int
    colour: str = ""
    colour_hex: str = ""
    icon: str = ""
    budget: BudgetStatus | None = None
    goal: GoalProgress | None = None
    locked_until: int | None = None  # only while the lock lasts
    closed_at: int | None = None

    @property
    def payable(self) -> bool:
        """Money may leave it now (to pay or to move): active and not locked."""
        return self.status == "active" and self.locked_until is None

    @property
    def receivable(self) -> bool:
        return self.status in ("active", "debit_frozen")


def plausible_id(value: object) -> bool:
    """Ids we could have issued: anything else (NUL, huge strings) matches nothing without a query."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def _row(r: Row[Any]) -> WalletRow:
    m = r._mapping
    return WalletRow(
        str(m["id"]),
        str(m["user_id"]),
        str(m["kind"]),
        str(m["name"]),
        str(m["purpose"]),
        str(m["currency"]),
        int(m["created_at"]),
        None if m["closed_at"] is None else int(m["closed_at"]),
    )


def wallet_rows(conn: Connection, wallet_ids: Iterable[str]) -> dict[str, WalletRow]:
    ids = [i for i in set(wallet_ids) if plausible_id(i)]
    if not ids:
        return {}
    return {r.id: _row(r) for r in conn.execute(select(wallets).where(wallets.c.id.in_(ids)))}


def wallet_row(conn: Connection, wallet_id: str) -> WalletRow | None:
    return wallet_rows(conn, [wallet_id]).get(wallet_id)


def no_such_wallet() -> NotFound:
    """A wallet that is not the caller's: someone else's wallet is "not found" too (API.md)."""
    return NotFound("no such wallet", user_text=user_text("not_found", "wallet"))


def own_wallet_row(conn: Connection, user_id: str, wallet_id: str) -> WalletRow:
    row = wallet_row(conn, wallet_id)
    if row is None or row.user_id != user_id:
        raise no_such_wallet()
    return row


def main_wallet_id(conn: Connection, user_id: str, currency_code: str) -> str | None:
    found = conn.execute(
        select(wallets.c.id).where(
            wallets.c.user_id == user_id, wallets.c.kind == "main", wallets.c.currency == currency_code
        )
    ).scalar()
    return None if found is None else str(found)


def main_wallet_ids(conn: Connection, user_ids: Iterable[str], currency_code: str) -> dict[str, str]:
    """Each user's main wallet in a currency (by user id), one statement for all of them."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(wallets.c.user_id, wallets.c.id).where(
            wallets.c.user_id.in_(wanted), wallets.c.kind == "main", wallets.c.currency == currency_code
        )
    )
    return {str(user_id): str(wallet_id) for user_id, wallet_id in rows}


@dataclass(frozen=True, slots=True)
class _Extras:
    """What the wallets capability adds to a ledger account: settings and this month's spending."""

    settings: dict[str, WalletSettings]
    spent: dict[str, int]
    month: str
    now: int


def _extras(conn: Connection, wallet_ids: list[str], now: int) -> _Extras:
    month = budgets.month_of(now)
    return _Extras(load_settings(conn, wallet_ids), budgets.spent_in(conn, wallet_ids, month), month, now)


def _view(row: WalletRow, account: Account | None, extras: _Extras) -> WalletView:
    if account is None:  # every wallet is opened with its ledger account in one transaction
        raise Conflict(f"wallet {row.id} has no ledger account")
    found = extras.settings.get(row.id)
    colour, colour_hex, icon = appearance(row.purpose, found)
    budget = goal = None
    if found is not None and found.budget is not None:
        spent = extras.spent.get(row.id, 0)
        budget = budgets.BudgetStatus(found.budget.amount, found.budget.on_limit, extras.month, spent)
    if found is not None and found.goal is not None:
        goal = goals.progress(found.goal, account.balance, found.goal_reached_at)
    locked = found is not None and found.locked_at(extras.now)
    return WalletView(
        id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        name=row.name,
        purpose=row.purpose,
        currency=row.currency,
        balance=account.balance,
        available=account.available,
        balance_cap=account.balance_ceiling,
        status=STATUS_BY_LEDGER[account.status],
        created_at=row.created_at,
        colour=colour,
        colour_hex=colour_hex,
        icon=icon,
        budget=budget,
        goal=goal,
        locked_until=found.locked_until if locked and found is not None else None,
        closed_at=row.closed_at,
    )


def list_wallets(ctx: IdentityContext, user_id: str) -> list[WalletView]:
    """The user's wallets: main first, then sub-wallets in the order they were opened."""
    with ctx.db.read() as conn:
        rows = [
            _row(r)
            for r in conn.execute(
                select(wallets)
                .where(wallets.c.user_id == user_id)
                .order_by(wallets.c.created_at, wallets.c.id)
            )
        ]
        extras = _extras(conn, [r.id for r in rows], ctx.now())
    rows.sort(key=lambda r: r.kind != "main")  # stable: keeps creation order within each kind
    accounts = LedgerReader(ctx.db).lookup_accounts(r.id for r in rows)
    return [_view(r, accounts.get(r.id), extras) for r in rows]


def get_wallet(ctx: IdentityContext, user_id: str, wallet_id: str) -> WalletView:
    with ctx.db.read() as conn:
        return get_wallet_in(ctx, conn, user_id, wallet_id)


def get_wallet_in(ctx: IdentityContext, conn: Connection, user_id: str, wallet_id: str) -> WalletView:
    """`get_wallet` in the caller's transaction (a payment batch's answer shows what it just wrote)."""
    row = own_wallet_row(conn, user_id, wallet_id)
    extras = _extras(conn, [row.id], ctx.now())
    return _view(row, LedgerReader(ctx.db).lookup_accounts_in(conn, [row.id]).get(row.id), extras)


def clean_wallet_name(name: str) -> str:
    if not isinstance(name, str):
        raise invalid.not_text("name")
    cleaned = unicodedata.normalize("NFC", " ".join(name.split()))
    if not cleaned or len(cleaned) > MAX_WALLET_NAME:
        raise invalid.text_length("name", MAX_WALLET_NAME)
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise invalid.control_characters("name")
    return cleaned


def create_sub_wallet(
    ctx: IdentityContext,
    principal: Principal,
    *,
    name: str,
    purpose: str | None,
    currency_code: str | None,
    info: RequestInfo,
    changes: WalletChanges | None = None,
) -> WalletView:
    """Open a sub-wallet (a pocket) for the caller; its ceiling is the caller's balance cap. `changes`
    may set its colour, icon, budget, goal and lock at once (its name and purpose are the arguments)."""
    if principal.user_id is None:
        raise invalid.needs_user()
    user_id = principal.user_id
    clean = clean_wallet_name(name)
    purpose = "custom" if purpose is None else purpose
    if purpose not in SUB_WALLET_PURPOSES:
        raise invalid.one_of("purpose", SUB_WALLET_PURPOSES)
    code = "CNY" if currency_code is None else currency_code
    try:
        currency(code)
    except (UnknownCurrencyError, TypeError) as exc:
        raise invalid.unknown_currency("currency", code) from exc
    if code not in SUB_WALLET_CURRENCIES:
        raise invalid.currency_only("currency", "CNY", "sub-wallets are CNY only for now")
    with ctx.uow() as uow:
        conn = uow.conn
        count = conn.execute(
            select(func.count())
            .select_from(wallets)
            .where(wallets.c.user_id == user_id, wallets.c.kind == "sub", wallets.c.closed_at.is_(None))
        ).scalar_one()
        if count >= MAX_SUB_WALLETS:
            raise Conflict(f"at most {MAX_SUB_WALLETS} sub-wallets", limit=MAX_SUB_WALLETS)
        now = ctx.now()
        _tier, limits, _cooling = limits_for(conn, ctx.settings, user_id, now)
        wallet_id = open_wallet(
            conn,
            ctx.ledger,
            user_id=user_id,
            kind="sub",
            name=clean,
            purpose=purpose,
            currency=code,
            balance_cap=limits.balance_cap,
            now_us=now,
        )
        if changes is not None:
            empty = WalletSettings(wallet_id)
            chosen = apply_changes(empty, changes, kind="sub", currency=code, now_us=now)
            if chosen != empty:
                save_settings(conn, chosen, now)
        audit.record(
            conn,
            now,
            "wallet.opened",
            audit.Actor(
                "user", user_id, ip=info.ip, device_id=principal.device_id, session_id=principal.session_id
            ),
            subject_user_id=user_id,
            details={"wallet_id": wallet_id, "kind": "sub", "purpose": purpose},
        )
        uow.emit(
            OutboxEvent(
                "wallet.opened",
                "wallet",
                wallet_id,
                {
                    "wallet_id": wallet_id,
                    "user_id": user_id,
                    "kind": "sub",
                    "purpose": purpose,
                    "currency": code,
                },
            )
        )
        uow.commit()
    return get_wallet(ctx, user_id, wallet_id)

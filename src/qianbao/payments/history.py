"""A wallet's history: its ledger entries, newest first, as the API's transactions; filters and CSV export.

Read-only. The ledger is the source of truth for amounts and balances; transfer records add the memo and
the transfer id. Every row names the other side (`counterparty.name`): a merchant by its registered name,
a person by their masked name (`*四`), one's own other wallet (a move, or closing a sub-wallet) by that
wallet's name (never one's own masked name), and a system account by what it is ("Sandbox top-up" /
"沙盒充值", in the caller's language).

Filters. `type`, `direction`, the date range, `counterparty` and the amount range are applied by the
database (`LedgerReader.account_history_filtered`), so a page is full whatever they are. `q` (text in the
memo or the counterparty's name as shown) cannot be: memos are encrypted at rest, so matching decrypts
each candidate. To bound that work a page examines at most `MAX_SCAN` entries; when it runs out before
finding `limit` matches it returns what it found (maybe nothing) and a `next_cursor` that continues the
scan, so a client follows `next_cursor` until it is null, as for any list. The cursor is a position in
the wallet's history (not a page number), so it stays valid with the same filters passed again.

Holds. A held payment is one transaction (`HistoryFilter.holds_once`): while held, the hold (`pending`);
once resolved, the resolution stands for it, at its place in the ledger, where the posted balance
changed, so `balance_after` chains; it keeps the hold's id and type and takes its status from how the
hold ended (`_status`). The filters apply to that one row in SQL, so pages stay full.

Types. `TRANSACTION_TYPES` maps ledger transfer codes to the `type` shown; a filter on a type matches
every code mapped to it (a code without a mapping is shown, and filtered, as itself). New kinds of
payment register their codes there.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal

from qianbao import invalid
from qianbao.clock import rfc3339, to_us
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.identity.users import payee_names
from qianbao.ledger.model import Transfer, TransferKind
from qianbao.ledger.queries import MAX_PAGE, HistoryEntry, HistoryFilter, LedgerReader
from qianbao.ledger.system_accounts import SANDBOX_FUNDING, system_purpose
from qianbao.money import currency
from qianbao.payments.code_flow import HOLD_CODE
from qianbao.payments.funding import FUNDING_CODE
from qianbao.payments.inputs import MAX_PAYMENT, require_user_id
from qianbao.payments.merchant_payments import PAYMENT_CODE
from qianbao.payments.merchant_records import PaymentRecord, merchant_entries
from qianbao.payments.merchants import merchant_by_id
from qianbao.payments.records import records_by_ledger_ids
from qianbao.payments.refunds import REFUND_CODE
from qianbao.payments.transfers import MOVE_CODE, P2P_CODE
from qianbao.wallets.names import shown_wallet_name
from qianbao.wallets.service import WalletRow, own_wallet_row, wallet_rows

# Ledger transfer code -> the transaction `type` the API shows. Several codes may share a type.
TRANSACTION_TYPES: dict[str, str] = {
    P2P_CODE: "p2p",
    MOVE_CODE: "wallet_move",
    FUNDING_CODE: "top_up",
    PAYMENT_CODE: "merchant_payment",
    HOLD_CODE: "merchant_payment",
    REFUND_CODE: "refund",
}

# How a transaction stands, by the kind of its ledger transfer (for a hold's resolution: how it ended).
TRANSFER_STATUS: dict[TransferKind, str] = {
    TransferKind.POSTED: "succeeded",
    TransferKind.PENDING: "pending",
    TransferKind.POST_PENDING: "succeeded",
    TransferKind.VOID_PENDING: "canceled",
    TransferKind.EXPIRE_PENDING: "failed",
}

# The other side of an entry with a system account, by the account's purpose, in each language.
SYSTEM_NAMES: dict[str, dict[str, str]] = {
    SANDBOX_FUNDING: {"en": "Sandbox top-up", "zh-CN": "沙盒充值"},
}
OTHER_SYSTEM_NAME = {"en": "qianbao", "zh-CN": "钱包平台"}

MAX_SCAN = 500  # entries one page examines (and decrypts) for a `q` search
MAX_TYPES = 10
MAX_QUERY_TEXT = 64
# Bare dates in `from`/`to` are calendar days in China Standard Time, like the daily limits' days.
LOCAL_TZ = timezone(timedelta(hours=8))
_TYPE = re.compile(r"[a-z0-9_.]{1,64}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_:.-]{1,64}")

CSV_COLUMNS = (
    "created_at",
    "id",
    "type",
    "direction",
    "amount",
    "currency",
    "balance_after",
    "counterparty_kind",
    "counterparty_wallet_id",
    "counterparty_name",
    "memo",
    "status",
    "transfer_id",
)
# Spreadsheets run cells that start with these as formulas (CSV injection): such cells get a leading '.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Transaction:
    id: str
    type: str
    direction: str
    amount: int
    currency: str
    balance_after: int
    counterparty: dict[str, Any]
    memo: str | None
    status: str
    created_at: int
    transfer_id: str | None
    payment_id: str | None = None  # merchant payments and their refunds
    refund_id: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A history listing's filters, already parsed (see `history_query` for the raw forms)."""

    types: frozenset[str] | None = None
    direction: Literal["debit", "credit"] | None = None
    since_us: int | None = None  # inclusive
    until_us: int | None = None  # exclusive
    counterparty: str | None = None  # the other wallet's id
    min_amount: int | None = None
    max_amount: int | None = None
    text: str | None = None  # casefolded

    def ledger_filter(self) -> HistoryFilter:
        return HistoryFilter(
            codes=None if self.types is None else ledger_codes_for(self.types),
            direction=self.direction,
            since_us=self.since_us,
            until_us=self.until_us,
            counterparty=self.counterparty,
            min_amount=self.min_amount,
            max_amount=self.max_amount,
            holds_once=True,
        )


def transaction_types() -> list[str]:
    """The types a transaction can have (besides unmapped ledger codes, shown as themselves)."""
    return sorted(set(TRANSACTION_TYPES.values()))


def ledger_codes_for(types: Iterable[str]) -> frozenset[str]:
    """Every ledger code shown as one of `types` (an unmapped code is its own type)."""
    codes: set[str] = set()
    for name in types:
        mapped = {code for code, shown in TRANSACTION_TYPES.items() if shown == name}
        if mapped:
            codes |= mapped
        elif name not in TRANSACTION_TYPES:
            codes.add(name)
    return frozenset(codes)


# -- parsing the filters ---------------------------------------------------------------------------


def _time_bound(text: str, field: str, *, end: bool) -> int:
    """An RFC 3339 date-time (with its offset), or a full date meaning that whole day in China time."""
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise invalid.date(field) from None
        if end:  # `to` a date includes that day
            day += timedelta(days=1)
        return to_us(datetime(day.year, day.month, day.day, tzinfo=LOCAL_TZ))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise invalid.because(
            "date_or_date_time",
            f"{field} must be an RFC 3339 date-time (2026-11-30T08:00:00Z) or a date (2026-11-30)",
            field=field,
        ) from None
    if when.tzinfo is None:
        raise invalid.needs_time_zone(field)
    return to_us(when.astimezone(UTC)) + (1 if end else 0)  # `to` a date-time is inclusive


def history_query(
    *,
    types: Iterable[str] | None = None,
    direction: str | None = None,
    since: str | None = None,
    until: str | None = None,
    counterparty: str | None = None,
    min_amount: int | None = None,
    max_amount: int | None = None,
    text: str | None = None,
) -> HistoryQuery:
    """Check and parse the filters as the API receives them; bad ones are 422 `validation_error`."""
    wanted: frozenset[str] | None = None
    if types is not None:
        names = {n.strip() for raw in types for n in raw.split(",") if n.strip()}
        if not names or len(names) > MAX_TYPES or not all(_TYPE.fullmatch(n) for n in names):
            raise invalid.only_from(
                "type",
                transaction_types(),
                f"type must be 1 to {MAX_TYPES} of: {', '.join(transaction_types())}",
            )
        wanted = frozenset(names)
    side: Literal["debit", "credit"] | None
    if direction is None:
        side = None
    elif direction in ("debit", "credit"):
        side = "debit" if direction == "debit" else "credit"
    else:
        raise invalid.one_of("direction", ["debit", "credit"])
    since_us = None if since is None else _time_bound(since, "from", end=False)
    until_us = None if until is None else _time_bound(until, "to", end=True)
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise invalid.before("from", "to")
    if counterparty is not None and not _ACCOUNT_ID.fullmatch(counterparty):
        raise invalid.invalid_format("counterparty", "counterparty must be a wallet id")
    for name, value in (("min_amount", min_amount), ("max_amount", max_amount)):
        if value is not None and not 0 <= value <= MAX_PAYMENT:
            raise invalid.amount_range(name, 0, MAX_PAYMENT)
    if min_amount is not None and max_amount is not None and min_amount > max_amount:
        raise invalid.not_above("min_amount", "max_amount")
    needle = None
    if text is not None:
        needle = unicodedata.normalize("NFC", text.strip()).casefold()
        if not needle or len(needle) > MAX_QUERY_TEXT or not needle.isprintable():
            raise invalid.text_length("q", MAX_QUERY_TEXT, printable=True)
    return HistoryQuery(
        types=wanted,
        direction=side,
        since_us=since_us,
        until_us=until_us,
        counterparty=counterparty,
        min_amount=min_amount,
        max_amount=max_amount,
        text=needle,
    )


# -- reading ---------------------------------------------------------------------------------------


def _transactions(
    ctx: IdentityContext, user_id: str, entries: list[HistoryEntry], language: str
) -> list[Transaction]:
    """Ledger entries as transactions: memo and transfer id from the records, the other side named."""
    others = {
        e.transfer.credit_account_id if e.direction == "debit" else e.transfer.debit_account_id
        for e in entries
    }
    shown_ids = [(e.hold or e.transfer).id for e in entries]
    with ctx.db.read() as conn:
        other_wallets = wallet_rows(conn, others)
        records = records_by_ledger_ids(conn, ctx.keys, shown_ids)
        shop_entries = merchant_entries(conn, ctx.keys, shown_ids)
        shops = {
            m.id: m for m in (merchant_by_id(conn, p.merchant_id) for p, _ in shop_entries.values()) if m
        }
        people = {w.user_id for w in other_wallets.values() if w.user_id != user_id}
        names = payee_names(conn, ctx.keys, people)
    result = []
    for entry in entries:
        t = entry.transfer
        shown = entry.hold or t  # a resolved hold is shown as the hold, at its resolution's place
        other = t.credit_account_id if entry.direction == "debit" else t.debit_account_id
        counterparty: dict[str, Any]
        wallet = other_wallets.get(other)
        shop_entry = shop_entries.get(shown.id)
        shop = None if shop_entry is None else shops.get(shop_entry[0].merchant_id)
        if shop_entry is not None and shop is not None:
            counterparty = {
                "kind": "merchant",
                "merchant_id": shop.id,
                "wallet_id": None,
                "name": shop.name,
                "city": shop.city,
                "own": shop.owner_user_id == user_id,
            }
        elif wallet is not None:
            counterparty = _wallet_party(wallet, user_id, names, language)
        else:
            counterparty = {
                "kind": "system",
                "wallet_id": None,
                "name": _system_name(other, language),
                "name_masked": None,
            }
        record = records.get(shown.id)
        result.append(
            Transaction(
                id=shown.id,
                type=TRANSACTION_TYPES.get(shown.code, shown.code),
                direction=entry.direction,
                amount=t.amount,
                currency=t.currency,
                balance_after=entry.balance_after,
                counterparty=counterparty,
                memo=shop_entry[0].memo
                if shop_entry is not None
                else None
                if record is None
                else record.memo,
                status=_status(t, None if shop_entry is None else shop_entry[0]),
                created_at=t.created_at,
                transfer_id=None if record is None else record.id,
                payment_id=None if shop_entry is None else shop_entry[0].id,
                refund_id=None if shop_entry is None or shop_entry[1] is None else shop_entry[1].id,
            )
        )
    return result


def _status(t: Transfer, payment: PaymentRecord | None) -> str:
    """A hold is `pending`; what resolved it says how it ended. A released hold of a payment ended as
    the payment did: `canceled` by someone, or `failed` (declined when confirmed, or not confirmed)."""
    if t.kind is TransferKind.VOID_PENDING and payment is not None and payment.status == "failed":
        return "failed"
    return TRANSFER_STATUS[t.kind]


def _wallet_party(wallet: WalletRow, user_id: str, names: dict[str, str], language: str) -> dict[str, Any]:
    """Another wallet: a person's, by their masked name; one's own (a move), by that wallet's name (the
    main wallet's in `language`).

    `name_masked` is what older clients show, so for one's own wallet it holds the wallet's name too."""
    own = wallet.user_id == user_id
    shown = shown_wallet_name(wallet.kind, wallet.name, language) if own else names.get(wallet.user_id)
    return {"kind": "wallet", "wallet_id": wallet.id, "name": shown, "name_masked": shown, "own": own}


def _system_name(account_id: str, language: str) -> str:
    purpose = system_purpose(account_id)
    names = SYSTEM_NAMES.get(purpose or "", OTHER_SYSTEM_NAME)
    return names.get(language, names["en"])


def _matches(transaction: Transaction, needle: str) -> bool:
    """`q`: the memo, or the counterparty's name as the caller sees it (masked for people, so a search
    cannot confirm a guess at someone's full name)."""
    party = transaction.counterparty
    texts = (transaction.memo, party.get("name"))
    return any(needle in unicodedata.normalize("NFC", t).casefold() for t in texts if isinstance(t, str))


def wallet_history(
    ctx: IdentityContext,
    principal: Principal,
    wallet_id: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    query: HistoryQuery | None = None,
    language: str = "en",
) -> tuple[list[Transaction], str | None]:
    """The wallet's ledger entries, newest first, with memo and the other side named (system accounts in
    `language`, "en" or "zh-CN").

    With `query.text`, fewer than `limit` transactions (even none) may come back with a `next_cursor`:
    the page stopped after examining `MAX_SCAN` entries."""
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        own_wallet_row(conn, user_id, wallet_id)
    query = query or HistoryQuery()
    reader = LedgerReader(ctx.db)
    filters = query.ledger_filter()
    if query.text is None:
        page = reader.account_history_filtered(wallet_id, limit, cursor, filters)
        return _transactions(ctx, user_id, page.entries, language), page.next_cursor
    found: list[Transaction] = []
    scanned = 0
    position = cursor
    while True:
        page = reader.account_history_filtered(
            wallet_id, min(MAX_PAGE, MAX_SCAN - scanned), position, filters
        )
        batch = _transactions(ctx, user_id, page.entries, language)
        for index, (entry, transaction) in enumerate(zip(page.entries, batch, strict=True)):
            if not _matches(transaction, query.text):
                continue
            found.append(transaction)
            if len(found) == limit:
                more = index < len(batch) - 1 or page.next_cursor is not None
                return found, str(entry.transfer.seq) if more else None
        scanned += len(page.entries)
        if page.next_cursor is None:
            return found, None
        if scanned >= MAX_SCAN:
            return found, page.next_cursor
        position = page.next_cursor


# -- CSV export ------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _decimal(amount: int, code: str) -> str:
    exponent = currency(code).exponent
    whole, fraction = divmod(abs(amount), 10**exponent)
    sign = "-" if amount < 0 else ""
    return f"{sign}{whole}.{fraction:0{exponent}d}" if exponent else f"{sign}{whole}"


def csv_row(t: Transaction) -> list[str]:
    party = t.counterparty
    values: list[object] = [
        rfc3339(t.created_at),
        t.id,
        t.type,
        t.direction,
        _decimal(t.amount, t.currency),
        t.currency,
        _decimal(t.balance_after, t.currency),
        party.get("kind"),
        party.get("wallet_id"),
        party.get("name"),
        t.memo,
        t.status,
        t.transfer_id,
    ]
    return [_cell(v) for v in values]


def export_csv(
    ctx: IdentityContext,
    principal: Principal,
    wallet_id: str,
    query: HistoryQuery | None = None,
    language: str = "en",
) -> Iterator[str]:
    """The filtered history as CSV text chunks (UTF-8 BOM first, then a header and one chunk per page).

    The wallet is checked and the first page read before this returns, so a refusal is an ordinary error
    rather than a broken download; then pages of `MAX_PAGE` are read one at a time as the client reads."""
    first, cursor = wallet_history(ctx, principal, wallet_id, limit=MAX_PAGE, query=query, language=language)

    def chunks() -> Iterator[str]:
        page, next_cursor = first, cursor
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        yield "\ufeff" + out.getvalue()
        while True:
            out.seek(0)
            out.truncate()
            writer.writerows(csv_row(t) for t in page)
            if page:
                yield out.getvalue()
            if next_cursor is None:
                return
            page, next_cursor = wallet_history(
                ctx,
                principal,
                wallet_id,
                limit=MAX_PAGE,
                cursor=next_cursor,
                query=query,
                language=language,
            )

    return chunks()

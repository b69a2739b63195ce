"""In-app notifications: both sides of a payment hear about it, in their language, when they look.

The dispatcher turns events into notification rows (`notifications_for`): a kind (which side the person
is on) and the event's ids and amounts. The text is rendered when read (`render`), in zh-CN or en by
`Accept-Language`, so a user who switches language sees old notifications in the new one too.

Every text names the other side ("You paid 李记面馆 ¥80.00.", "You sent ¥50.00 to *四."): a merchant by
its registered name, a person by their masked name, never by anything more, and never the reader
themselves; budget and goal alerts name the wallet (the main wallet as "主钱包" / "Main wallet", in the
reader's language). Events carry no names or memos, and neither do
notification rows: the names are looked up when the notifications are read (`list_notifications`, from
the ids in the row), so they are today's names. When a name cannot be found the text goes without it.

Moving money between one's own wallets (the same user on both sides) notifies nobody.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select, update

from qianbao import invalid
from qianbao.events.tables import notifications
from qianbao.identity.context import IdentityContext
from qianbao.identity.users import payee_names
from qianbao.money import Money, MoneyError, format_money
from qianbao.payments.merchants import merchant_by_id
from qianbao.security.keyring import KeyRing
from qianbao.wallets.names import shown_wallet_name
from qianbao.wallets.service import wallet_rows

MAX_IDS = 100

# Event type → (payload key naming the person, the kind of notification they get).
RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "transfer.succeeded": (("from_user_id", "transfer_sent"), ("to_user_id", "transfer_received")),
    "payment.succeeded": (("payer_user_id", "payment_paid"), ("merchant_user_id", "payment_received")),
    "refund.succeeded": (("payer_user_id", "refund_received"), ("merchant_user_id", "refund_sent")),
    "payment.confirmation_required": (("payer_user_id", "payment_confirmation_required"),),
    "payment_code.device_blocked": (("user_id", "payment_code_blocked"),),
    "wallet.budget_threshold_reached": (("user_id", "budget_threshold"),),
    "wallet.goal_reached": (("user_id", "goal_reached"),),
    # A money request's money would flow from `from_user_id` (the person asked) to `to_user_id` (the
    # requester). Paying one is a P2P transfer: its transfer.succeeded already tells both sides.
    "money_request.created": (("from_user_id", "money_request_received"),),
    "money_request.declined": (("to_user_id", "money_request_declined"),),
    "money_request.canceled": (("from_user_id", "money_request_canceled"),),
}

# kind → language → (title, body[, body without names]). `{amount}` is the event's amount, `{percent}`
# the budget threshold; `{party}` names the other side, `{shop}` the reader's own shop and `{wallet}` the
# reader's own wallet (see NAMED). The body without names is for when a name cannot be found.
TEXTS: dict[str, dict[str, tuple[str, ...]]] = {
    "transfer_sent": {
        "en": ("Money sent", "You sent {amount} to {party}.", "You sent {amount}."),
        "zh-CN": ("转账成功", "您已向 {party} 转账 {amount}。", "您已成功转出 {amount}。"),
    },
    "transfer_received": {
        "en": ("Money received", "You received {amount} from {party}.", "You received {amount}."),
        "zh-CN": ("收到转账", "您收到 {party} 的转账 {amount}。", "您收到一笔转账 {amount}。"),
    },
    "payment_paid": {
        "en": ("Payment successful", "You paid {party} {amount}.", "You paid {amount}."),
        "zh-CN": ("支付成功", "您已向 {party} 支付 {amount}。", "您已成功支付 {amount}。"),
    },
    "payment_received": {
        "en": (
            "Payment received",
            "{shop} received {amount} from {party}.",
            "Your shop received a payment of {amount}.",
        ),
        "zh-CN": ("收款到账", "{shop} 收到 {party} 的付款 {amount}。", "您的店铺收到一笔付款 {amount}。"),
    },
    "refund_received": {
        "en": (
            "Refund received",
            "{party} refunded {amount} to your wallet.",
            "A refund of {amount} was paid back to your wallet.",
        ),
        "zh-CN": (
            "退款到账",
            "{party} 的退款 {amount} 已退回您的钱包。",
            "一笔 {amount} 的退款已退回您的钱包。",
        ),
    },
    "refund_sent": {
        "en": ("Refund issued", "{shop} refunded {amount} to {party}.", "Your shop refunded {amount}."),
        "zh-CN": ("退款成功", "{shop} 已向 {party} 退款 {amount}。", "您的店铺已退款 {amount}。"),
    },
    "budget_threshold": {
        "en": (
            "Budget alert",
            "You have used {percent}% of this month's budget for {wallet}.",
            "You have used {percent}% of this month's budget for this wallet.",
        ),
        "zh-CN": ("预算提醒", "「{wallet}」本月预算已使用 {percent}%。", "该钱包本月预算已使用 {percent}%。"),
    },
    "goal_reached": {
        "en": (
            "Savings goal reached",
            "Congratulations! Your savings goal of {amount} for {wallet} is reached.",
            "Congratulations! Your savings goal of {amount} is reached.",
        ),
        "zh-CN": (
            "储蓄目标达成",
            "恭喜！「{wallet}」已达成 {amount} 的储蓄目标。",
            "恭喜！您已达成 {amount} 的储蓄目标。",
        ),
    },
    "money_request_received": {
        "en": ("Money request", "{party} asked you to pay {amount}.", "You have been asked to pay {amount}."),
        "zh-CN": (
            "收款请求",
            "{party} 向您发起了 {amount} 的收款请求。",
            "有人向您发起了 {amount} 的收款请求。",
        ),
    },
    "money_request_declined": {
        "en": (
            "Request declined",
            "{party} declined your request for {amount}.",
            "Your request for {amount} was declined.",
        ),
        "zh-CN": (
            "请求被拒绝",
            "{party} 拒绝了您发起的 {amount} 收款请求。",
            "您发起的 {amount} 收款请求已被拒绝。",
        ),
    },
    "money_request_canceled": {
        "en": (
            "Request canceled",
            "{party} canceled the request asking you for {amount}.",
            "A request asking you for {amount} was canceled.",
        ),
        "zh-CN": (
            "请求已取消",
            "{party} 取消了向您发起的 {amount} 收款请求。",
            "向您发起的 {amount} 收款请求已取消。",
        ),
    },
    "payment_confirmation_required": {
        "en": (
            "Confirm your payment",
            "Confirm the payment of {amount} to {party} in the app, or it will be canceled.",
            "Confirm the payment of {amount} in the app, or it will be canceled.",
        ),
        "zh-CN": (
            "请确认付款",
            "请在应用中确认向 {party} 支付 {amount}，超时将自动取消。",
            "请在应用中确认 {amount} 的付款，超时将自动取消。",
        ),
    },
    "payment_code_blocked": {
        "en": (
            "Payment codes paused",
            "Shops presented too many wrong payment codes for this phone, so its codes are paused. If you "
            "did not try to pay, someone may be guessing. Turn payment codes on again to get new codes.",
        ),
        "zh-CN": (
            "付款码已暂停",
            "商户多次提交了该设备的错误付款码，付款码已暂停使用。如非本人操作，可能有人在尝试猜测您的付款码。"
            "重新开启付款码即可获得新的付款码。",
        ),
    },
}

# Who the names in a kind's text are: placeholder → (payload key holding the id, what the id is).
PERSON, MERCHANT, OWN_WALLET = "person", "merchant", "own_wallet"
NAMED: dict[str, dict[str, tuple[str, str]]] = {
    "transfer_sent": {"party": ("to_user_id", PERSON)},
    "transfer_received": {"party": ("from_user_id", PERSON)},
    "payment_paid": {"party": ("merchant_id", MERCHANT)},
    "payment_confirmation_required": {"party": ("merchant_id", MERCHANT)},
    "payment_received": {"party": ("payer_user_id", PERSON), "shop": ("merchant_id", MERCHANT)},
    "refund_received": {"party": ("merchant_id", MERCHANT)},
    "refund_sent": {"party": ("payer_user_id", PERSON), "shop": ("merchant_id", MERCHANT)},
    # A money request's money flows from `from_user_id` (the person asked) to `to_user_id` (the requester).
    "money_request_received": {"party": ("to_user_id", PERSON)},
    "money_request_declined": {"party": ("from_user_id", PERSON)},
    "money_request_canceled": {"party": ("to_user_id", PERSON)},
    "budget_threshold": {"wallet": ("wallet_id", OWN_WALLET)},
    "goal_reached": {"wallet": ("wallet_id", OWN_WALLET)},
}
# When the event lacks the amount (or the percentage), the sentence without it.
FALLBACK_BODIES: dict[str, dict[str, str]] = {
    "en": {
        "budget_threshold": "You have reached a budget threshold for this wallet this month.",
        "default": "Open the app for details.",
    },
    "zh-CN": {"budget_threshold": "该钱包本月预算已达到提醒额度。", "default": "请打开应用查看详情。"},
}
# The amount of each kind: which payload field holds it.
AMOUNT_KEYS: dict[str, tuple[str, ...]] = {
    "goal_reached": ("target", "amount"),
    "budget_threshold": ("budget",),
}


@dataclass(frozen=True, slots=True)
class NotificationView:
    id: str
    kind: str
    event_id: str
    event_seq: int
    data: Mapping[str, Any]
    created_at: int
    read_at: int | None
    names: Mapping[str, str] = field(default_factory=dict)  # placeholder → name, looked up when read


def notifications_for(event_type: str, payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(user id, kind) for each person to notify about an event; nobody when one person is every side."""
    found: list[tuple[str, str]] = []
    for key, kind in RULES.get(event_type, ()):
        user = payload.get(key)
        if isinstance(user, str) and user:
            found.append((user, kind))
    if len(found) > 1 and len({user for user, _ in found}) == 1:
        return []
    return found


def _amount(data: Mapping[str, Any], kind: str) -> str | None:
    for key in AMOUNT_KEYS.get(kind, ("amount",)):
        value = data.get(key)
        if isinstance(value, Mapping):
            minor, code = value.get("amount"), value.get("currency")
            if isinstance(minor, int) and isinstance(code, str):
                try:
                    return format_money(Money(minor, code))
                except (MoneyError, TypeError):
                    return None
    return None


def _percent(data: Mapping[str, Any]) -> int | None:
    for key in ("threshold", "threshold_percent", "percent"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def render(
    kind: str, data: Mapping[str, Any], language: str, names: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(title, body) in `language` ("en" or "zh-CN"), amounts formatted like "¥12.34", the other side
    named from `names` (placeholder → name, see `NAMED`); without them, the sentence without names."""
    lang = "zh-CN" if language == "zh-CN" else "en"
    texts = TEXTS.get(kind)
    if texts is None:
        return kind, FALLBACK_BODIES[lang]["default"]
    title, *bodies = texts[lang]
    values: dict[str, object] = {"amount": _amount(data, kind), "percent": _percent(data), **(names or {})}
    for body in bodies:
        needed = set(re.findall(r"\{(\w+)\}", body))
        if all(values.get(name) is not None for name in needed):
            return title, body.format(**{name: values[name] for name in needed})
    return title, FALLBACK_BODIES[lang].get(kind, FALLBACK_BODIES[lang]["default"])


def names_for(
    conn: Connection,
    keys: KeyRing,
    user_id: str,
    notes: Sequence[tuple[str, Mapping[str, Any]]],
    language: str = "en",
) -> list[dict[str, str]]:
    """For each (kind, data) of `user_id`'s notifications, the names its text shows (see `NAMED`).

    A person is named by their masked name, and never when the id is the reader's own; a wallet only when
    it is the reader's (the main wallet in `language`). Ids that name nothing are left out, and the text
    then goes without them."""
    wanted: dict[str, set[str]] = {PERSON: set(), MERCHANT: set(), OWN_WALLET: set()}
    for kind, data in notes:
        for key, what in NAMED.get(kind, {}).values():
            value = data.get(key)
            if isinstance(value, str) and value:
                wanted[what].add(value)
    found: dict[str, dict[str, str]] = {
        PERSON: payee_names(conn, keys, wanted[PERSON] - {user_id}),
        MERCHANT: {
            m.id: m.name for m in (merchant_by_id(conn, mid) for mid in sorted(wanted[MERCHANT])) if m
        },
        OWN_WALLET: {
            w.id: shown_wallet_name(w.kind, w.name, language)
            for w in wallet_rows(conn, wanted[OWN_WALLET]).values()
            if w.user_id == user_id
        },
    }
    result = []
    for kind, data in notes:
        names = {}
        for placeholder, (key, what) in NAMED.get(kind, {}).items():
            name = found[what].get(str(data.get(key)))
            if name is not None:
                names[placeholder] = name
        result.append(names)
    return result


def _view(row: Any, names: Mapping[str, str]) -> NotificationView:
    return NotificationView(
        id=row.id,
        kind=row.kind,
        event_id=row.event_id,
        event_seq=row.event_seq,
        data=dict(row.data),
        created_at=row.created_at,
        read_at=row.read_at,
        names=names,
    )


def list_notifications(
    ctx: IdentityContext,
    user_id: str,
    *,
    limit: int,
    before_seq: int | None,
    unread_only: bool = False,
    language: str = "en",
) -> tuple[list[NotificationView], str | None, int]:
    """The user's notifications, newest first, with the names their texts show (in `language`), the next
    cursor, and how many are unread in all."""
    query = select(notifications).where(notifications.c.user_id == user_id)
    if before_seq is not None:
        query = query.where(notifications.c.event_seq < before_seq)
    if unread_only:
        query = query.where(notifications.c.read_at.is_(None))
    query = query.order_by(notifications.c.event_seq.desc()).limit(limit + 1)
    with ctx.db.read() as conn:
        rows = conn.execute(query).all()
        unread = conn.execute(
            select(func.count())
            .select_from(notifications)
            .where(notifications.c.user_id == user_id, notifications.c.read_at.is_(None))
        ).scalar_one()
        page = rows[:limit]
        names = names_for(conn, ctx.keys, user_id, [(r.kind, r.data) for r in page], language)
    found = [_view(r, n) for r, n in zip(page, names, strict=True)]
    next_cursor = str(found[-1].event_seq) if len(rows) > limit and found else None
    return found, next_cursor, int(unread)


def mark_read(ctx: IdentityContext, user_id: str, ids: Sequence[str] | None) -> int:
    """Mark the user's notifications `ids` (None: all of them) read; others' ids are ignored."""
    if ids is not None and (len(ids) > MAX_IDS or not all(isinstance(i, str) and len(i) <= 40 for i in ids)):
        raise invalid.because(
            "too_many_items",
            f"ids must be at most {MAX_IDS} notification ids",
            field="ids",
            params={"max": MAX_IDS},
        )
    if ids is not None and not ids:
        return 0
    query = update(notifications).where(notifications.c.user_id == user_id, notifications.c.read_at.is_(None))
    if ids is not None:
        query = query.where(notifications.c.id.in_(list(ids)))
    with ctx.db.write() as conn:
        return int(conn.execute(query.values(read_at=ctx.now())).rowcount)

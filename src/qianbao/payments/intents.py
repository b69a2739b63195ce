"""Online checkout: payment intents, as an explicit state machine.

    requires_confirmation ──confirm──▶ processing ──▶ succeeded
            │                               └──────▶ failed
            ├──cancel (merchant)──▶ canceled
            └──expires_at passes──▶ expired

A merchant's server creates an intent (API key with `payments:write`): amount, order id, description,
return URL, expiry. The customer, signed in to their wallet, sees it (`GET`, any signed-in user who has
its id: the id is the checkout link's secret, 128 random bits) and confirms it from one of their wallets.
The confirmation is an order of the payment pipeline: decided with the usual checks, step-up asked where
needed, and paid in one batch transaction whose hook moves the intent through `processing` to
`succeeded` (conditional UPDATEs: one confirmation wins; a double tap is `intent_state_conflict`). A
refusal by the decision (`insufficient_funds`, a limit, `step_up_required`) leaves the intent
`requires_confirmation`, so the customer can top up and try again; a payment the ledger then refuses
makes it `failed` with the code. The ledger transfer id is derived from the intent id, so an intent can
never be paid twice; an intent left in `processing` by an earlier version is resumed by confirming again.
Every transition writes a `payment_intent.<state>` event.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, insert, select, update

from qianbao import invalid
from qianbao.errors import Conflict, Locked, NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind
from qianbao.ids import new_id
from qianbao.payments.code_tables import payment_intents
from qianbao.payments.dynamic_qr import clean_order_id
from qianbao.payments.inputs import check_amount, require_user_id
from qianbao.payments.merchant_flow import run_planned
from qianbao.payments.merchant_payments import (
    PaymentPlan,
    payment_by_ledger_id,
    replay,
)
from qianbao.payments.merchant_records import PaymentRecord
from qianbao.payments.merchants import Merchant, merchant_by_id, own_merchant, payable_merchant
from qianbao.store.outbox import OutboxEvent, append_events
from qianbao.wallets.service import own_wallet_row, plausible_id

TRANSITIONS: dict[str, frozenset[str]] = {
    "requires_confirmation": frozenset({"processing", "canceled", "expired"}),
    "processing": frozenset({"succeeded", "failed"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "canceled": frozenset(),
    "expired": frozenset(),
}
MAX_DESCRIPTION = 200
ABANDONED_AFTER_US = 60_000_000  # a confirmation this long in `processing` has died
MAX_URL = 2000


class IntentStateConflict(Conflict):
    code = "intent_state_conflict"


class IntentExpired(QianbaoError):
    code = "intent_expired"


@dataclass(frozen=True, slots=True)
class Intent:
    id: str
    merchant_id: str
    merchant_user_id: str
    amount: int
    currency: str
    order_id: str | None
    description: str | None
    return_url: str | None
    status: str
    payer_user_id: str | None
    payment_id: str | None
    failure_code: str | None
    created_at: int
    updated_at: int
    expires_at: int


def _intent(row: Any) -> Intent:
    m = row._mapping
    return Intent(**{name: m[name] for name in Intent.__dataclass_fields__})


def can_move(current: str, wanted: str) -> bool:
    return wanted in TRANSITIONS[current]


def _event(intent: Intent) -> OutboxEvent:
    payload = {
        "payment_intent_id": intent.id,
        "status": intent.status,
        "merchant_id": intent.merchant_id,
        "merchant_user_id": intent.merchant_user_id,
        "payer_user_id": intent.payer_user_id,
        "amount": {"amount": intent.amount, "currency": intent.currency},
        "order_id": intent.order_id,
        "payment_id": intent.payment_id,
        "failure_code": intent.failure_code,
    }
    return OutboxEvent(f"payment_intent.{intent.status}", "payment_intent", intent.id, payload)


def _move(conn: Connection, intent: Intent, wanted: str, now: int, **values: Any) -> Intent | None:
    """One transition, if the intent is still where the caller saw it; writes its event. None if not."""
    if not can_move(intent.status, wanted):
        raise IntentStateConflict(
            f"a {intent.status} intent cannot become {wanted}", intent_status=intent.status
        )
    moved = conn.execute(
        update(payment_intents)
        .where(payment_intents.c.id == intent.id, payment_intents.c.status == intent.status)
        .values(status=wanted, updated_at=now, **values)
    ).rowcount
    if moved != 1:
        return None
    after = replace(intent, status=wanted, updated_at=now, **values)
    append_events(conn, [_event(after)], now)
    return after


def _clean_url(url: object, *, sandbox: bool) -> str | None:
    if url is None:
        return None
    if not isinstance(url, str) or len(url) > MAX_URL or not url.isprintable():
        raise invalid.too_long("return_url", MAX_URL)
    parts = urlsplit(url)
    schemes = ("https", "http") if sandbox else ("https",)
    if parts.scheme not in schemes or not parts.hostname or parts.username or parts.password:
        raise invalid.because(
            "return_url",
            "return_url must be an https URL (http too in sandbox mode) without credentials",
            field="return_url",
        )
    return url


def _clean_description(text: object) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str) or not 0 < len(text.strip()) <= MAX_DESCRIPTION or not text.isprintable():
        raise invalid.text_length("description", MAX_DESCRIPTION, printable=True)
    return text.strip()


def create_intent(
    ctx: IdentityContext,
    principal: Principal,
    *,
    merchant_id: str,
    amount: int,
    currency_code: str,
    order_id: object,
    description: object,
    return_url: object,
    expires_in_s: int | None,
) -> Intent:
    check_amount(amount, currency_code)
    order = clean_order_id(order_id)
    text = _clean_description(description)
    url = _clean_url(return_url, sandbox=ctx.settings.is_sandbox)
    ttl = ctx.settings.payment_intent_ttl_s if expires_in_s is None else expires_in_s
    if type(ttl) is not int or not 60 <= ttl <= 7 * 24 * 3600:
        raise invalid.seconds_range("expires_in", 60, 7 * 24 * 3600)
    now = ctx.now()
    with ctx.uow() as uow:
        merchant = own_merchant(uow.conn, principal, merchant_id)
        if merchant.status != "active":
            raise Locked("merchant_inactive", "the merchant is not active", merchant_status=merchant.status)
        if currency_code != merchant.currency:
            raise invalid.currency_only(
                "currency", merchant.currency, f"the merchant takes {merchant.currency}"
            )
        intent = Intent(
            id=new_id("pi"),
            merchant_id=merchant.id,
            merchant_user_id=merchant.owner_user_id,
            amount=amount,
            currency=currency_code,
            order_id=order,
            description=text,
            return_url=url,
            status="requires_confirmation",
            payer_user_id=None,
            payment_id=None,
            failure_code=None,
            created_at=now,
            updated_at=now,
            expires_at=now + ttl * 1_000_000,
        )
        uow.conn.execute(
            insert(payment_intents).values(**{f: getattr(intent, f) for f in Intent.__dataclass_fields__})
        )
        uow.emit(_event(replace(intent, status="created")))
        uow.commit()
    return intent


def _load(ctx: IdentityContext, intent_id: str) -> Intent:
    row = None
    if plausible_id(intent_id):
        with ctx.db.read() as conn:
            row = conn.execute(select(payment_intents).where(payment_intents.c.id == intent_id)).first()
    if row is None:
        raise NotFound("no such payment intent")
    return expire_if_due(ctx, _intent(row))


def expire_if_due(ctx: IdentityContext, intent: Intent) -> Intent:
    if intent.status != "requires_confirmation" or ctx.now() < intent.expires_at:
        return intent
    with ctx.db.write() as conn:
        moved = _move(conn, intent, "expired", ctx.now())
    return moved if moved is not None else _load(ctx, intent.id)


def get_intent(ctx: IdentityContext, principal: Principal, intent_id: str) -> tuple[Intent, Merchant]:
    """Any signed-in customer holding the id may look at an intent (to confirm it); an API key only at
    its owner's merchant's intents (a server has no business reading other merchants' checkouts)."""
    user_id = require_user_id(principal)
    intent = _load(ctx, intent_id)
    if principal.kind is PrincipalKind.API_KEY and user_id != intent.merchant_user_id:
        raise NotFound("no such payment intent")
    with ctx.db.read() as conn:
        merchant = merchant_by_id(conn, intent.merchant_id)
    if merchant is None:
        raise NotFound("no such payment intent")
    return intent, merchant


def cancel_intent(ctx: IdentityContext, principal: Principal, intent_id: str) -> Intent:
    intent = _load(ctx, intent_id)
    with ctx.db.read() as conn:
        own_merchant(conn, principal, intent.merchant_id)  # 404 for anyone but the merchant
    with ctx.db.write() as conn:
        moved = _move(conn, intent, "canceled", ctx.now())
    if moved is None:
        raise IntentStateConflict("the intent changed meanwhile", intent_status=_load(ctx, intent_id).status)
    return moved


def confirm_intent(
    ctx: IdentityContext, principal: Principal, intent_id: str, *, from_wallet_id: str, step_up: str | None
) -> tuple[Intent, PaymentRecord]:
    user_id = require_user_id(principal)
    intent = _load(ctx, intent_id)
    # A confirmation that died in `processing` (a crash) is resumed by its payer confirming again; one
    # still under way (a double tap) is not: that answers `intent_state_conflict` like any other.
    resuming = (
        intent.status == "processing"
        and intent.payer_user_id == user_id
        and ctx.now() - intent.updated_at > ABANDONED_AFTER_US
    )
    if intent.status == "expired":
        raise IntentExpired("this checkout has expired: start again from the merchant's site")
    if intent.status != "requires_confirmation" and not resuming:
        raise IntentStateConflict(f"this payment intent is {intent.status}", intent_status=intent.status)
    with ctx.db.read() as conn:
        merchant = payable_merchant(conn, intent.merchant_id)
        source = own_wallet_row(conn, user_id, from_wallet_id)
    plan = PaymentPlan(
        method="checkout",
        merchant=merchant,
        source=source,
        amount=intent.amount,
        currency=intent.currency,
        ledger_id=f"pi:{intent.id}",
        order_id=intent.order_id,
        step_up_params=(("payment_intent", intent.id),),
    )
    if resuming:  # the payment may have committed before the crash: then only the intent is behind
        done = payment_by_ledger_id(ctx, plan.ledger_id)
        if done is not None:  # a declined one is raised again, after the intent caught up
            return _finish(ctx, intent, done), replay(done)

    moved_with: list[str] = []  # the payments this confirmation's hook moved the intent with

    def succeed(conn: Connection, record: PaymentRecord) -> None:
        """In the payment's batch: the intent moves through `processing` to `succeeded` (both events)
        with the payment, or not at all."""
        moved_with.append(record.id)
        processing = (
            intent
            if resuming
            else _move(conn, intent, "processing", record.created_at, payer_user_id=user_id)
        )
        if (
            processing is None
            or _move(conn, processing, "succeeded", record.created_at, payment_id=record.id) is None
        ):
            raise IntentStateConflict("the intent changed meanwhile")

    try:
        # Decided, step-up asked where needed (`401`, the intent untouched) and paid in one batch.
        record = run_planned(ctx, principal, plan, claim=succeed, step_up=step_up)
    except QianbaoError as error:
        if "payment_id" in error.extra:  # the payment ran and was declined (recorded): so is the intent
            _fail(ctx, intent, user_id, error.code, resuming=resuming)
        elif (current := _load(ctx, intent.id)).status != intent.status:  # a double tap paid it first
            raise IntentStateConflict(
                f"this payment intent is {current.status}", intent_status=current.status
            ) from None
        raise
    if record.id not in moved_with and not resuming:  # a double tap: the other confirmation paid it
        current = _load(ctx, intent.id)
        raise IntentStateConflict(f"this payment intent is {current.status}", intent_status=current.status)
    return _finish(ctx, intent, record), record


def _fail(ctx: IdentityContext, intent: Intent, user_id: str, code: str, *, resuming: bool) -> None:
    """A payment declined while it ran fails its intent (through `processing`, as every transition)."""
    now = ctx.now()
    with ctx.db.write() as conn:
        processing = intent if resuming else _move(conn, intent, "processing", now, payer_user_id=user_id)
        if processing is not None:
            _move(conn, processing, "failed", now, failure_code=code)


def _finish(ctx: IdentityContext, intent: Intent, record: PaymentRecord) -> Intent:
    """The intent after its payment; one left in `processing` by a crash catches up with the payment."""
    current = _load(ctx, intent.id)
    if current.status == "processing":
        with ctx.db.write() as conn:
            if record.status == "succeeded":
                _move(conn, current, "succeeded", ctx.now(), payment_id=record.id)
            else:
                _move(conn, current, "failed", ctx.now(), failure_code=record.failure_code)
        current = _load(ctx, intent.id)
    return current


def finalize_expired_intents(ctx: IdentityContext, limit: int = 100) -> int:
    """Expire intents past their deadline (the sweeper calls this; reads also do it lazily)."""
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(payment_intents)
            .where(
                payment_intents.c.status == "requires_confirmation", payment_intents.c.expires_at <= ctx.now()
            )
            .limit(limit)
        ).all()
    return sum(1 for r in rows if expire_if_due(ctx, _intent(r)).status == "expired")

"""Wallets, P2P transfers, recipient look-up, and sandbox funding (API.md); history is in `history`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator
from sqlalchemy import Connection

from qianbao.api import request_errors
from qianbao.api.deps import Body, CurrentUser, Identity, Info
from qianbao.api.idempotency import answer_order, pipeline_key, pipeline_response, run_idempotent
from qianbao.api.problems import language
from qianbao.clock import rfc3339
from qianbao.errors import NotFound
from qianbao.invalid import currency_hint
from qianbao.money import UnknownCurrencyError, currency
from qianbao.payments import funding, records
from qianbao.payments import transfers as payments
from qianbao.payments.engine.service import submit_order_async
from qianbao.payments.inputs import MAX_PAYMENT
from qianbao.wallets import closing, editing
from qianbao.wallets import service as wallets
from qianbao.wallets.budgets import BudgetStatus
from qianbao.wallets.goals import GoalProgress
from qianbao.wallets.names import shown_wallet_name
from qianbao.wallets.settings import BudgetChange, GoalChange, WalletChanges

router = APIRouter(tags=["wallets"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MoneyIn(Strict):
    amount: StrictInt = Field(ge=1, le=MAX_PAYMENT, description="minor units (fen for CNY)")
    currency: StrictStr = Field(min_length=3, max_length=3)

    @field_validator("currency", mode="before")
    @classmethod
    def _written_otherwise(cls, value: object) -> object:
        """`¥`, `元`, `RMB` or `cny` get their did-you-mean before the length check calls `¥` too short."""
        if currency_hint(value) is not None:
            raise request_errors.unknown_currency(str(value))
        return value

    @field_validator("currency")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            currency(value)
        except UnknownCurrencyError as exc:
            raise request_errors.unknown_currency(value) from exc
        return value


class BudgetIn(Strict):
    amount: MoneyIn = Field(description="spending allowed per calendar month (China time)")
    on_limit: Literal["warn", "block"] = Field(
        "warn", description="at 100 %: warn (notify only) or block payments that would go over"
    )


class GoalIn(Strict):
    target: MoneyIn
    target_date: StrictStr | None = Field(None, description="YYYY-MM-DD, today or later (China time)")


class WalletSettingsIn(Strict):
    colour: StrictStr | None = Field(None, description="a palette name (red, blue, …) or #RRGGBB")
    icon: StrictStr | None = Field(None, description="one of the icon names in docs/wallets.md")
    budget: BudgetIn | None = None
    goal: GoalIn | None = None
    locked_until: StrictStr | None = Field(
        None, description="RFC 3339; no money may leave the wallet before then (extend only)"
    )


class WalletRequest(WalletSettingsIn):
    name: StrictStr
    purpose: StrictStr | None = None
    currency: StrictStr | None = None


class WalletPatch(WalletSettingsIn):
    """Only the fields given change; null removes a budget, goal or (ended) lock, or resets colour/icon."""

    name: StrictStr | None = None
    purpose: StrictStr | None = None


class Destination(Strict):
    wallet_id: StrictStr | None = None
    phone: StrictStr | None = None
    qr: StrictStr | None = Field(None, description="the text of a personal receive code (收款码)")

    @model_validator(mode="after")
    def _exactly_one(self) -> Destination:
        if [self.wallet_id, self.phone, self.qr].count(None) != 2:
            raise request_errors.exactly_one_of("wallet_id", "phone", "qr")
        return self


class TransferBody(Strict):
    from_wallet_id: StrictStr
    to: Destination
    amount: MoneyIn
    memo: StrictStr | None = None


class FundRequest(Strict):
    wallet_id: StrictStr
    amount: MoneyIn


class MoneyOut(BaseModel):
    amount: int
    currency: str


class BudgetOut(BaseModel):
    amount: MoneyOut
    on_limit: str = Field(description="warn or block")
    month: str = Field(description="the calendar month counted, YYYY-MM (China time)")
    spent: MoneyOut
    remaining: MoneyOut
    percent: int


class GoalOut(BaseModel):
    target: MoneyOut
    target_date: str | None
    balance: MoneyOut
    remaining: MoneyOut
    percent: int = Field(description="balance / target, 0 to 100")
    reached: bool
    reached_at: str | None


class WalletOut(BaseModel):
    id: str
    name: str = Field(description='the main wallet is "Main wallet" or "主钱包" by Accept-Language')
    kind: str
    purpose: str
    currency: str
    balance: MoneyOut
    available: MoneyOut = Field(description="balance minus pending holds")
    balance_cap: MoneyOut | None = Field(description="the KYC balance cap (the ledger ceiling); null: none")
    status: str = Field(description="active, frozen, debit_frozen or closed")
    created_at: str
    colour: str = Field(description="as chosen: a palette name or #RRGGBB")
    colour_hex: str = Field(description="the colour as #RRGGBB")
    icon: str
    budget: BudgetOut | None
    goal: GoalOut | None
    locked_until: str | None = Field(description="while locked: no money may leave the wallet before then")
    closed_at: str | None
    payable: bool = Field(description="money may leave it now (not locked, frozen or closed)")
    receivable: bool = Field(description="money may come into it (not frozen or closed)")


class ClosedWalletOut(BaseModel):
    wallet: WalletOut
    main_wallet_id: str = Field(description="where the balance went")
    moved: MoneyOut
    transaction_id: str | None = Field(description="the ledger transfer that emptied it; null if empty")


class WalletList(BaseModel):
    data: list[WalletOut]
    next_cursor: str | None


class TransferOut(BaseModel):
    id: str
    status: str = Field(description="succeeded, pending or failed")
    from_wallet_id: str
    to_wallet_id: str
    amount: MoneyOut
    memo: str | None
    created_at: str
    failure_code: str | None = None


class RecipientOut(BaseModel):
    name_masked: str
    phone_masked: str


class FundingOut(BaseModel):
    transaction_id: str
    wallet_id: str
    amount: MoneyOut
    created_at: str
    wallet: WalletOut


def _money(amount: int | None, code: str) -> dict[str, Any] | None:
    return None if amount is None else {"amount": amount, "currency": code}


def wallet_json(w: wallets.WalletView, lang: str) -> dict[str, Any]:
    """A wallet as the API shows it; the main wallet's default name in `lang` ("Main wallet", "主钱包")."""
    return {
        "id": w.id,
        "name": shown_wallet_name(w.kind, w.name, lang),
        "kind": w.kind,
        "purpose": w.purpose,
        "currency": w.currency,
        "balance": _money(w.balance, w.currency),
        "available": _money(w.available, w.currency),
        "balance_cap": _money(w.balance_cap, w.currency),
        "status": w.status,
        "created_at": rfc3339(w.created_at),
        "colour": w.colour,
        "colour_hex": w.colour_hex,
        "icon": w.icon,
        "budget": None if w.budget is None else budget_json(w.budget, w.currency),
        "goal": None if w.goal is None else goal_json(w.goal, w.currency),
        "locked_until": None if w.locked_until is None else rfc3339(w.locked_until),
        "closed_at": None if w.closed_at is None else rfc3339(w.closed_at),
        "payable": w.payable,
        "receivable": w.receivable,
    }


def budget_json(b: BudgetStatus, code: str) -> dict[str, Any]:
    return {
        "amount": _money(b.amount, code),
        "on_limit": b.on_limit,
        "month": b.month,
        "spent": _money(b.spent, code),
        "remaining": _money(b.remaining, code),
        "percent": b.percent,
    }


def goal_json(g: GoalProgress, code: str) -> dict[str, Any]:
    return {
        "target": _money(g.target, code),
        "target_date": g.target_date,
        "balance": _money(g.balance, code),
        "remaining": _money(g.remaining, code),
        "percent": g.percent,
        "reached": g.reached_at is not None,
        "reached_at": None if g.reached_at is None else rfc3339(g.reached_at),
    }


def wallet_changes(body: WalletSettingsIn) -> WalletChanges:
    """The fields the client sent (null included), as the wallets service takes them."""
    given = body.model_fields_set
    found: dict[str, Any] = {name: getattr(body, name) for name in ("name", "purpose", "colour", "icon")}
    found["locked_until"] = body.locked_until
    budget, goal = body.budget, body.goal
    found["budget"] = (
        None
        if budget is None
        else BudgetChange(budget.amount.amount, budget.amount.currency, budget.on_limit)
    )
    found["goal"] = (
        None if goal is None else GoalChange(goal.target.amount, goal.target.currency, goal.target_date)
    )
    return WalletChanges(**{name: value for name, value in found.items() if name in given})


def transfer_json(t: records.TransferRecord) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": t.id,
        "status": t.status,
        "from_wallet_id": t.from_wallet_id,
        "to_wallet_id": t.to_wallet_id,
        "amount": _money(t.amount, t.currency),
        "memo": t.memo,
        "created_at": rfc3339(t.created_at),
    }
    if t.failure_code is not None:
        shown["failure_code"] = t.failure_code
    return shown


@router.get("/v1/wallets", response_model=WalletList)
def list_wallets(request: Request, principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """The caller's wallets: the main wallet first, then sub-wallets."""
    assert principal.user_id is not None  # noqa: S101 - CurrentUser guarantees it
    lang = language(request)
    return {
        "data": [wallet_json(w, lang) for w in wallets.list_wallets(ctx, principal.user_id)],
        "next_cursor": None,
    }


@router.post("/v1/wallets", status_code=201, response_model=WalletOut)
def create_wallet(
    body: WalletRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Open a sub-wallet: `purpose` is travel, shopping, savings, bills or custom (default); CNY only."""

    def work() -> tuple[int, dict[str, Any]]:
        view = wallets.create_sub_wallet(
            ctx,
            principal,
            name=body.name,
            purpose=body.purpose,
            currency_code=body.currency,
            info=info,
            changes=wallet_changes(body),
        )
        return 201, wallet_json(view, language(request))

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.get("/v1/wallets/{wallet_id}", response_model=WalletOut)
def get_wallet(request: Request, wallet_id: str, principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """One of the caller's wallets with its balance and available amount (someone else's: 404)."""
    assert principal.user_id is not None  # noqa: S101 - CurrentUser guarantees it
    return wallet_json(wallets.get_wallet(ctx, principal.user_id, wallet_id), language(request))


@router.patch("/v1/wallets/{wallet_id}", response_model=WalletOut)
def update_wallet(
    request: Request, wallet_id: str, body: WalletPatch, principal: CurrentUser, ctx: Identity, info: Info
) -> dict[str, Any]:
    """Change a wallet: only the fields given change. The main wallet takes colour, icon and budget only.
    A lock can be extended but not shortened or removed before it ends (`423 wallet_locked`)."""
    changed = editing.update_wallet(ctx, principal, wallet_id, wallet_changes(body), info)
    return wallet_json(changed, language(request))


@router.post("/v1/wallets/{wallet_id}/close", response_model=ClosedWalletOut)
async def close_wallet(
    wallet_id: str,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Close a sub-wallet: its whole balance moves to the main wallet and it takes no more payments; it
    still shows in the list and history. Closing again answers the same. Refused for the main wallet or
    with holds pending (`409 wallet_close_refused`), for a locked wallet (`423 wallet_locked`)."""
    lang = language(request)

    def render(
        record: Any, conn: Connection | None = None, _seen: object = None
    ) -> tuple[int, dict[str, Any]]:
        if conn is None:
            with ctx.db.read() as read:
                closed = closing.closed_wallet(ctx, read, record)
        else:  # in the batch: the wallet as the closing left it
            closed = closing.closed_wallet(ctx, conn, record)
        return 200, {
            "wallet": wallet_json(closed.wallet, lang),
            "main_wallet_id": closed.main_wallet_id,
            "moved": _money(closed.moved, closed.wallet.currency),
            "transaction_id": closed.transaction_id,
        }

    http = pipeline_key(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, render=render, sealed=False
    )
    return await answer_order(ctx, closing.close_order(principal, wallet_id, info, http=http), render)


@router.post("/v1/transfers", status_code=201, response_model=TransferOut, response_model_exclude_unset=True)
async def create_transfer(
    body: TransferBody,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> JSONResponse:
    """Pay from one of your wallets to a wallet id or to a phone number's main wallet.

    Hard limits come first (`limit_exceeded_single`, `limit_exceeded_daily`, `wallet_frozen`,
    `insufficient_funds`, then the recipient's `balance_cap_exceeded`: for someone else's wallet without
    their limit, room or tier, only `next_step: lower_amount`), then step-up (`401 step_up_required`:
    prove the challenge and repeat with `Step-Up: <challenge_id>`). Moving money between your own wallets
    needs no step-up and does not count toward your limits. A decline is bound to the Idempotency-Key."""
    request_data = payments.TransferRequest(
        from_wallet_id=body.from_wallet_id,
        to_wallet_id=body.to.wallet_id,
        to_phone=body.to.phone,
        to_qr=body.to.qr,
        amount=body.amount.amount,
        currency=body.amount.currency,
        memo=body.memo,
    )

    def render(record: Any, _conn: object = None, _seen: object = None) -> tuple[int, dict[str, Any]]:
        return 201, transfer_json(record)

    # The answer holds the memo (personal data): stored encrypted, opened again for a replay.
    http = pipeline_key(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, render=render, sealed=True
    )
    order = payments.transfer_order(
        principal, request_data, idempotency_key=idempotency_key, step_up=step_up, http=http
    )
    # Async: the request waits for its batch without holding a thread (docs/payments.md, "The pipeline").
    return pipeline_response(await submit_order_async(ctx, order), render)


@router.get("/v1/transfers/{transfer_id}", response_model=TransferOut, response_model_exclude_unset=True)
def get_transfer(transfer_id: str, principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """A transfer the caller sent or received (anyone else's: 404)."""
    return transfer_json(payments.get_transfer(ctx, principal, transfer_id))


@router.get("/v1/recipients", response_model=RecipientOut)
def find_recipient(
    principal: CurrentUser, ctx: Identity, phone: Annotated[str, Query(min_length=1, max_length=32)]
) -> dict[str, Any]:
    """Who a phone number would pay, masked, to confirm before paying (rate-limited per caller)."""
    found = payments.find_recipient(ctx, principal, phone)
    return {"name_masked": found.name_masked, "phone_masked": found.phone_masked}


def sandbox_only(ctx: Identity) -> None:
    """Sandbox routes do not exist in production: 404 before authentication is even looked at."""
    if not ctx.settings.is_sandbox:
        raise NotFound("this route exists only in sandbox mode")


@router.post(
    "/v1/sandbox/fund", status_code=201, response_model=FundingOut, dependencies=[Depends(sandbox_only)]
)
async def sandbox_fund(
    body: FundRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Sandbox only (404 in production): credit your wallet from the sandbox funding account, like a card
    top-up that always succeeds. The wallet's balance cap applies (`balance_cap_exceeded`)."""
    lang = language(request)

    def render(
        record: Any, conn: Connection | None = None, _seen: object = None
    ) -> tuple[int, dict[str, Any]]:
        assert principal.user_id is not None  # noqa: S101 - CurrentUser guarantees it
        if conn is None:
            wallet = wallets.get_wallet(ctx, principal.user_id, record.wallet_id)
        else:  # in the batch: the wallet as the funding left it
            wallet = wallets.get_wallet_in(ctx, conn, principal.user_id, record.wallet_id)
        return 201, {
            "transaction_id": record.transaction_id,
            "wallet_id": record.wallet_id,
            "amount": _money(record.amount, record.currency),
            "created_at": rfc3339(record.created_at),
            "wallet": wallet_json(wallet, lang),
        }

    http = pipeline_key(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, render=render, sealed=False
    )
    order = funding.funding_order(
        ctx,
        principal,
        wallet_id=body.wallet_id,
        amount=body.amount.amount,
        currency_code=body.amount.currency,
        idempotency_key=idempotency_key,
        http=http,
    )
    return await answer_order(ctx, order, render)

"""Sandbox funding: credit one's own wallet from the sandbox funding account, and make sure the system
accounts exist on a fresh database.

Sandbox only (404 otherwise). It is a money movement of its own kind in the payment pipeline (decided by
`decide`, kind FUNDING): no step-up, no outflow limit, no transfer record; the owner's balance cap over
all their wallets and the wallet's own ceiling apply. With an Idempotency-Key the ledger
transfer id is derived from (caller scope, key), so a replay cannot fund twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from qianbao.errors import Conflict, IdempotencyKeyReused, NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.system_accounts import SANDBOX_FUNDING, system_account_id, system_account_specs
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.facts import Kind, PaymentRequest, TargetWallet
from qianbao.payments.engine.orders import Done, FlowDefaults, HttpKey, Order, Replay, Staged
from qianbao.payments.engine.service import submit_order
from qianbao.payments.errors import CurrencyMismatch
from qianbao.payments.inputs import check_amount, ledger_id_for, require_user_id
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.service import no_such_wallet, wallet_rows

FUNDING_CODE = "sandbox.funding"


@dataclass(frozen=True, slots=True)
class Funding:
    transaction_id: str
    wallet_id: str
    amount: int
    currency: str
    created_at: int


def ensure_sandbox_funding_account(ctx: IdentityContext, currency_code: str) -> str:
    """The sandbox funding account (and the other system accounts) exist on a fresh database too."""
    with ctx.db.write() as conn:
        return _ensure_funding_account_in(ctx, conn, currency_code)


def _ensure_funding_account_in(ctx: IdentityContext, conn: Connection, currency_code: str) -> str:
    """In the caller's transaction: created (with the other system accounts) the first time only."""
    funding = system_account_id(SANDBOX_FUNDING, currency_code)
    if not LedgerReader(ctx.db).lookup_accounts_in(conn, [funding]):
        for result in ctx.ledger.create_accounts_in(conn, system_account_specs(currency_code, sandbox=True)):
            if result.code not in (ResultCode.OK, ResultCode.EXISTS):
                raise Conflict(f"system account {result.id} could not be created: {result.code}")
    return funding


def funding_order(
    ctx: IdentityContext,
    principal: Principal,
    *,
    wallet_id: str,
    amount: int,
    currency_code: str,
    idempotency_key: str | None = None,
    http: HttpKey | None = None,
) -> Order:
    """The pipeline's order for a sandbox funding: the input checked, nothing read. With an
    Idempotency-Key the ledger transfer id is derived from (caller scope, key), so a replay cannot fund
    twice. Input refused for an HTTP request with a key is answered in the batch, after the key."""
    transfer_id = ledger_id_for("sandbox", principal.scope, idempotency_key, "fnd")
    try:
        if not ctx.settings.is_sandbox:
            raise NotFound("sandbox funding exists only in sandbox mode")
        require_user_id(principal)
        check_amount(amount, currency_code)
    except QianbaoError as refusal:
        if http is None:
            raise
        return Order(FUNDINGS, principal, None, transfer_id, idempotency_key, None, http, refusal=refusal)
    ask = FundingAsk(wallet_id, amount, currency_code)
    return Order(FUNDINGS, principal, ask, transfer_id, idempotency_key, None, http)


def sandbox_fund(
    ctx: IdentityContext,
    principal: Principal,
    *,
    wallet_id: str,
    amount: int,
    currency_code: str,
    idempotency_key: str | None = None,
) -> Funding:
    """Sandbox only: credit one's own wallet from the sandbox funding account (the balance cap applies),
    through the payment pipeline."""
    order = funding_order(
        ctx,
        principal,
        wallet_id=wallet_id,
        amount=amount,
        currency_code=currency_code,
        idempotency_key=idempotency_key,
    )
    outcome = submit_order(ctx, order)
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    funded: Funding = outcome.record
    return funded


@dataclass(frozen=True, slots=True)
class FundingAsk:
    wallet_id: str
    amount: int
    currency: str


class FundingFlow(FlowDefaults):
    """Sandbox funding in the pipeline: decided by `decide` (kind FUNDING: the owner's balance cap, the
    wallet's own ceiling), one ledger transfer from the funding account; no record of its own (the
    ledger transfer is the record, and an earlier attempt's outcome)."""

    what = "funding"

    def stage(
        self,
        ctx: IdentityContext,
        conn: Connection,
        orders: Sequence[Order],
        now: int,  # noqa: ARG002 - the flow's signature
    ) -> list[Staged | Replay | QianbaoError]:
        asks: list[FundingAsk] = [o.payload for o in orders]
        rows = wallet_rows(conn, [a.wallet_id for a in asks])
        staged: list[Staged | Replay | QianbaoError] = []
        for order, ask in zip(orders, asks, strict=True):
            wallet = rows.get(ask.wallet_id)
            if wallet is None or wallet.user_id != order.principal.user_id:
                staged.append(no_such_wallet())
                continue
            if wallet.currency != ask.currency:
                staged.append(CurrencyMismatch(f"the wallet holds {wallet.currency}, not {ask.currency}"))
                continue
            request = PaymentRequest(
                kind=Kind.FUNDING,
                payer_user_id=wallet.user_id,
                source_wallet_id=system_account_id(SANDBOX_FUNDING, ask.currency),
                target_wallet_id=wallet.id,
                amount=ask.amount,
                currency=ask.currency,
            )
            staged.append(Staged(order, request, TargetWallet(wallet.id, wallet.user_id, wallet.currency)))
        for code in sorted({s.request.currency for s in staged if isinstance(s, Staged)}):
            _ensure_funding_account_in(ctx, conn, code)  # on a fresh database, the first time
        return staged

    def existing(self, ctx: IdentityContext, conn: Connection, ledger_ids: Sequence[str]) -> dict[str, Any]:
        found = LedgerReader(ctx.db).transfers_in(conn, list(ledger_ids))
        return {
            t.id: Funding(t.id, t.credit_account_id, t.amount, t.currency, t.created_at)
            for t in found.values()
        }

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]:  # noqa: ARG002
        request = staged.request
        assert request.target_wallet_id is not None  # noqa: S101 - staged with its wallet
        return [
            TransferSpec.posted(
                staged.order.ledger_id,
                request.source_wallet_id,
                request.target_wallet_id,
                request.amount,
                request.currency,
                code=FUNDING_CODE,
            )
        ]

    def record(
        self,
        staged: Staged,
        decision: Approve,  # noqa: ARG002 - the flow's signature
        now: int,
        failure: QianbaoError | None,  # noqa: ARG002 - a refused funding leaves no record
    ) -> Funding:
        ask: FundingAsk = staged.order.payload
        return Funding(staged.order.ledger_id, ask.wallet_id, ask.amount, ask.currency, now)

    def replay(self, record: Any, order: Order) -> Funding:
        """The funding an earlier attempt with this key made: the same one, or the key was reused."""
        ask: FundingAsk = order.payload
        if (record.wallet_id, record.amount, record.currency) != (ask.wallet_id, ask.amount, ask.currency):
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different funding")
        funded: Funding = record
        return funded

    def write(
        self,
        ctx: IdentityContext,  # noqa: ARG002 - the flow's signature
        conn: Connection,  # noqa: ARG002
        written: Sequence[tuple[Staged, Any]],  # noqa: ARG002
    ) -> list[OutboxEvent]:
        return []  # the ledger transfer is the whole record (a savings goal reached: the pipeline's)


FUNDINGS = FundingFlow()

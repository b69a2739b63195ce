"""Sandbox funding: credit one's own wallet from the sandbox funding account, and make sure the system
accounts exist on a fresh database.

Sandbox only (404 otherwise). It is a separate use case from P2P transfers: no step-up, no outflow limit,
no transfer record; the ledger still enforces the wallet's balance cap. With an Idempotency-Key the ledger
transfer id is derived from (caller scope, key), so a replay cannot fund twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from qianbao.errors import Conflict, IdempotencyKeyReused, NotFound
from qianbao.identity.context import IdentityContext
from qianbao.identity.limit_rules import balance_cap
from qianbao.identity.limits import holder_cap
from qianbao.identity.model import Principal
from qianbao.ids import new_id
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.system_accounts import SANDBOX_FUNDING, system_account_id, system_account_specs
from qianbao.payments.engine.declines import error_for
from qianbao.payments.engine.rules import ledger_finding
from qianbao.payments.errors import CurrencyMismatch
from qianbao.payments.inputs import check_amount, derived_id, require_user_id
from qianbao.wallets import spending
from qianbao.wallets.service import own_wallet_row

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
    funding = system_account_id(SANDBOX_FUNDING, currency_code)
    if LedgerReader(ctx.db).get_account(funding) is None:
        for result in ctx.ledger.create_accounts(system_account_specs(currency_code, sandbox=True)):
            if result.code not in (ResultCode.OK, ResultCode.EXISTS):
                raise Conflict(f"system account {result.id} could not be created: {result.code}")
    return funding


def sandbox_fund(
    ctx: IdentityContext,
    principal: Principal,
    *,
    wallet_id: str,
    amount: int,
    currency_code: str,
    idempotency_key: str | None = None,
) -> Funding:
    """Sandbox only: credit one's own wallet from the sandbox funding account (the balance cap applies)."""
    if not ctx.settings.is_sandbox:
        raise NotFound("sandbox funding exists only in sandbox mode")
    user_id = require_user_id(principal)
    check_amount(amount, currency_code)
    with ctx.db.read() as conn:
        wallet = own_wallet_row(conn, user_id, wallet_id)
    if wallet.currency != currency_code:
        raise CurrencyMismatch(f"the wallet holds {wallet.currency}, not {currency_code}")
    funding = ensure_sandbox_funding_account(ctx, currency_code)
    if idempotency_key is not None:
        transfer_id = derived_id("sandbox", principal.scope, idempotency_key)
    else:
        transfer_id = f"sandbox:{new_id('fnd')}"
    spec = TransferSpec.posted(transfer_id, funding, wallet.id, amount, currency_code, code=FUNDING_CODE)
    with ctx.uow() as uow:
        # The cap over all the user's wallets (their own: they may see the room left), then the ledger.
        holder = holder_cap(uow.conn, ctx.settings, user_id, currency_code, ctx.now(), lock=True)
        over_cap = None if holder is None else balance_cap(holder, amount)
        if over_cap is not None:
            raise error_for(over_cap, currency_code)
        (result,) = ctx.ledger.apply_in(uow.conn, [spec])
        if result.code is ResultCode.OK:  # a savings goal may just have been reached
            for event in spending.after_credit(uow.conn, wallet.id, ctx.now()):
                uow.emit(event)
        uow.commit()
    if result.code is ResultCode.EXISTS_WITH_DIFFERENT_FIELDS:
        raise IdempotencyKeyReused("this Idempotency-Key was used for a different funding")
    if not result.succeeded:
        account = None
        if result.code is ResultCode.EXCEEDS_CEILING:  # the wallet's own ceiling: how much it may take
            account = LedgerReader(ctx.db).lookup_accounts([wallet.id])[wallet.id]
        raise error_for(ledger_finding(result.code, account), currency_code)
    created = result.transfer.created_at if result.transfer is not None else ctx.now()
    return Funding(transfer_id, wallet.id, amount, currency_code, created)

"""Helpers for ledger tests: account factories with unique ids."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection

from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import Account, AccountSpec, AccountStatus, NormalBalance, ResultCode, TransferSpec
from tests.conftest import unique


def open_accounts(engine: LedgerEngine, count: int, *, funded: int = 0, currency: str = "CNY",
                  **flags: object) -> tuple[str, list[str]]:  # fmt: skip
    """A funding account (debit-normal, unbounded) and `count` wallets that cannot go negative, each
    funded with `funded` minor units. Returns (funding id, wallet ids)."""
    funding = unique("funding")
    wallets = [unique("wallet") for _ in range(count)]
    specs = [AccountSpec(funding, currency, "test.funding", normal_balance=NormalBalance.DEBIT)]
    specs += [
        AccountSpec(w, currency, "test.wallet", debits_must_not_exceed_credits=True, **flags)  # type: ignore[arg-type]
        for w in wallets
    ]
    results = engine.create_accounts(specs)
    assert all(r.code is ResultCode.OK for r in results), results
    if funded:
        transfers = [TransferSpec.posted(unique("fund"), funding, w, funded, currency) for w in wallets]
        outcome = engine.create_transfers(transfers, group_ends=range(len(transfers)))
        assert all(r.code is ResultCode.OK for r in outcome), outcome
    return funding, wallets


def shown_open(monkeypatch: pytest.MonkeyPatch, engine: LedgerEngine, wallet_id: str) -> None:
    """Freeze the wallet's account, but show it open to the payment pipeline's decision (its locked
    read of the accounts): only the ledger's own checks then refuse, as if the decision had seen a
    picture that changed before it was written."""
    engine.set_account_status(wallet_id, AccountStatus.FROZEN)
    real_lock = LedgerEngine.lock_accounts_in

    def open_to_the_decision(self: LedgerEngine, conn: Connection, ids: list[str]) -> dict[str, Account]:
        found = real_lock(self, conn, ids)
        if wallet_id in found:
            found[wallet_id] = found[wallet_id].copy()
            found[wallet_id].status = AccountStatus.OPEN
        return found

    monkeypatch.setattr(LedgerEngine, "lock_accounts_in", open_to_the_decision)

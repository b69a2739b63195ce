"""Sandbox demo data, created on first start so a new deployment has something to look at.

It grows with the product: today it is the system accounts and three demo wallets (two consumers and a
merchant) funded through the ledger. Every write is idempotent, so seeding twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from qianbao.errors import Conflict
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import AccountSpec, ResultCode, TransferSpec
from qianbao.ledger.system_accounts import SANDBOX_FUNDING, system_account_id, system_account_specs

CURRENCY = "CNY"


@dataclass(frozen=True, slots=True)
class DemoWallet:
    account_id: str
    label: str
    opening_balance: int  # fen


DEMO_WALLETS = (
    DemoWallet("demo:alice:main", "Alice Wang (consumer)", 500_000),
    DemoWallet("demo:bob:main", "Bob Li (consumer)", 120_000),
    DemoWallet("demo:teahouse:merchant", "Lotus Teahouse (merchant)", 0),
)


def seed_demo_data(ledger: LedgerEngine) -> list[DemoWallet]:
    specs = system_account_specs(CURRENCY, sandbox=True) + [
        AccountSpec(w.account_id, CURRENCY, "wallet.demo", debits_must_not_exceed_credits=True)
        for w in DEMO_WALLETS
    ]
    for result in ledger.create_accounts(specs):
        if result.code not in (ResultCode.OK, ResultCode.EXISTS):
            raise Conflict(f"demo account {result.id} could not be created: {result.code}")
    funding = system_account_id(SANDBOX_FUNDING, CURRENCY)
    transfers = [
        TransferSpec.posted(
            f"seed:{w.account_id}", funding, w.account_id, w.opening_balance, CURRENCY, code="sandbox.funding"
        )  # fmt: skip
        for w in DEMO_WALLETS
        if w.opening_balance > 0
    ]
    for transfer in ledger.create_transfers(transfers, group_ends=range(len(transfers))):
        if not transfer.succeeded:
            raise Conflict(f"demo funding {transfer.id} failed: {transfer.code}")
    return list(DEMO_WALLETS)

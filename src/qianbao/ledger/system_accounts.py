"""The operator's own ledger accounts, one per purpose and currency (`sys:<purpose>:<currency>`).

They are ordinary ledger accounts; what makes them "system" is only their id and code. Debit-normal
ones (assets, funding sources) may go "negative" from the wallet's point of view: they have no
overdraft flag, since e.g. sandbox funding creates money that a real deployment would receive from banks.
"""

from __future__ import annotations

from qianbao.ledger.model import AccountSpec, NormalBalance

SANDBOX_FUNDING = "sandbox_funding"  # sandbox only: the source of test money
BANK_CLEARING = "bank_clearing"  # money in transit to and from banks
FEES = "fees"  # fee income
SUSPENSE = "suspense"  # unmatched items awaiting investigation

_NORMAL = {
    SANDBOX_FUNDING: NormalBalance.DEBIT,
    BANK_CLEARING: NormalBalance.DEBIT,
    FEES: NormalBalance.CREDIT,
    SUSPENSE: NormalBalance.CREDIT,
}


def system_account_id(purpose: str, currency: str) -> str:
    return f"sys:{purpose}:{currency}"


def system_purpose(account_id: str) -> str | None:
    """The purpose of a system account id (`sys:sandbox_funding:CNY` → "sandbox_funding"), else None."""
    prefix, _, rest = account_id.partition(":")
    purpose, _, currency = rest.rpartition(":")
    return purpose if prefix == "sys" and purpose and currency else None


def system_account_specs(currency: str, *, sandbox: bool) -> list[AccountSpec]:
    purposes = [p for p in _NORMAL if sandbox or p != SANDBOX_FUNDING]
    return [
        AccountSpec(
            id=system_account_id(p, currency),
            currency=currency,
            code=f"system.{p}",
            normal_balance=_NORMAL[p],
        )
        for p in purposes
    ]

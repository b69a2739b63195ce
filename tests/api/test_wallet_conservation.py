"""Property: whatever sequence of moves between one's own wallets, locks, waits and closes, no money is
created or lost — the user's wallets always hold exactly what was funded, each answer (success or
refusal code) is what a simple model predicts, closed wallets are empty, and `ledger verify` agrees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qianbao.clock import FixedClock, rfc3339
from qianbao.ledger.model import AccountStatus
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.verify import verify_ledger
from tests.api.test_wallet_settings import HOUR, clock, clocked, db_of, fund, money, open_sub, patch, pay
from tests.support.api import sign_up

__all__ = ["clock", "clocked"]  # fixtures

WALLETS = 4  # the main wallet and three sub-wallets
US = 1_000_000

index = st.integers(0, WALLETS - 1)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("move"), index, index, st.integers(1, 60_000)),
        st.tuples(st.just("close"), index),
        st.tuples(st.just("lock"), index, st.integers(1, 12)),
        st.tuples(st.just("wait"), st.integers(1, 12)),
    ),
    min_size=1,
    max_size=14,
)


@dataclass
class Model:
    ids: list[str]
    balances: list[int]
    closed: dict[int, int] = field(default_factory=dict)  # index -> what closing moved
    locked_until: dict[int, int] = field(default_factory=dict)

    def locked(self, i: int, now: int) -> bool:
        return self.locked_until.get(i, 0) > now

    def move(self, i: int, j: int, amount: int, now: int) -> tuple[int, str | None]:
        if i == j:
            return 422, "same_wallet"
        if self.locked(i, now):
            return 423, "wallet_locked"
        if i in self.closed:
            return 423, "wallet_frozen"
        if self.balances[i] < amount:
            return 422, "insufficient_funds"
        if j in self.closed:
            return 423, "wallet_frozen"
        self.balances[i] -= amount
        self.balances[j] += amount
        return 201, None

    def close(self, i: int, now: int) -> tuple[int, str | None]:
        if i == 0:
            return 409, "wallet_close_refused"
        if i in self.closed:
            return 200, None
        if self.locked(i, now):
            return 423, "wallet_locked"
        self.closed[i] = self.balances[i]
        self.balances[0] += self.balances[i]
        self.balances[i] = 0
        return 200, None

    def lock(self, i: int, until: int, now: int) -> tuple[int, str | None]:
        if i == 0:
            return 422, "validation_error"
        if i in self.closed:
            return 409, "conflict"
        if self.locked(i, now) and until < self.locked_until[i]:
            return 423, "wallet_locked"
        self.locked_until[i] = until
        return 200, None


def answer(response: Any) -> tuple[int, str | None]:
    code = response.json().get("code") if response.status_code >= 400 else None
    return response.status_code, code


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(funding=st.lists(st.integers(0, 50_000), min_size=WALLETS, max_size=WALLETS), plan=steps)
def test_money_is_conserved_across_moves_locks_and_closes(
    clocked: TestClient, clock: FixedClock, funding: list[int], plan: list[tuple[Any, ...]]
) -> None:
    user = sign_up(clocked)
    ids = [user.wallet_id] + [open_sub(clocked, user, f"口袋{i}")["id"] for i in range(1, WALLETS)]
    for wallet_id, amount in zip(ids, funding, strict=True):
        if amount:
            fund(clocked, user, wallet_id, amount)
    model = Model(ids, list(funding))
    for step in plan:
        now = clock.now_us()
        if step[0] == "move":
            _kind, i, j, amount = step
            expected = model.move(i, j, amount, now)
            assert answer(pay(clocked, user, ids[i], ids[j], amount)) == expected, step
        elif step[0] == "close":
            i = step[1]
            expected = model.close(i, now)
            response = clocked.post(f"/v1/wallets/{ids[i]}/close", headers=user.auth)
            assert answer(response) == expected, step
            if expected[0] == 200:
                assert response.json()["moved"] == money(model.closed[i])
        elif step[0] == "lock":
            _kind, i, hours = step
            until = now + hours * HOUR * US
            expected = model.lock(i, until, now)
            assert answer(patch(clocked, user, ids[i], locked_until=rfc3339(until))) == expected, step
        else:
            clock.advance(step[1] * HOUR)
        listed = clocked.get("/v1/wallets", headers=user.auth).json()["data"]
        shown = {w["id"]: w["balance"]["amount"] for w in listed}
        assert [shown[w] for w in ids] == model.balances
    assert sum(model.balances) == sum(funding)
    accounts = LedgerReader(db_of(clocked)).lookup_accounts(ids)
    assert sum(a.balance for a in accounts.values()) == sum(funding)
    for i in model.closed:
        assert accounts[ids[i]].status is AccountStatus.CLOSED and accounts[ids[i]].balance == 0
    assert verify_ledger(db_of(clocked)).ok

"""A server process's wiring: the batcher answers, and the sweeper expires holds by itself."""

from __future__ import annotations

import asyncio
import time

from qianbao.bootstrap import build_container
from qianbao.config import Settings
from qianbao.ledger.model import PendingStatus, ResultCode, TransferSpec
from tests.conftest import unique
from tests.support.ledger import open_accounts


def test_container_batches_transfers_and_sweeps_expired_holds(fresh_database_url: str) -> None:
    settings = Settings(database_url=fresh_database_url, ledger_sweep_interval_s=0.05, seed_demo_data=False)
    container = build_container(settings)
    container.start()
    try:
        _, (a, b) = open_accounts(container.ledger, 2, funded=1_000)
        hold_id = unique("hold")

        async def submit() -> list[ResultCode]:
            results = await container.batcher.create_transfers_async(
                [
                    TransferSpec.pending(hold_id, a, b, 400, "CNY", timeout_seconds=1),
                    TransferSpec.posted(unique(), a, b, 100, "CNY"),
                ]
            )
            return [r.code for r in results]

        assert asyncio.run(submit()) == [ResultCode.OK, ResultCode.OK]
        assert container.reader.get_account(a).available == 500
        deadline = time.monotonic() + 15
        view = container.reader.get_transfer(hold_id)
        while (
            view is not None and view.pending_status is PendingStatus.PENDING and time.monotonic() < deadline
        ):
            time.sleep(0.05)
            view = container.reader.get_transfer(hold_id)
        assert view is not None and view.pending_status is PendingStatus.EXPIRED
        account = container.reader.get_account(a)
        assert account is not None and (account.balance, account.available) == (900, 900)
    finally:
        container.close()

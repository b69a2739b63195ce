from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.ledger.verify import verify_ledger
from tests.conftest import unique
from tests.support.ledger import open_accounts


def test_transfer_moves_money_and_verifies(fresh_engine):
    funding, (a, b) = open_accounts(fresh_engine, 2, funded=1_000)
    [result] = fresh_engine.create_transfers([TransferSpec.posted(unique(), a, b, 400, "CNY")])
    assert result.code is ResultCode.OK
    assert verify_ledger(fresh_engine.db).ok

"""The refund rule (pure) and the errors its findings become."""

from __future__ import annotations

import pytest

from qianbao.payments.engine.declines import error_for
from qianbao.payments.engine.rules import refundable


def test_exactly_what_is_left_may_be_refunded_and_one_fen_more_may_not() -> None:
    assert refundable("succeeded", 10_000, 3_000, 7_000) is None
    over = refundable("succeeded", 10_000, 3_000, 7_001)
    assert over is not None and over.code == "refund_exceeds_payment"
    assert over.data == {"remaining": 7_000}
    error = error_for(over, "CNY")
    assert error.code == "refund_exceeds_payment"
    assert error.extra["remaining"] == {"amount": 7_000, "currency": "CNY"}


def test_a_fully_refunded_payment_has_nothing_left() -> None:
    finding = refundable("succeeded", 10_000, 10_000, 1)
    assert finding is not None and finding.data == {"remaining": 0}


@pytest.mark.parametrize("status", ["failed", "pending", "canceled"])
def test_only_a_succeeded_payment_is_refunded(status: str) -> None:
    finding = refundable(status, 10_000, 0, 1)
    assert finding is not None and finding.code == "payment_not_refundable"
    error = error_for(finding, "CNY")
    assert error.code == "payment_not_refundable" and error.extra["payment_status"] == status

"""Merchant discount fees (`qianbao.payments.fees`): the fee is amount × rate rounded half-up to the fen,
and refunds return it pro-rata so that any sequence of partial refunds returns exactly the fee, no fen
more or less.

The oracle is Decimal arithmetic with ROUND_HALF_UP, independent of the module's integer formula."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qianbao.payments.fees import PPM, fee_for, fee_rate_ppm, fee_refund

amounts = st.integers(min_value=1, max_value=10**13)  # up to ¥100 billion in fen
rates = st.integers(min_value=0, max_value=PPM)  # 0 % to 100 %
any_rate = st.integers(min_value=0, max_value=20 * PPM)  # nonsense rates too: the cap must still hold


def half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-up, the way a person would, via Decimal."""
    return int((Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def decimal_fee(amount: int, rate_ppm: int) -> int:
    return int((Decimal(amount) * Decimal(rate_ppm) / Decimal(PPM)).quantize(Decimal(1), ROUND_HALF_UP))


# -- the fee on a payment --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "rate", "fee"),
    [
        (10_000, 3_800, 38),  # ¥100 at the default 0.38 %
        (2_500, 3_800, 10),  # 9.5 fen rounds up
        (1, 3_800, 0),  # 0.0038 fen
        (131, 3_800, 0),  # 0.4978
        (132, 3_800, 1),  # 0.5016
        (125, 4_000, 1),  # exactly 0.5: half up, not to even
        (375, 4_000, 2),  # 1.5 → 2
        (625, 4_000, 3),  # 2.5 → 3 (banker's rounding would give 2)
        (150_000, 3_800, 570),
        (10_000, 0, 0),
        (10_000, PPM, 10_000),  # 100 %: the whole amount
        (7, 3 * PPM, 7),  # a rate above 100 % still never takes more than the amount
    ],
)
def test_known_fees(amount: int, rate: int, fee: int) -> None:
    assert fee_for(amount, rate) == fee


@given(amount=amounts, rate=rates)
def test_the_fee_is_amount_times_rate_rounded_half_up(amount: int, rate: int) -> None:
    assert fee_for(amount, rate) == decimal_fee(amount, rate)


@given(amount=amounts, rate=any_rate)
def test_the_fee_never_exceeds_the_amount(amount: int, rate: int) -> None:
    fee = fee_for(amount, rate)
    assert 0 <= fee <= amount
    assert fee == min(amount, decimal_fee(amount, rate))


@given(a=amounts, b=amounts, rate=any_rate)
def test_the_fee_is_monotone_in_the_amount(a: int, b: int, rate: int) -> None:
    low, high = sorted((a, b))
    assert fee_for(low, rate) <= fee_for(high, rate)


@given(amount=amounts, r1=any_rate, r2=any_rate)
def test_the_fee_is_monotone_in_the_rate(amount: int, r1: int, r2: int) -> None:
    low, high = sorted((r1, r2))
    assert fee_for(amount, low) <= fee_for(amount, high)


@pytest.mark.parametrize(("amount", "rate"), [(0, 3_800), (-1, 3_800), (100, -1)])
def test_nonsense_inputs_are_refused(amount: int, rate: int) -> None:
    with pytest.raises(ValueError):
        fee_for(amount, rate)


def test_a_category_with_its_own_rate_uses_it() -> None:
    by_mcc = {"5411": 2_000, "4900": 0}
    assert fee_rate_ppm("5411", 3_800, by_mcc) == 2_000
    assert fee_rate_ppm("4900", 3_800, by_mcc) == 0  # a zero rate is a rate, not "unset"
    assert fee_rate_ppm("5812", 3_800, by_mcc) == 3_800


# -- the fee a refund returns ----------------------------------------------------------------------


@st.composite
def payment_and_refunds(draw: st.DrawFn, *, full: bool) -> tuple[int, int, list[int]]:
    """A payment (amount, fee) and a sequence of positive partial refunds; all of it when `full`."""
    amount = draw(st.integers(min_value=1, max_value=10**9))
    fee = fee_for(amount, draw(any_rate))
    total = amount if full else draw(st.integers(min_value=1, max_value=amount))
    # Cut [0, total] at distinct points: the pieces are the refunds, each at least 1 fen.
    max_cuts = min(total - 1, 30)
    cuts = draw(st.sets(st.integers(min_value=1, max_value=max(1, total - 1)), max_size=max_cuts))
    points = [0, *sorted(c for c in cuts if c < total), total]
    return amount, fee, [b - a for a, b in zip(points, points[1:], strict=False)]


@given(case=payment_and_refunds(full=False))
def test_partial_refunds_never_return_more_than_the_fee(case: tuple[int, int, list[int]]) -> None:
    amount, fee, parts = case
    refunded = returned = 0
    for part in parts:
        share = fee_refund(fee, amount, refunded, part)
        assert 0 <= share <= part  # never negative, never more than the refund itself
        refunded += part
        returned += share
        assert returned <= fee
        # Cumulative pro-rata: after refunds totalling r the fee returned is round(fee × r / amount).
        assert returned == half_up(fee * refunded, amount)
    assert refunded <= amount


@given(case=payment_and_refunds(full=True))
def test_a_full_refund_in_any_parts_returns_exactly_the_fee(case: tuple[int, int, list[int]]) -> None:
    amount, fee, parts = case
    refunded = returned = 0
    for part in parts:
        returned += fee_refund(fee, amount, refunded, part)
        refunded += part
    assert refunded == amount
    assert returned == fee


@given(amount=st.integers(min_value=1, max_value=10**9), rate=any_rate)
def test_a_single_full_refund_returns_the_whole_fee(amount: int, rate: int) -> None:
    fee = fee_for(amount, rate)
    assert fee_refund(fee, amount, 0, amount) == fee


@pytest.mark.parametrize(
    ("fee", "amount", "before", "refund", "share"),
    [
        (38, 10_000, 0, 5_000, 19),
        (38, 10_000, 5_000, 5_000, 19),
        (38, 10_000, 0, 3_000, 11),  # 11.4
        (38, 10_000, 3_000, 7_000, 27),  # 38 − 11
        (38, 10_000, 0, 3_333, 13),  # 12.6654
        (38, 10_000, 3_333, 3_333, 12),  # 25.3308 − 13
        (38, 10_000, 6_666, 3_334, 13),  # 38 − 25
        (38, 10_000, 0, 1, 0),  # 0.0038
        (10, 2_500, 0, 1_250, 5),
        (1, 2, 0, 1, 1),  # exactly half a fen rounds up on the first refund…
        (1, 2, 1, 1, 0),  # …so the second returns nothing: still 1 in all
        (0, 100, 0, 100, 0),
    ],
)
def test_known_fee_refunds(fee: int, amount: int, before: int, refund: int, share: int) -> None:
    assert fee_refund(fee, amount, before, refund) == share


@pytest.mark.parametrize(
    ("fee", "amount", "before", "refund"),
    [
        (38, 10_000, 0, 0),  # nothing to refund
        (38, 10_000, 0, -1),
        (38, 10_000, 0, 10_001),  # more than paid
        (38, 10_000, 9_000, 1_001),  # more than is left
        (38, 10_000, -1, 10),
        (10_001, 10_000, 0, 10),  # a fee larger than the payment
        (-1, 10_000, 0, 10),
    ],
)
def test_refunds_outside_the_payment_are_refused(fee: int, amount: int, before: int, refund: int) -> None:
    with pytest.raises(ValueError):
        fee_refund(fee, amount, before, refund)

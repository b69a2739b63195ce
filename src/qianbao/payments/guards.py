"""Checks every outgoing payment makes, whoever it pays (a person, a merchant): the payer's account is
not frozen, the single-payment limit and today's allowance (read-only, before step-up; the unit of work
re-checks atomically with `reserve_outflow`), and how a ledger chain's results become one answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from qianbao.errors import IdempotencyKeyReused, LimitExceeded, Locked, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import check_single, limit_status
from qianbao.identity.users import credential_row
from qianbao.ledger.model import ResultCode, TransferResult
from qianbao.money import Money, format_money
from qianbao.payments.errors import LEDGER_DECLINES, decline_error, money_json


class AlreadyApplied(Exception):  # noqa: N818 - control flow inside a use case
    """The ledger already holds this transfer id: an earlier attempt with the same key committed."""


class Declined(Exception):  # noqa: N818 - control flow inside a use case
    """A limit or the ledger declined the payment inside the unit of work (which then rolls back)."""

    def __init__(self, error: QianbaoError) -> None:
        super().__init__(error.code)
        self.error = error


def ensure_can_pay(conn: Connection, user_id: str) -> None:
    if str(credential_row(conn, user_id).status) != "active":
        raise Locked("account_frozen", "the account is frozen: payments are not possible")


def check_hard_limits(
    conn: Connection, ctx: IdentityContext, user_id: str, amount: int, currency_code: str, now: int
) -> None:
    """Single-payment limit and today's remaining allowance, read-only (one statement)."""
    status = limit_status(conn, ctx.settings, user_id, currency_code, now)
    tier = status.tier
    check_single(status.limits, tier, amount, currency_code)
    if status.remaining_today is not None and amount > status.remaining_today:
        daily = status.limits.daily_outflow or 0
        raise LimitExceeded(
            "limit_exceeded_daily",
            f"the daily outflow limit of tier {tier} is {format_money(Money(daily, currency_code))};"
            f" {format_money(Money(status.remaining_today, currency_code))} remains today",
            limit=money_json(daily, currency_code),
            remaining=money_json(status.remaining_today, currency_code),
            kyc_tier=tier,
            next_step="verify_identity" if tier > 1 else "try_tomorrow",
        )


def chain_outcome(results: Sequence[TransferResult], currency_code: str) -> None:
    """Raise for a ledger chain that did not apply: `AlreadyApplied` when its first transfer exists (a
    replay), `Declined` with the code of the transfer that failed (not `linked_event_failed`)."""
    first = results[0].code
    if first is ResultCode.EXISTS:
        raise AlreadyApplied
    if all(r.code is ResultCode.OK for r in results):
        return
    failing = next(
        (r.code for r in results if r.code not in (ResultCode.OK, ResultCode.LINKED_EVENT_FAILED)), first
    )
    if failing is ResultCode.EXISTS_WITH_DIFFERENT_FIELDS:
        raise IdempotencyKeyReused("this Idempotency-Key was used for a different payment")
    raise Declined(decline_error(LEDGER_DECLINES.get(failing, str(failing)), currency_code=currency_code))

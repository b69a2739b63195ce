"""Where every payment is submitted: one order to the pipeline, its outcome, its step-up challenge.

A single request is a batch of one, or joins whatever batch is forming (engine/pipeline.py).
"""

from __future__ import annotations

import anyio

from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Operation
from qianbao.payments.engine.orders import Answered, Done, NeedsStepUp, Order
from qianbao.payments.engine.pipeline import submit, submit_async


def submit_order(ctx: IdentityContext, order: Order) -> Done | Answered:
    """Pay (or replay) one order; raises its refusal. An order that needs fresh proof first gets its
    challenge here, in its own transaction (`401 step_up_required`): nothing was paid or bound."""
    outcome = submit(ctx, order)
    if isinstance(outcome, NeedsStepUp):
        challenge(ctx, order, outcome)
    assert not isinstance(outcome, NeedsStepUp)  # noqa: S101 - challenge() raises
    return outcome


async def submit_order_async(ctx: IdentityContext, order: Order) -> Done | Answered:
    """`submit_order` for an `async` route: the request holds no thread while its batch is written
    (the challenge, when one is needed, is written on a thread)."""
    outcome = await submit_async(ctx, order)
    if isinstance(outcome, NeedsStepUp):
        await anyio.to_thread.run_sync(challenge, ctx, order, outcome)
    assert not isinstance(outcome, NeedsStepUp)  # noqa: S101 - challenge() raises
    return outcome


def challenge(ctx: IdentityContext, order: Order, needed: NeedsStepUp) -> None:
    """Write the challenge the order must prove and raise `step_up_required`."""
    stepup.require_step_up(
        ctx,
        order.principal,
        operation=Operation.PAYMENT,
        params=needed.params,
        reasons=needed.reasons,
        step_up_header=None,
    )
    raise AssertionError("require_step_up raises without a Step-Up header")  # pragma: no cover

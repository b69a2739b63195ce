"""Where every payment is submitted: one order to the pipeline, its outcome, its step-up challenge.

A single request is a batch of one, or joins whatever batch is forming (engine/pipeline.py).
"""

from __future__ import annotations

from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Operation
from qianbao.payments.engine.orders import Answered, Done, NeedsStepUp, Order
from qianbao.payments.engine.pipeline import submit


def submit_order(ctx: IdentityContext, order: Order) -> Done | Answered:
    """Pay (or replay) one order; raises its refusal. An order that needs fresh proof first gets its
    challenge here, in its own transaction (`401 step_up_required`): nothing was paid or bound."""
    outcome = submit(ctx, order)
    if isinstance(outcome, NeedsStepUp):
        stepup.require_step_up(
            ctx,
            order.principal,
            operation=Operation.PAYMENT,
            params=outcome.params,
            reasons=outcome.reasons,
            step_up_header=None,
        )
        raise AssertionError("require_step_up raises without a Step-Up header")  # pragma: no cover
    return outcome

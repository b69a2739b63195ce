"""The rules every change of a user's second factors follows, shared by TOTP (`identity/totp_enrolment.py`)
and passkeys (`identity/passkey_enrolment.py`).

Enrolling the first factor needs no step-up (it only makes the account stronger, and the user is told by
SMS); replacing or removing a factor, a new set of recovery codes, and adding a factor next to an existing
one are security changes (`Operation.CHANGE_SECOND_FACTOR`), each challenge bound to its exact action.
Every change is audited and notified by SMS.

SQLite rule: step-up decisions and checks that count (TOTP) happen before the operation's unit of work,
which then consumes the step-up pass and writes everything in one transaction.

The helpers live here, apart from either factor, so that both apply the same rules: the same step-up
binding, the same audit actor, the same SMS wording, and the same re-check inside the unit of work when a
first factor is enrolled without step-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from qianbao import invalid
from qianbao.errors import Conflict
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Operation, Principal, RequestInfo, StepUpFacts
from qianbao.identity.users import credential_row, has_passkeys
from qianbao.security import audit
from qianbao.security.fields import context

PHONE = context("users", "phone_cipher")


def user_id_of(principal: Principal) -> str:
    if principal.user_id is None:
        raise invalid.needs_user()
    return principal.user_id


def actor_of(principal: Principal, info: RequestInfo) -> audit.Actor:
    return audit.Actor(
        "user", principal.user_id, ip=info.ip, device_id=principal.device_id, session_id=principal.session_id
    )


def step_up_for(
    ctx: IdentityContext, principal: Principal, action: Mapping[str, str], header: str | None
) -> stepup.StepUpPass | None:
    """Step-up for a second-factor change, bound to this exact action (a proof for one change cannot be
    spent on another)."""
    facts = StepUpFacts(Operation.CHANGE_SECOND_FACTOR, device_trusted=principal.device_trusted)
    return stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.CHANGE_SECOND_FACTOR,
        params=dict(action),
        reasons=ctx.step_up_policy.reasons(facts),
        step_up_header=header,
    )


def first_enrolment_step_up(
    ctx: IdentityContext, principal: Principal, action: Mapping[str, str], header: str | None
) -> stepup.StepUpPass | None:
    """Adding the first second factor needs no proof from a known device (there is nothing stronger than
    the session to prove with), but it does from a new one: otherwise a stolen password alone would let
    someone enrol their own factor and lock the owner out."""
    if principal.device_trusted:
        return None
    return stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.CHANGE_SECOND_FACTOR,
        params=dict(action),
        reasons=["new_device"],
        step_up_header=header,
    )


def notify(ctx: IdentityContext, conn: Connection, row: Any, template: str, zh: str, en: str) -> None:
    ctx.notifier.send(
        conn,
        to=ctx.keys.decrypt(row.phone_cipher, context=PHONE),
        template=template,
        user_id=row.id,
        text=f"【钱包 qianbao】{zh}如非本人操作，请立即联系客服。 {en} If this wasn't you, contact support.",
    )


def check_still_no_second_factor(conn: Connection, user_id: str) -> None:
    """Inside the unit of work of a change allowed without step-up because the account had no second
    factor: lock the user's row and make sure that still holds (a concurrent enrolment must not let two
    factors in without step-up)."""
    row = credential_row(conn, user_id, lock=True)
    if row.totp_enabled_at is not None or has_passkeys(conn, user_id):
        raise Conflict("a second factor was added meanwhile: try again", reason="second_factor_added")

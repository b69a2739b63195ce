"""The 6-digit payment PIN: argon2id, a policy against guessable PINs, and lockout.

`pin_max_failures` (5) wrong PINs in a row lock the PIN for `pin_lock_s` (30 minutes); each further lock
lasts twice as long as the one before, and a correct PIN resets the count of wrong ones (not the
escalation, which only an operator can reset). Every failure and lock is audited, and a lock is notified.
Only a PIN of the right shape (six digits) is checked and can count: anything else is a typing slip,
refused as such (`validation_error`, `six_digits`) before the lock is looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update

from qianbao import invalid
from qianbao.clock import rfc3339
from qianbao.errors import Conflict, Locked
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.credentials import PIN_LENGTH, pin_problems
from qianbao.identity.errors import weak_pin
from qianbao.identity.model import Operation, Principal, RequestInfo, StepUpFacts
from qianbao.identity.tables import users
from qianbao.identity.users import credential_row
from qianbao.security import audit
from qianbao.security.fields import context

MAX_LOCK_DOUBLINGS = 6  # 30 min × 2^6 = 32 hours at most


def lock_seconds(base_s: int, lockouts_before: int) -> int:
    return int(base_s * 2 ** min(lockouts_before, MAX_LOCK_DOUBLINGS))


@dataclass(frozen=True, slots=True)
class PinCheck:
    """The outcome of checking a PIN: right or not, how many more wrong PINs the lock allows, and when this
    wrong PIN locked it, until when (epoch microseconds)."""

    correct: bool
    attempts_left: int
    locked_until: int | None = None


def check_pin_format(pin: object, field: str = "pin") -> str:
    """`pin` if it is six ASCII digits; else bad input (`six_digits`) that counts toward nothing."""
    if not isinstance(pin, str) or len(pin) != PIN_LENGTH or not (pin.isascii() and pin.isdigit()):
        raise invalid.six_digits(field)
    return pin


def verify_pin(ctx: IdentityContext, user_id: str, pin: str) -> PinCheck:
    """Check the PIN. Raises Locked while locked; counts failures in its own transaction. A PIN that is not
    six digits is refused first (`check_pin_format`) and counts toward nothing."""
    check_pin_format(pin)
    now = ctx.now()
    with ctx.db.write() as conn:
        row = credential_row(conn, user_id, lock=True)
        if row.pin_hash is None:
            raise invalid.because(
                "pin_not_set", "no payment PIN is set: set one first", field="pin", reason="pin_not_set"
            )
        if row.pin_locked_until is not None and row.pin_locked_until > now:
            retry = max(1, (row.pin_locked_until - now + 999_999) // 1_000_000)
            raise Locked(
                "pin_locked",
                "the payment PIN is locked after too many wrong attempts",
                retry_after=retry,
                locked_until=rfc3339(row.pin_locked_until),
                locked_until_us=row.pin_locked_until,  # kept for clients that read it (issue 3)
            )
        if ctx.hasher.verify(row.pin_hash, pin):
            if row.pin_failures:
                conn.execute(update(users).where(users.c.id == user_id).values(pin_failures=0))
            return PinCheck(correct=True, attempts_left=ctx.settings.pin_max_failures)
        failures = row.pin_failures + 1
        actor = audit.Actor("user", user_id)
        if failures >= ctx.settings.pin_max_failures:
            seconds = lock_seconds(ctx.settings.pin_lock_s, row.pin_lockouts)
            locked_until = now + seconds * 1_000_000
            conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(pin_failures=0, pin_lockouts=row.pin_lockouts + 1, pin_locked_until=locked_until)
            )
            audit.record(
                conn,
                now,
                "pin.locked",
                actor,
                subject_user_id=user_id,
                outcome="failure",
                details={"lock_seconds": seconds, "lockouts": row.pin_lockouts + 1},
            )
            phone = ctx.keys.decrypt(row.phone_cipher, context=context("users", "phone_cipher"))
            ctx.notifier.send(
                conn,
                to=phone,
                template="security.pin_locked",
                user_id=user_id,
                text=f"【钱包 qianbao】支付密码连续输错，已锁定 {seconds // 60} 分钟。"
                f" Your payment PIN is locked for {seconds // 60} minutes after too many wrong attempts.",
            )
            return PinCheck(correct=False, attempts_left=0, locked_until=locked_until)
        conn.execute(update(users).where(users.c.id == user_id).values(pin_failures=failures))
        audit.record(
            conn,
            now,
            "pin.verify",
            actor,
            subject_user_id=user_id,
            outcome="failure",
            details={"failures": failures},
        )
    return PinCheck(correct=False, attempts_left=ctx.settings.pin_max_failures - failures)


def set_pin(
    ctx: IdentityContext, principal: Principal, pin: str, info: RequestInfo, step_up_header: str | None
) -> None:
    """Set the first PIN, or replace it after a step-up (a security-setting change)."""
    assert principal.user_id is not None  # noqa: S101 - routes only call this for users
    if not isinstance(pin, str):
        raise invalid.six_digits("pin")
    with ctx.db.read() as conn:
        row = credential_row(conn, principal.user_id)
    # A PIN the policy refuses is refused before any challenge is asked for (bad input changes nothing).
    phone = ctx.keys.decrypt(row.phone_cipher, context=context("users", "phone_cipher"))
    problems = pin_problems(pin, phone=phone)
    if problems:
        raise weak_pin(problems)
    if row.pin_hash is not None:
        reasons = ctx.step_up_policy.reasons(
            StepUpFacts(Operation.CHANGE_PIN, device_trusted=principal.device_trusted)
        )
    else:
        # The first PIN needs no proof from a known device, but does from a new one (a stolen password
        # alone must not be enough to set a PIN and then pass step-ups with it).
        reasons = [] if principal.device_trusted else ["new_device"]
    # Bound to the new PIN (keyed digest): a proof for one PIN change cannot install another PIN.
    step_up = stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.CHANGE_PIN,
        params={"pin": ctx.keys.digest("pin_change", pin)},
        reasons=reasons,
        step_up_header=step_up_header,
    )
    pin_hash = ctx.hasher.hash(pin)
    now = ctx.now()
    with ctx.db.write() as conn:
        stepup.consume(ctx, conn, step_up)
        query = update(users).where(users.c.id == principal.user_id)
        if row.pin_hash is None:  # setting the first PIN: only while there is none (else it is a change)
            query = query.where(users.c.pin_hash.is_(None))
        done = conn.execute(
            query.values(pin_hash=pin_hash, pin_failures=0, pin_locked_until=None, updated_at=now)
        )
        if done.rowcount != 1:
            raise Conflict("a PIN was set meanwhile: changing it needs confirmation, try again")
        actor = audit.Actor(
            "user",
            principal.user_id,
            ip=info.ip,
            device_id=principal.device_id,
            session_id=principal.session_id,
        )
        audit.record(
            conn, now, "pin.changed" if row.pin_hash else "pin.set", actor, subject_user_id=principal.user_id
        )

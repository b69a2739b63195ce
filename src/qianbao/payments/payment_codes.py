"""Payment codes (付款码): enabling a device, the password-free allowance, and redeeming a code.

Enabling payment codes on a device is a security change (step-up): the answer carries the device's secret
once, so the app can compute codes offline (`payment_code_model`). One device shows codes for one wallet;
enabling again on the same device replaces its secret. A thin client (the web app) may ask the server for
the current code of its own device instead (`current_code`). Wrong codes are counted per merchant and
per device (`payment_code_guard`); a device blocked by them shows no codes, and no code naming it is
tried, until enabled again.

The no-PIN (免密) allowance: payments by code up to `no_pin_per_payment` each and `no_pin_daily` a day
need no confirmation. A user may lower both (to zero: every code payment asks for confirmation) at any
time; raising them again, up to the operator's defaults, is a security change.
"""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from typing import Any

import barcode  # type: ignore[import-untyped]
import pyotp
from barcode.writer import SVGWriter  # type: ignore[import-untyped]
from sqlalchemy import Connection, and_, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from qianbao import invalid
from qianbao.errors import NotFound, QianbaoError
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import local_day
from qianbao.identity.model import Operation, Principal, StepUpFacts
from qianbao.ids import new_id
from qianbao.payments import emvco, payment_code_guard, payment_code_model
from qianbao.payments.code_tables import (
    no_pin_usage,
    payment_code_devices,
    payment_code_settings,
    payment_code_uses,
)
from qianbao.payments.engine.rules import no_pin_allowance
from qianbao.payments.inputs import require_user_id
from qianbao.security.fields import context
from qianbao.store.errors import DATABASE_ERRORS
from qianbao.wallets.service import own_wallet_row, plausible_id

SECRET_CONTEXT = context("payment_code_devices", "secret_cipher")
_NUMBER_ATTEMPTS = 5


class PaymentCodeInvalid(QianbaoError):
    code = "payment_code_invalid"


@dataclass(frozen=True, slots=True)
class CodeDevice:
    id: str
    user_id: str
    device_id: str
    wallet_id: str
    number: str
    status: str
    created_at: int
    blocked_at: int | None = None


@dataclass(frozen=True, slots=True)
class Allowance:
    per_payment: int
    daily: int
    used_today: int

    def covers(self, amount: int) -> bool:
        return no_pin_allowance(self.per_payment, self.daily, self.used_today, amount)


def _device(row: Any) -> CodeDevice:
    m = row._mapping
    blocked_at = None if m["blocked_at"] is None else int(m["blocked_at"])
    return CodeDevice(
        m["id"],
        m["user_id"],
        m["device_id"],
        m["wallet_id"],
        m["number"],
        m["status"],
        int(m["created_at"]),
        blocked_at,
    )


# -- devices ---------------------------------------------------------------------------------------


def _setup_step_up(
    ctx: IdentityContext, principal: Principal, params: dict[str, Any], header: str | None
) -> stepup.StepUpPass | None:
    facts = StepUpFacts(Operation.PAYMENT_CODE_SETUP, device_trusted=principal.device_trusted)
    return stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.PAYMENT_CODE_SETUP,
        params=params,
        reasons=ctx.step_up_policy.reasons(facts),
        step_up_header=header,
    )


def enable_device(
    ctx: IdentityContext, principal: Principal, wallet_id: str, *, step_up: str | None
) -> tuple[CodeDevice, str]:
    """Enable payment codes on the caller's device for one of their wallets: the device and its secret."""
    user_id = require_user_id(principal)
    if principal.device_id is None:
        raise invalid.because(
            "device_needed",
            "sign in with a device_id to show payment codes on this device",
            field="device_id",
        )
    with ctx.db.read() as conn:
        wallet = own_wallet_row(conn, user_id, wallet_id)
    proof = _setup_step_up(
        ctx, principal, {"wallet_id": wallet.id, "device_id": principal.device_id}, step_up
    )
    secret = pyotp.random_base32()
    for attempt in range(_NUMBER_ATTEMPTS):
        number = f"{secrets.randbelow(10**7):07d}"
        device = CodeDevice(
            new_id("pcd"), user_id, principal.device_id, wallet.id, number, "active", ctx.now()
        )
        try:
            with ctx.uow() as uow:
                stepup.consume(ctx, uow.conn, proof)
                _revoke_where(uow.conn, ctx.now(), user_id=user_id, device_id=principal.device_id)
                uow.conn.execute(
                    insert(payment_code_devices).values(
                        id=device.id,
                        user_id=user_id,
                        device_id=device.device_id,
                        wallet_id=device.wallet_id,
                        number=number,
                        secret_cipher=ctx.keys.encrypt(secret, context=SECRET_CONTEXT),
                        status="active",
                        created_at=device.created_at,
                    )
                )
                uow.commit()
            return device, secret
        except DATABASE_ERRORS:  # the random device number is taken: draw another
            if attempt + 1 == _NUMBER_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _revoke_where(conn: Connection, now: int, **match: str) -> int:
    conditions = [payment_code_devices.c.status == "active"]
    conditions += [payment_code_devices.c[name] == value for name, value in match.items()]
    return conn.execute(
        update(payment_code_devices).where(and_(*conditions)).values(status="revoked", revoked_at=now)
    ).rowcount


def list_devices(ctx: IdentityContext, principal: Principal) -> list[CodeDevice]:
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(payment_code_devices)
            .where(payment_code_devices.c.user_id == user_id, payment_code_devices.c.status == "active")
            .order_by(payment_code_devices.c.created_at)
        )
        return [_device(r) for r in rows]


def revoke_device(ctx: IdentityContext, principal: Principal, device_reg_id: str) -> None:
    """Stop a device showing payment codes (a lost phone): its codes stop working at once."""
    user_id = require_user_id(principal)
    if not plausible_id(device_reg_id):
        raise NotFound("no such payment-code device")
    with ctx.db.write() as conn:
        if _revoke_where(conn, ctx.now(), id=device_reg_id, user_id=user_id) != 1:
            raise NotFound("no such payment-code device")


def _own_device(conn: Connection, principal: Principal) -> tuple[CodeDevice, str] | None:
    row = conn.execute(
        select(payment_code_devices).where(
            payment_code_devices.c.user_id == principal.user_id,
            payment_code_devices.c.device_id == principal.device_id,
            payment_code_devices.c.status == "active",
        )
    ).first()
    return None if row is None else (_device(row), str(row.secret_cipher))


def current_code(ctx: IdentityContext, principal: Principal) -> dict[str, Any]:
    """The code the caller's device shows now (the next unused sequence of this minute), as text, QR
    and barcode, for clients that do not compute codes themselves."""
    require_user_id(principal)
    now = ctx.now()
    with ctx.db.read() as conn:
        found = None if principal.device_id is None else _own_device(conn, principal)
        if found is None:
            raise NotFound("payment codes are not enabled on this device")
        device, cipher = found
        if device.blocked_at is not None:
            raise _blocked()
        step = payment_code_model.step_at(now / 1_000_000)
        used = set(
            conn.execute(
                select(payment_code_uses.c.seq).where(
                    payment_code_uses.c.device_id == device.id, payment_code_uses.c.step == step
                )
            ).scalars()
        )
    free = [s for s in range(payment_code_model.SEQUENCES) if s not in used]
    if not free:
        raise PaymentCodeInvalid(
            "all of this minute's codes are used: wait for the next minute", next_step="retry"
        )
    secret = ctx.keys.decrypt(cipher, context=SECRET_CONTEXT)
    code = payment_code_model.payment_code(secret, device.number, now / 1_000_000, free[0])
    refresh_at = (step + 1) * payment_code_model.STEP_SECONDS * 1_000_000
    return {
        "code": code,
        "wallet_id": device.wallet_id,
        "refresh_at": refresh_at,
        "qr_svg": emvco.qr_svg(code),
        "barcode_svg": barcode_svg(code),
    }


def barcode_svg(code: str) -> str:
    out = io.BytesIO()
    barcode.get("code128", code, writer=SVGWriter()).write(out, options={"write_text": True})
    return out.getvalue().decode("utf-8")


def redeem(ctx: IdentityContext, code: object, merchant_id: str, charge_ref: str) -> CodeDevice:
    """The device (so the payer and wallet) a presented code belongs to, spending the code for the charge
    `charge_ref` (its ledger transfer id: a retry of that same charge may redeem it again).

    One transaction decides and records everything (`payment_code_guard`): a merchant over its limit of
    failures is refused (429) before the code is even tried; a code naming a device that reached its
    limit of wrong codes is not tried either. Otherwise a right code is spent, and anything else is
    `payment_code_invalid` and counts against the merchant; wrong and stale codes (the one-time code does
    not match: a guess), and any code for a blocked device or for a number no device has, also against
    the number they name, whichever merchant presents them."""
    parts = payment_code_model.split(code) if isinstance(code, str) else None
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        # The merchant's lock, then the device's (always in this order), held until the outcome is written:
        # concurrent codes are decided one after another, each seeing the failures of those before it.
        payment_code_guard.lock_merchant(conn, merchant_id)
        payment_code_guard.refuse_merchant_over_limit(conn, merchant_id, now)
        device = None if parts is None else payment_code_guard.lock_device(conn, parts.number, now)
        guess = None if parts is None else parts.number  # the number a failure counts against
        verdict = payment_code_model.guess_verdict(None if device is None else device.guesses)
        if parts is not None and device is not None and verdict is payment_code_model.GuessVerdict.TEST:
            secret = ctx.keys.decrypt(str(device.row.secret_cipher), context=SECRET_CONTEXT)
            step = payment_code_model.matching_step(secret, parts, now / 1_000_000)
            if step is not None:
                if _spend(conn, str(device.row.id), step, parts.seq, charge_ref, now):
                    uow.commit()
                    return _device(device.row)
                guess = None  # used by another charge: it matched, so a double scan, not a guess
        payment_code_guard.record_failure(uow, merchant_id, guess, device, now)
        uow.commit()
    raise PaymentCodeInvalid(
        "this payment code is not valid: ask the customer to refresh it", field="payment_code"
    )


def _blocked() -> payment_code_guard.PaymentCodeBlocked:
    return payment_code_guard.PaymentCodeBlocked(
        "payment codes on this device were blocked after repeated wrong codes: enable them again"
    )


def _spend(conn: Connection, device_id: str, step: int, seq: int, charge_ref: str, now: int) -> bool:
    """Record the code as used by this charge; False if another charge used it (each code pays once).
    The caller holds the device's row lock, so no other charge spends a code of this device meanwhile."""
    used_by = conn.execute(
        select(payment_code_uses.c.charge_ref).where(
            payment_code_uses.c.device_id == device_id,
            payment_code_uses.c.step == step,
            payment_code_uses.c.seq == seq,
        )
    ).scalar()
    if used_by is None:
        conn.execute(
            insert(payment_code_uses).values(
                device_id=device_id, step=step, seq=seq, used_at=now, charge_ref=charge_ref
            )
        )
        return True
    return str(used_by) == charge_ref


# -- the password-free allowance -------------------------------------------------------------------


def allowance(conn: Connection, ctx: IdentityContext, user_id: str, now_us: int) -> Allowance:
    row = conn.execute(
        select(payment_code_settings).where(payment_code_settings.c.user_id == user_id)
    ).first()
    per_payment = ctx.settings.no_pin_per_payment if row is None else int(row.no_pin_per_payment)
    daily = ctx.settings.no_pin_daily if row is None else int(row.no_pin_daily)
    used = conn.execute(
        select(no_pin_usage.c.amount).where(
            no_pin_usage.c.user_id == user_id, no_pin_usage.c.day == local_day(now_us)
        )
    ).scalar()
    return Allowance(per_payment, daily, int(used or 0))


def use_allowance(conn: Connection, user_id: str, amount: int, daily: int, now_us: int) -> bool:
    """Count a password-free payment against today's allowance (conditional UPDATE, race-safe)."""
    day = local_day(now_us)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(no_pin_usage).values(user_id=user_id, day=day, amount=0).on_conflict_do_nothing()
    )
    done = conn.execute(
        update(no_pin_usage)
        .where(
            no_pin_usage.c.user_id == user_id,
            no_pin_usage.c.day == day,
            no_pin_usage.c.amount + amount <= daily,
        )
        .values(amount=no_pin_usage.c.amount + amount)
    )
    return done.rowcount == 1


def get_allowance(ctx: IdentityContext, principal: Principal) -> Allowance:
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        return allowance(conn, ctx, user_id, ctx.now())


def set_allowance(
    ctx: IdentityContext, principal: Principal, *, per_payment: int, daily: int, step_up: str | None
) -> Allowance:
    """Lower freely; raising (up to the operator's defaults) needs step-up."""
    user_id = require_user_id(principal)
    settings = ctx.settings
    for name, value, ceiling in (
        ("no_pin_per_payment", per_payment, settings.no_pin_per_payment),
        ("no_pin_daily", daily, settings.no_pin_daily),
    ):
        if type(value) is not int or not 0 <= value <= ceiling:
            raise invalid.amount_range(name, 0, ceiling)
    current = get_allowance(ctx, principal)
    proof = None
    if per_payment > current.per_payment or daily > current.daily:
        proof = _setup_step_up(
            ctx, principal, {"no_pin_per_payment": per_payment, "no_pin_daily": daily}, step_up
        )
    dialect_values = {"no_pin_per_payment": per_payment, "no_pin_daily": daily, "updated_at": ctx.now()}
    with ctx.uow() as uow:
        stepup.consume(ctx, uow.conn, proof)
        dialect = postgresql if uow.conn.dialect.name == "postgresql" else sqlite
        uow.conn.execute(
            dialect.insert(payment_code_settings)
            .values(user_id=user_id, **dialect_values)
            .on_conflict_do_update(index_elements=["user_id"], set_=dialect_values)
        )
        uow.commit()
    return get_allowance(ctx, principal)

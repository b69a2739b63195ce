"""One-time SMS codes and sign-up.

A code is six digits, lives `otp_ttl_s` (5 minutes), is single-use, allows five guesses, and is stored
only as a keyed hash. Sending is rate-limited per number and per IP, guessing per number, each for its
purpose alone (`identity/sms_quota.py`). Asking for a
sign-up code for a number that already has an account sends that number a notice instead of a code, so
the endpoint does not tell strangers who is registered.
"""

from __future__ import annotations

import hmac
import secrets
import unicodedata
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from qianbao import invalid
from qianbao.identity.context import IdentityContext
from qianbao.identity.credentials import password_problems
from qianbao.identity.errors import PhoneTaken, VerificationFailed, weak_password
from qianbao.identity.model import RequestInfo
from qianbao.identity.phones import national_digits, normalise_phone
from qianbao.identity.sms_quota import count_sms
from qianbao.identity.tables import devices, users, verifications
from qianbao.identity.users import PHONE, find_user_id_by_phone
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context
from qianbao.security.masking import mask_phone
from qianbao.store.errors import DATABASE_ERRORS
from qianbao.store.outbox import OutboxEvent
from qianbao.store.unit_of_work import UnitOfWork
from qianbao.wallets.accounts import open_wallet
from qianbao.wallets.names import MAIN_WALLET_NAME

PURPOSES = ("signup", "password_reset", "phone_change_old", "phone_change_new", "recovery_new_phone")
MAX_CODE_ATTEMPTS = 5
MAX_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class NewUser:
    id: str
    phone_masked: str
    kyc_tier: int
    main_wallet_id: str


def _code_hash(ctx: IdentityContext, verification_id: str, code: str) -> str:
    return ctx.keys.digest(f"otp:{verification_id}", code)


def send_code(
    ctx: IdentityContext,
    conn: Connection,
    phone: str,
    purpose: str,
    *,
    user_id: str | None = None,
    template_text: str = "验证码 {code}，{minutes} 分钟内有效，请勿告诉他人。Your qianbao code is {code}.",
) -> str:
    """Create a code for `phone` (E.164) and send it, in the caller's transaction."""
    code = f"{secrets.randbelow(1_000_000):06d}"
    verification_id = new_id("ver")
    now = ctx.now()
    conn.execute(
        insert(verifications).values(
            id=verification_id,
            purpose=purpose,
            phone_index=ctx.keys.digest(PHONE, phone),
            user_id=user_id,
            code_hash=_code_hash(ctx, verification_id, code),
            created_at=now,
            expires_at=now + ctx.settings.otp_ttl_s * 1_000_000,
        )
    )
    text = "【钱包 qianbao】" + template_text.format(code=code, minutes=ctx.settings.otp_ttl_s // 60)
    ctx.notifier.send(conn, to=phone, template=f"otp.{purpose}", text=text, code=code, user_id=user_id)
    return verification_id


def request_verification(
    ctx: IdentityContext, phone_text: str, info: RequestInfo, purpose: str = "signup"
) -> None:
    """`POST /v1/verifications`: send a code (or, for a registered number, a notice) by SMS."""
    if purpose not in ("signup", "password_reset"):
        raise invalid.one_of("purpose", ["signup", "password_reset"])
    phone = normalise_phone(phone_text)
    # Before the look-up, whether the number is registered or not: the answers must not tell them apart.
    count_sms(ctx.limiter, purpose, phone, info.ip)
    with ctx.uow() as uow:
        existing = find_user_id_by_phone(uow.conn, ctx.keys, phone)
        if purpose == "signup" and existing is not None:
            ctx.notifier.send(
                uow.conn,
                to=phone,
                template="signup.already_registered",
                text="【钱包 qianbao】该号码已注册，请直接登录；如非本人操作请忽略。"
                " This number already has a qianbao account: sign in instead.",
                user_id=existing,
            )
        elif purpose == "password_reset" and existing is None:
            pass  # say nothing to a number without an account, and send nothing
        else:
            send_code(ctx, uow.conn, phone, purpose, user_id=existing)
        uow.commit()


def check_code(ctx: IdentityContext, phone: str, purpose: str, code: str) -> str:
    """Check a code against the newest one sent to `phone` for `purpose`; returns its verification id.

    Runs in its own transaction so that a wrong guess is counted even though the request fails; the
    caller then spends the code with `use_code` inside its unit of work (single use under races)."""
    if not isinstance(code, str) or len(code) != 6 or not code.isascii() or not code.isdigit():
        raise VerificationFailed("the code is six digits", field="code")
    # Guesses count per purpose too: wrong sign-up codes for someone's number must not lock their reset.
    ctx.limiter.hit("otp_verify", purpose, phone)
    now = ctx.now()
    with ctx.db.write() as conn:
        row = conn.execute(
            select(verifications)
            .where(
                verifications.c.phone_index == ctx.keys.digest(PHONE, phone),
                verifications.c.purpose == purpose,
            )
            .order_by(verifications.c.created_at.desc(), verifications.c.id.desc())
            .limit(1)
        ).first()
        if row is None or row.consumed_at is not None or row.expires_at <= now:
            raise VerificationFailed("no valid code: ask for a new one", field="code")
        if row.attempts >= MAX_CODE_ATTEMPTS:
            raise VerificationFailed("too many wrong codes: ask for a new one", field="code")
        if hmac.compare_digest(row.code_hash, _code_hash(ctx, row.id, code)):
            return str(row.id)
        conn.execute(
            update(verifications)
            .where(verifications.c.id == row.id)
            .values(attempts=verifications.c.attempts + 1)
        )
    raise VerificationFailed("the code is wrong", field="code")


def use_code(conn: Connection, verification_id: str, now_us: int) -> None:
    """Spend a checked code in the caller's transaction; a code is good for one request only."""
    used = conn.execute(
        update(verifications)
        .where(verifications.c.id == verification_id, verifications.c.consumed_at.is_(None))
        .values(consumed_at=now_us)
    )
    if used.rowcount != 1:
        raise VerificationFailed("the code was already used", field="code")


def clean_name(name: str) -> str:
    if not isinstance(name, str):
        raise invalid.because("not_text", "name must be text", field="name", params={"field": "full_name"})
    cleaned = unicodedata.normalize("NFC", " ".join(name.split()))
    if not cleaned or len(cleaned) > MAX_NAME_LENGTH:
        raise invalid.text_length("name", MAX_NAME_LENGTH, shown="full_name")
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise invalid.control_characters("name", shown="full_name")
    return cleaned


def check_password(password: str, *, phone: str, name: str) -> None:
    if not isinstance(password, str):
        raise invalid.not_text("password")
    problems = password_problems(password, personal=(name, national_digits(phone)))
    if problems:
        raise weak_password(problems)


def register_user(
    ctx: IdentityContext,
    *,
    phone_text: str,
    code: str,
    password: str,
    name: str,
    device_key: str | None,
    info: RequestInfo,
) -> NewUser:
    """`POST /v1/users`: create the user (tier 4), their main CNY wallet and, if given, a known device."""
    phone = normalise_phone(phone_text)
    clean = clean_name(name)
    check_password(password, phone=phone, name=clean)
    password_hash = ctx.hasher.hash(password)
    # The code first: a registered number never receives a sign-up code, so this answers
    # `verification_failed` for it and the endpoint does not tell strangers who is registered.
    verification_id = check_code(ctx, phone, "signup", code)
    with ctx.db.read() as conn:
        if find_user_id_by_phone(conn, ctx.keys, phone) is not None:
            raise PhoneTaken("this phone number already has an account: sign in instead")
    try:
        with ctx.uow() as uow:
            use_code(uow.conn, verification_id, ctx.now())
            user = create_user_in(
                ctx,
                uow,
                phone=phone,
                name=clean,
                password_hash=password_hash,
                device_key=device_key,
                info=info,
            )
            uow.commit()
    except DATABASE_ERRORS as exc:
        # Two sign-ups for one number at once: the unique phone index lets one win.
        with ctx.db.read() as conn:
            if find_user_id_by_phone(conn, ctx.keys, phone) is not None:
                raise PhoneTaken("this phone number already has an account: sign in instead") from exc
        raise
    return user


def create_user_in(
    ctx: IdentityContext,
    uow: UnitOfWork,
    *,
    phone: str,
    name: str,
    password_hash: str,
    device_key: str | None,
    info: RequestInfo,
) -> NewUser:
    """Insert a tier-4 user with their main wallet (and known device) in the caller's unit of work."""
    conn = uow.conn
    tier = ctx.settings.kyc_tiers[4]
    now = ctx.now()
    user_id = new_id("usr")
    conn.execute(
        insert(users).values(
            id=user_id,
            phone_cipher=ctx.keys.encrypt(phone, context=context("users", "phone_cipher")),
            phone_index=ctx.keys.digest(PHONE, phone),
            name_cipher=ctx.keys.encrypt(name, context=context("users", "name_cipher")),
            password_hash=password_hash,
            kyc_tier=4,
            status="active",
            created_at=now,
            updated_at=now,
        )
    )
    wallet_id = open_wallet(
        conn,
        ctx.ledger,
        user_id=user_id,
        kind="main",
        name=MAIN_WALLET_NAME,
        purpose="main",
        currency="CNY",
        balance_cap=tier.balance_cap,
        now_us=now,
    )
    device_id = None
    if device_key:
        device_id = new_id("dev")
        conn.execute(
            insert(devices).values(
                id=device_id,
                user_id=user_id,
                device_key=device_key,
                label=info.user_agent,
                first_seen_at=now,
                last_seen_at=now,
                trusted_at=now,
            )
        )
    actor = audit.Actor("user", user_id, ip=info.ip, device_id=device_id)
    audit.record(
        conn,
        now,
        "user.registered",
        actor,
        subject_user_id=user_id,
        details={"phone": mask_phone(phone), "kyc_tier": 4},
    )
    uow.emit(OutboxEvent("user.created", "user", user_id, {"user_id": user_id, "kyc_tier": 4}))
    return NewUser(id=user_id, phone_masked=mask_phone(phone), kyc_tier=4, main_wallet_id=wallet_id)

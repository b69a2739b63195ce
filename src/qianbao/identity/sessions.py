"""Sign-in, sessions and devices.

A session token is 256 random bits shown once; the database keeps its SHA-256. Sessions end at their
absolute expiry, after an idle period, or when revoked. Signing in from a device the user has not used
before notifies them by SMS, and that device is *untrusted* until a step-up succeeds on it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, insert, select, update

from qianbao import invalid
from qianbao.error_codes import user_text
from qianbao.errors import Forbidden, NotFound, RateLimited, Unauthenticated
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind, RequestInfo
from qianbao.identity.phones import normalise_phone
from qianbao.identity.tables import devices, sessions, users
from qianbao.identity.users import PHONE
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.masking import mask_phone

TOKEN_PREFIX = "qbs_"  # noqa: S105 - a public prefix, not a secret
# Refreshing `last_seen_at` on every request would turn reads into writes; once a minute is enough for
# an idle timeout measured in minutes.
TOUCH_INTERVAL_US = 60_000_000
MAX_DEVICE_KEY = 128


@dataclass(frozen=True, slots=True)
class IssuedSession:
    id: str
    token: str
    expires_at_us: int
    user_id: str
    csrf_token: str | None
    device_id: str | None
    new_device: bool


@dataclass(frozen=True, slots=True)
class SessionView:
    id: str
    device_id: str | None
    transport: str
    auth_method: str
    ip: str | None
    user_agent: str | None
    created_at: int
    last_seen_at: int
    expires_at: int
    current: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def clean_device_key(device_key: str | None) -> str | None:
    if device_key is None:
        return None
    if (
        not isinstance(device_key, str)
        or not 1 <= len(device_key) <= MAX_DEVICE_KEY
        or not device_key.isprintable()
    ):
        raise invalid.text_length("device_id", MAX_DEVICE_KEY, printable=True)
    return device_key


def find_or_add_device(
    conn: Connection, user_id: str, device_key: str, label: str | None, now: int
) -> tuple[str, bool]:
    """(device row id, trusted?) for this user's device, recording it on first sight."""
    row = conn.execute(
        select(devices.c.id, devices.c.trusted_at).where(
            devices.c.user_id == user_id, devices.c.device_key == device_key
        )
    ).first()
    if row is not None:
        conn.execute(update(devices).where(devices.c.id == row.id).values(last_seen_at=now))
        return str(row.id), row.trusted_at is not None
    device_id = new_id("dev")
    conn.execute(
        insert(devices).values(
            id=device_id,
            user_id=user_id,
            device_key=device_key,
            label=(label or "")[:128] or None,
            first_seen_at=now,
            last_seen_at=now,
            trusted_at=None,
        )
    )
    return device_id, False


def issue_session(
    ctx: IdentityContext,
    conn: Connection,
    *,
    user_id: str,
    phone: str,
    device_key: str | None,
    info: RequestInfo,
    auth_method: str,
    transport: str = "bearer",
) -> IssuedSession:
    """Create a session in the caller's transaction (sign-in succeeded)."""
    now = ctx.now()
    device_id: str | None = None
    new_device = False
    if device_key is not None:
        device_id, trusted = find_or_add_device(conn, user_id, device_key, info.user_agent, now)
        new_device = not trusted
    else:
        # No device id: treat it as an unknown device (step-up before anything sensitive).
        new_device = True
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24) if transport == "cookie" else None
    cookie = transport == "cookie"
    lifetime = ctx.settings.cookie_session_lifetime_s if cookie else ctx.settings.session_lifetime_s
    session_id = new_id("ses")
    expires = now + lifetime * 1_000_000
    conn.execute(
        insert(sessions).values(
            id=session_id,
            token_hash=token_hash(token),
            principal_kind=PrincipalKind.USER.value,
            principal_id=user_id,
            device_id=device_id,
            transport=transport,
            csrf_hash=None if csrf is None else token_hash(csrf),
            auth_method=auth_method,
            ip=info.ip,
            user_agent=(info.user_agent or "")[:256] or None,
            created_at=now,
            last_seen_at=now,
            expires_at=expires,
        )
    )
    actor = audit.Actor("user", user_id, ip=info.ip, device_id=device_id, session_id=session_id)
    audit.record(
        conn,
        now,
        "session.sign_in",
        actor,
        subject_user_id=user_id,
        details={"method": auth_method, "new_device": new_device, "transport": transport},
    )
    if new_device:  # also without a device id: leaving the header out must not silence the alert
        ctx.notifier.send(
            conn,
            to=phone,
            template="security.new_device",
            text="【钱包 qianbao】您的账户在新设备上登录。如非本人操作，请立即修改密码。"
            " Your qianbao account was signed in on a new device. If this wasn't you, change your password.",
            user_id=user_id,
        )
    return IssuedSession(session_id, token, expires, user_id, csrf, device_id, new_device)


def sign_in_with_password(
    ctx: IdentityContext,
    *,
    phone_text: str,
    password: str,
    device_key: str | None,
    info: RequestInfo,
    transport: str = "bearer",
    second_factor_ok: bool = False,
) -> tuple[str, str]:
    """Check a phone and password; returns (user id, E.164 phone). Failures are throttled and audited.

    `second_factor_ok` is for callers that already checked a second factor; the HTTP layer asks for it
    (a step-up challenge bound to this sign-in) when the user has one enrolled."""
    del transport, second_factor_ok
    phone = normalise_phone(phone_text)
    clean_device_key(device_key)
    if not isinstance(password, str) or not password:
        raise invalid.required("password")
    # Before spending a hash: a locked-out IP costs the attacker nothing to ask again. The account's
    # counter takes every attempt *before* the check (a success resets it), so a burst of concurrent
    # guesses cannot all slip past a limit that would only be counted after each failure.
    if info.ip and not ctx.limiter.check("password_ip", info.ip):
        ctx.limiter.hit("password_ip", info.ip)  # raises RateLimited with Retry-After
    ctx.limiter.hit("password_account", phone)
    with ctx.db.read() as conn:
        row = conn.execute(
            select(users.c.id, users.c.password_hash, users.c.status).where(
                users.c.phone_index == ctx.keys.digest(PHONE, phone)
            )
        ).first()
    ok = False
    if row is None:
        ctx.hasher.dummy_verify(password)
    else:
        ok = ctx.hasher.verify(row.password_hash, password)
    if not ok or row is None or row.status == "closed":
        with ctx.db.write() as conn:
            audit.record(
                conn,
                ctx.now(),
                "session.sign_in",
                audit.Actor("anonymous", ip=info.ip),
                subject_user_id=None if row is None else row.id,
                outcome="failure",
                details={"phone": mask_phone(phone), "reason": "bad_credentials"},
            )
        if info.ip:
            try:
                ctx.limiter.hit("password_ip", info.ip)
            except RateLimited:
                pass  # the failure below is the answer either way
        # Which of the two was wrong is not said: that would tell who has an account.
        raise Unauthenticated(
            "the phone number or password is wrong",
            user_text=user_text("unauthenticated", "bad_credentials"),
            next_step="check_input",
        )
    ctx.limiter.reset("password_account", phone)
    if ctx.hasher.needs_rehash(row.password_hash):
        with ctx.db.write() as conn:
            conn.execute(
                update(users).where(users.c.id == row.id).values(password_hash=ctx.hasher.hash(password))
            )
    return str(row.id), phone


_USER_KIND = PrincipalKind.USER.value
# Every authenticated request runs this: one statement for the session, its device's trust and its
# user's status, built once (building a statement costs about as much as running it).
_SESSION_BY_TOKEN = (
    select(sessions, devices.c.trusted_at.label("device_trusted_at"), users.c.status.label("user_status"))
    .select_from(
        sessions.outerjoin(devices, devices.c.id == sessions.c.device_id).outerjoin(
            users, and_(users.c.id == sessions.c.principal_id, sessions.c.principal_kind == _USER_KIND)
        )
    )
    .where(sessions.c.token_hash == bindparam("token_hash"))
)


def authenticate_token(ctx: IdentityContext, token: str) -> Principal:
    """The principal behind a session token, or Unauthenticated."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthenticated("the session token is not valid")
    now = ctx.now()
    with ctx.db.read() as conn:
        row = conn.execute(_SESSION_BY_TOKEN, {"token_hash": token_hash(token)}).first()
    trusted = row is not None and row.device_trusted_at is not None
    status = None if row is None else row.user_status
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthenticated("the session has ended: sign in again")
    if row.principal_kind == PrincipalKind.OPERATOR.value:
        idle = ctx.settings.operator_session_idle_s  # staff sessions end sooner when left alone
    elif row.transport == "cookie":
        idle = ctx.settings.cookie_session_idle_s
    else:
        idle = ctx.settings.session_idle_s
    if row.last_seen_at + idle * 1_000_000 <= now:
        with ctx.db.write() as conn:
            conn.execute(
                update(sessions)
                .where(sessions.c.id == row.id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason="idle")
            )
        raise Unauthenticated("the session timed out: sign in again")
    if status == "closed":
        raise Unauthenticated("the account is closed")
    if now - row.last_seen_at > TOUCH_INTERVAL_US:
        with ctx.db.write() as conn:
            conn.execute(update(sessions).where(sessions.c.id == row.id).values(last_seen_at=now))
    kind = PrincipalKind(row.principal_kind)
    return Principal(
        kind=kind,
        id=str(row.principal_id),
        user_id=str(row.principal_id) if kind is PrincipalKind.USER else None,
        session_id=str(row.id),
        device_id=row.device_id,
        device_trusted=trusted,
        transport=str(row.transport),
    )


def check_csrf(ctx: IdentityContext, session_id: str, csrf_token: str | None) -> None:
    with ctx.db.read() as conn:
        expected = conn.execute(select(sessions.c.csrf_hash).where(sessions.c.id == session_id)).scalar()
    if expected is None or not csrf_token or not secrets.compare_digest(expected, token_hash(csrf_token)):
        raise Forbidden("missing or wrong X-CSRF-Token for a cookie session")


def list_sessions(ctx: IdentityContext, principal: Principal) -> list[SessionView]:
    now = ctx.now()
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(sessions)
            .where(
                sessions.c.principal_id == principal.id,
                sessions.c.principal_kind == principal.kind.value,
                sessions.c.revoked_at.is_(None),
                sessions.c.expires_at > now,
            )
            .order_by(sessions.c.created_at.desc())
        ).all()
    return [
        SessionView(
            id=r.id,
            device_id=r.device_id,
            transport=r.transport,
            auth_method=r.auth_method,
            ip=r.ip,
            user_agent=r.user_agent,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            expires_at=r.expires_at,
            current=r.id == principal.session_id,
        )
        for r in rows
    ]


def revoke_session(ctx: IdentityContext, principal: Principal, session_id: str, info: RequestInfo) -> None:
    """Sign out one of one's own sessions (404 for anyone else's)."""
    now = ctx.now()
    with ctx.db.write() as conn:
        done = conn.execute(
            update(sessions)
            .where(
                sessions.c.id == session_id,
                sessions.c.principal_id == principal.id,
                sessions.c.principal_kind == principal.kind.value,
                sessions.c.revoked_at.is_(None),
            )
            .values(revoked_at=now, revoked_reason="signed_out")
        )
        if done.rowcount != 1:
            raise NotFound("no such session")
        actor = audit.Actor(
            principal.kind.value,
            principal.id,
            ip=info.ip,
            device_id=principal.device_id,
            session_id=principal.session_id,
        )
        audit.record(
            conn,
            now,
            "session.revoked",
            actor,
            subject_user_id=principal.user_id,
            details={"session_id": session_id},
        )


def revoke_all_sessions(
    conn: Connection, user_id: str, now: int, *, except_session: str | None, reason: str
) -> int:
    query = update(sessions).where(
        sessions.c.principal_id == user_id,
        sessions.c.principal_kind == PrincipalKind.USER.value,
        sessions.c.revoked_at.is_(None),
    )
    if except_session is not None:
        query = query.where(sessions.c.id != except_session)
    return int(conn.execute(query.values(revoked_at=now, revoked_reason=reason)).rowcount)


def trust_device(conn: Connection, device_id: str, now: int) -> None:
    conn.execute(
        update(devices)
        .where(devices.c.id == device_id, devices.c.trusted_at.is_(None))
        .values(trusted_at=now)
    )

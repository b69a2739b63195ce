"""Operators: the bank's staff accounts, their roles and sign-in, and the checks every operator action uses.

An operator signs in with username, password (argon2id) *and* a TOTP code: the second factor is not
optional, and its secret is stored encrypted. A TOTP code is accepted once (`totp_last_step`). Operator
sessions are ordinary session rows (`principal_kind = 'operator'`) with a short absolute lifetime.

Roles and what they allow (`ROLE_MATRIX`; every operator endpoint checks one permission):

    permission          support  risk_analyst  finance  admin
    users.view (masked)    x          x           x       x
    audit.view             x          x           x       x
    users.freeze           x          x           x       x
    pii.reveal                        x                   x
    limit_override                    x                   x     (maker and checker; identity/approvals)
    release_hold                                  x       x     (maker and checker; identity/approvals)
    operators.manage                                      x

Operators are created only from the command line (`qianbao operators create`): an admin who could create
operators over HTTP could create a second account for themselves and defeat maker-checker.

What operators do to a customer (view, reveal, freeze) is `identity/customer_admin.py`; maker-checker
actions are `identity/approvals.py`. Both use the checks here: `require`, `known_id`, `clean_reason` and
`operator_actor` for the audit log.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from qianbao import invalid
from qianbao.error_codes import user_text
from qianbao.errors import (
    Conflict,
    Forbidden,
    NotFound,
    QianbaoError,
    Unauthenticated,
)
from qianbao.identity.context import IdentityContext
from qianbao.identity.credentials import password_problems
from qianbao.identity.errors import weak_password
from qianbao.identity.model import Principal, PrincipalKind, RequestInfo
from qianbao.identity.sessions import TOKEN_PREFIX, token_hash
from qianbao.identity.tables import operators, sessions
from qianbao.identity.totp import new_totp_secret, provisioning_uri, verify_totp
from qianbao.ids import new_id
from qianbao.security import audit
from qianbao.security.fields import context

ROLES = ("support", "risk_analyst", "finance", "admin")
TOTP_CONTEXT = context("operators", "totp_secret_cipher")
USERNAME = re.compile(r"[a-z][a-z0-9._-]{2,63}")
# What an id can look like: anything else (NUL, which PostgreSQL refuses, spaces, huge strings) is unknown.
_PLAUSIBLE_ID = re.compile(r"[\x21-\x7e]{1,64}")
MAX_DISPLAY_NAME = 128
TOTP_ISSUER = "qianbao operators"


class Permission(StrEnum):
    VIEW_USERS = "users.view"
    VIEW_AUDIT = "audit.view"
    FREEZE_USERS = "users.freeze"
    REVEAL_PII = "pii.reveal"
    LIMIT_OVERRIDE = "limit_override"
    RELEASE_HOLD = "release_hold"
    MANAGE_OPERATORS = "operators.manage"
    REVIEW_KYC = "kyc.review"


_EVERYONE = frozenset(ROLES)
ROLE_MATRIX: dict[Permission, frozenset[str]] = {
    Permission.VIEW_USERS: _EVERYONE,
    Permission.VIEW_AUDIT: _EVERYONE,
    Permission.FREEZE_USERS: _EVERYONE,
    Permission.REVEAL_PII: frozenset({"risk_analyst", "admin"}),
    Permission.LIMIT_OVERRIDE: frozenset({"risk_analyst", "admin"}),
    Permission.RELEASE_HOLD: frozenset({"finance", "admin"}),
    Permission.MANAGE_OPERATORS: frozenset({"admin"}),
    Permission.REVIEW_KYC: frozenset({"risk_analyst", "admin"}),
}


def roles_for(permission: Permission) -> tuple[str, ...]:
    """The roles granting `permission`, in the canonical order."""
    return tuple(r for r in ROLES if r in ROLE_MATRIX[permission])


@dataclass(frozen=True, slots=True)
class OperatorView:
    id: str
    username: str
    display_name: str
    roles: tuple[str, ...]
    status: str
    created_at: int


@dataclass(frozen=True, slots=True)
class NewOperator:
    operator: OperatorView
    totp_secret: str  # shown once, at creation
    provisioning_uri: str


@dataclass(frozen=True, slots=True)
class OperatorSession:
    id: str
    token: str
    expires_at_us: int
    operator_id: str
    roles: tuple[str, ...]


def _view(row: Row[Any]) -> OperatorView:
    return OperatorView(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        roles=tuple(r for r in ROLES if r in row.roles),
        status=row.status,
        created_at=row.created_at,
    )


def known_id(value: object, what: str = "object") -> str:
    """`value` if it could be an id; NotFound otherwise (never a database error on odd input)."""
    if not isinstance(value, str) or not _PLAUSIBLE_ID.fullmatch(value):
        raise NotFound(f"no such {what}")
    return value


def operator_actor(principal: Principal, info: RequestInfo) -> audit.Actor:
    return audit.Actor("operator", principal.id, ip=info.ip, session_id=principal.session_id)


def clean_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME.fullmatch(username.strip().lower()):
        raise invalid.invalid_format(
            "username", "username must be 3 to 64 characters: a letter, then letters, digits, '.', '_' or '-'"
        )
    return username.strip().lower()


def clean_roles(roles: object) -> tuple[str, ...]:
    if not isinstance(roles, list | tuple) or not roles:
        raise invalid.only_from("roles", ROLES, f"give at least one role from {', '.join(ROLES)}")
    unknown = sorted({str(r) for r in roles if r not in ROLES})
    if unknown:
        raise invalid.only_from(
            "roles", ROLES, f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}"
        )
    return tuple(r for r in ROLES if r in roles)


def create_operator(
    ctx: IdentityContext,
    *,
    username: str,
    display_name: str,
    password: str,
    roles: list[str] | tuple[str, ...],
    actor: audit.Actor,
) -> NewOperator:
    """A new active operator with a fresh TOTP secret (returned once, for the authenticator app)."""
    name = clean_username(username)
    shown = display_name.strip() if isinstance(display_name, str) else ""
    if not 1 <= len(shown) <= MAX_DISPLAY_NAME or not shown.isprintable():
        raise invalid.text_length("display_name", MAX_DISPLAY_NAME, printable=True)
    granted = clean_roles(roles)
    problems = password_problems(password, personal=[name, shown])
    if problems:
        raise weak_password(problems)
    secret = new_totp_secret()
    password_hash = ctx.hasher.hash(password)
    now = ctx.now()
    operator_id = new_id("opr")
    with ctx.db.write() as conn:
        if conn.execute(select(operators.c.id).where(operators.c.username == name)).first() is not None:
            raise Conflict(f"an operator named {name!r} already exists")
        conn.execute(
            insert(operators).values(
                id=operator_id,
                username=name,
                display_name=shown,
                password_hash=password_hash,
                totp_secret_cipher=ctx.keys.encrypt(secret, context=TOTP_CONTEXT),
                totp_last_step=None,
                roles=list(granted),
                status="active",
                created_at=now,
            )
        )
        audit.record(
            conn,
            now,
            "operator.created",
            actor,
            details={"operator_id": operator_id, "username": name, "roles": list(granted)},
        )
    view = OperatorView(operator_id, name, shown, granted, "active", now)
    return NewOperator(view, secret, provisioning_uri(secret, account_name=name, issuer=TOTP_ISSUER))


def list_operators(ctx: IdentityContext) -> list[OperatorView]:
    with ctx.db.read() as conn:
        return [_view(r) for r in conn.execute(select(operators).order_by(operators.c.username))]


def get_operator(ctx: IdentityContext, operator_id: str) -> OperatorView:
    known_id(operator_id, "operator")
    with ctx.db.read() as conn:
        row = conn.execute(select(operators).where(operators.c.id == operator_id)).first()
    if row is None:
        raise NotFound("no such operator")
    return _view(row)


def disable_operator(
    ctx: IdentityContext, *, actor: audit.Actor, operator_id: str | None = None, username: str | None = None
) -> OperatorView:
    """Disable an operator and end their sessions at once."""
    if operator_id is not None:
        where = operators.c.id == known_id(operator_id, "operator")
    else:
        where = operators.c.username == known_id(username, "operator")
    now = ctx.now()
    with ctx.db.write() as conn:
        row = conn.execute(select(operators).where(where)).first()
        if row is None:
            raise NotFound("no such operator")
        conn.execute(update(operators).where(operators.c.id == row.id).values(status="disabled"))
        ended = conn.execute(
            update(sessions)
            .where(
                sessions.c.principal_kind == PrincipalKind.OPERATOR.value,
                sessions.c.principal_id == row.id,
                sessions.c.revoked_at.is_(None),
            )
            .values(revoked_at=now, revoked_reason="operator_disabled")
        ).rowcount
        audit.record(
            conn,
            now,
            "operator.disabled",
            actor,
            details={"operator_id": row.id, "username": row.username, "sessions_ended": int(ended)},
        )
    return replace(_view(row), status="disabled")


def sign_in(
    ctx: IdentityContext, *, username: str, password: str, totp_code: str, info: RequestInfo
) -> OperatorSession:
    """Password and TOTP, both required. Failures are throttled and audited, and never say which was wrong."""
    given = {"username": username, "password": password, "totp_code": totp_code}
    missing = [name for name, value in given.items() if not (isinstance(value, str) and value)]
    if missing:
        raise invalid.required(missing[0], "username, password and totp_code are required")
    name = username.strip().lower()[:64]
    limits = (("password_account", f"operator:{name}"), ("password_ip", info.ip))
    for rule, ident in limits:
        if ident and not ctx.limiter.check(rule, ident):
            ctx.limiter.hit(rule, ident)  # raises RateLimited with Retry-After
    row = None
    if USERNAME.fullmatch(name):
        with ctx.db.read() as conn:
            row = conn.execute(select(operators).where(operators.c.username == name)).first()
    if row is None:
        ctx.hasher.dummy_verify(password)
        ok, reason = False, "bad_credentials"
    else:
        ok = ctx.hasher.verify(row.password_hash, password)
        reason = "bad_credentials" if not ok else "disabled" if row.status != "active" else ""
        ok = ok and row.status == "active"
    now = ctx.now()
    issued: OperatorSession | None = None
    with ctx.db.write() as conn:
        if ok and row is not None:
            locked = conn.execute(select(operators).where(operators.c.id == row.id).with_for_update()).one()
            secret = ctx.keys.decrypt(locked.totp_secret_cipher, context=TOTP_CONTEXT)
            step = verify_totp(secret, totp_code, at_s=now / 1_000_000, last_used_step=locked.totp_last_step)
            if locked.status != "active":
                reason = "disabled"
            elif step is None:
                reason = "bad_totp"
            else:
                conn.execute(update(operators).where(operators.c.id == row.id).values(totp_last_step=step))
                issued = _issue(ctx, conn, row, info, now)
        if issued is None:
            audit.record(
                conn,
                now,
                "operator.sign_in",
                audit.Actor(
                    "anonymous" if row is None else "operator", None if row is None else row.id, ip=info.ip
                ),
                outcome="failure",
                details={"username": name if USERNAME.fullmatch(name) else "(invalid)", "reason": reason},
            )
    if issued is None:
        for rule, ident in limits:
            if ident:
                try:
                    ctx.limiter.hit(rule, ident)
                except QianbaoError:  # noqa: S110 - the refusal below is the answer either way
                    pass
        raise Unauthenticated(
            "the username, password or authenticator code is wrong",
            user_text=user_text("unauthenticated", "operator_credentials"),
            next_step="check_input",
        )
    ctx.limiter.reset("password_account", f"operator:{name}")
    return issued


def _issue(ctx: IdentityContext, conn: Connection, row: Any, info: RequestInfo, now: int) -> OperatorSession:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session_id = new_id("ses")
    expires = now + ctx.settings.operator_session_lifetime_s * 1_000_000
    conn.execute(
        insert(sessions).values(
            id=session_id,
            token_hash=token_hash(token),
            principal_kind=PrincipalKind.OPERATOR.value,
            principal_id=row.id,
            device_id=None,
            transport="bearer",
            csrf_hash=None,
            auth_method="password+totp",
            ip=info.ip,
            user_agent=(info.user_agent or "")[:256] or None,
            created_at=now,
            last_seen_at=now,
            expires_at=expires,
        )
    )
    audit.record(
        conn,
        now,
        "operator.sign_in",
        audit.Actor("operator", row.id, ip=info.ip, session_id=session_id),
        details={"username": row.username, "method": "password+totp"},
    )
    return OperatorSession(session_id, token, expires, row.id, _view(row).roles)


def with_roles(ctx: IdentityContext, principal: Principal) -> Principal:
    """The operator principal with its current roles; a disabled operator is signed out."""
    if principal.kind is not PrincipalKind.OPERATOR:
        raise Forbidden("this endpoint is for operators")
    with ctx.db.read() as conn:
        row = conn.execute(
            select(operators.c.roles, operators.c.status).where(operators.c.id == principal.id)
        ).first()
    if row is None or row.status != "active":
        raise Unauthenticated("this operator account is disabled")
    return replace(principal, roles=frozenset(r for r in row.roles if r in ROLES))


def require(principal: Principal, allowed: frozenset[str] | tuple[str, ...], what: str) -> None:
    """Forbidden unless the operator holds one of `allowed`."""
    if not principal.roles & frozenset(allowed):
        raise Forbidden(f"{what} needs one of the roles: {', '.join(r for r in ROLES if r in allowed)}")


def clean_reason(reason: object, *, max_length: int = 500) -> str:
    """Why an operator acts: free text, required, kept in the audit log."""
    if not isinstance(reason, str) or not 3 <= len(reason.strip()) <= max_length or not reason.isprintable():
        raise invalid.text_length("reason", max_length, minimum=3, printable=True)
    return reason.strip()

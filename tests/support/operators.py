"""Operators in tests: create one with roles through the service, sign in over HTTP with a fresh TOTP code.

staff = create_operator(client, roles=("risk_analyst",))
client.get(f"/v1/operator/users/{alice.user_id}", headers=staff.auth)
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy import select

from qianbao.identity import operators
from qianbao.identity.context import IdentityContext
from qianbao.identity.tables import operators as operators_table
from qianbao.identity.totp import TOTP_PERIOD_S, totp_code
from qianbao.security import audit

OPERATOR_PASSWORD = "Quarry-Lighthouse-73"  # noqa: S105 - a test password
_names = itertools.count(int.from_bytes(os.urandom(2), "big") * 100)


@dataclass
class StaffLogin:
    operator_id: str
    username: str
    password: str
    totp_secret: str
    roles: tuple[str, ...]
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def identity_of(client: TestClient) -> IdentityContext:
    ctx: IdentityContext = client.app.state.container.identity  # type: ignore[attr-defined]
    return ctx


def fresh_totp(client: TestClient, operator_id: str, secret: str) -> str:
    """A code the server will accept now: the current step, or the next one if the current was used."""
    with identity_of(client).db.read() as conn:
        last = conn.execute(
            select(operators_table.c.totp_last_step).where(operators_table.c.id == operator_id)
        ).scalar()
    now_step = int(time.time()) // TOTP_PERIOD_S
    # The server accepts one step either side of now; a step is never accepted twice.
    step = now_step if last is None or last < now_step else last + 1
    if step > now_step + 1:
        raise AssertionError("both acceptable TOTP steps were used: wait for the next period")
    return totp_code(secret, step * TOTP_PERIOD_S)


def sign_in_operator(client: TestClient, username: str, password: str, operator_id: str, secret: str) -> str:
    r = client.post(
        "/v1/operator/sessions",
        json={
            "username": username,
            "password": password,
            "totp_code": fresh_totp(client, operator_id, secret),
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def create_operator(
    client: TestClient,
    *,
    roles: Sequence[str] = ("support",),
    username: str | None = None,
    password: str = OPERATOR_PASSWORD,
    display_name: str = "Test Operator",
    sign_in: bool = True,
) -> StaffLogin:
    """An active operator with `roles`, signed in (auth headers in `.auth`) unless `sign_in=False`."""
    name = username or f"staff{next(_names)}"
    created = operators.create_operator(
        identity_of(client),
        username=name,
        display_name=display_name,
        password=password,
        roles=list(roles),
        actor=audit.Actor("system", "tests"),
    )
    op = created.operator
    token = sign_in_operator(client, name, password, op.id, created.totp_secret) if sign_in else ""
    return StaffLogin(op.id, name, password, created.totp_secret, op.roles, token)

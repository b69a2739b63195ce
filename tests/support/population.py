"""Users created through the real sign-up use case, and calls raced in threads, for tests that drive
services directly (concurrency races on PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind, RequestInfo
from qianbao.identity.signup import register_user, send_code
from tests.support.api import STRONG_PASSWORD, new_phone


def register(ctx: IdentityContext, name: str) -> tuple[str, str]:
    """A signed-up user (tier 4): (user id, main wallet id)."""
    phone = new_phone()
    with ctx.uow() as uow:
        send_code(ctx, uow.conn, phone, "signup")
        uow.commit()
    with ctx.db.read() as conn:
        code = ctx.notifier.sent_to(conn, phone)[0].code
    assert code is not None
    user = register_user(
        ctx,
        phone_text=phone,
        code=code,
        password=STRONG_PASSWORD,
        name=name,
        device_key=None,
        info=RequestInfo(),
    )
    return user.id, user.main_wallet_id


def register_principal(ctx: IdentityContext, name: str) -> tuple[Principal, str]:
    """A signed-up user acting on a trusted device: (principal, main wallet id)."""
    user_id, wallet_id = register(ctx, name)
    principal = Principal(
        PrincipalKind.USER, user_id, user_id, device_id=f"dev-{user_id}", device_trusted=True
    )
    return principal, wallet_id


def race(calls: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Run the calls in threads released together: each outcome is ("ok", result) or (error code, error)."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[str, Any]] = [("not run", None)] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = ("ok", calls[i]())
        except QianbaoError as exc:
            outcomes[i] = (exc.code, exc)
        except Exception as exc:  # noqa: BLE001 - any other failure is recorded and fails the test
            outcomes[i] = (f"{type(exc).__name__}: {exc}", exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return outcomes

"""`qianbao worker`: the outbox dispatcher as its own process (production), or one pass with `--once`.

Run as many as you like next to `qianbao serve` (with `QIANBAO_DISPATCHER=off` there): leases and
`SKIP LOCKED` keep them from sending the same attempt twice.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def worker(
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="sqlite:///PATH or postgresql://… (env QIANBAO_DATABASE_URL)"),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="One pass (fan out, send what is due), then exit: for scripts.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Webhook requests in flight at once.")] = 8,
    timeout: Annotated[
        float, typer.Option(min=1, max=60, help="Seconds a receiver gets to answer one delivery.")
    ] = 10.0,
    interval: Annotated[
        float, typer.Option(min=0.05, max=60, help="Seconds between passes when there is nothing to do.")
    ] = 1.0,
) -> None:
    """Deliver events: the event feed, in-app notifications and signed webhooks (with retries)."""
    from qianbao.bootstrap import key_material
    from qianbao.clock import SystemClock
    from qianbao.config import Settings
    from qianbao.events.dispatcher import Dispatcher
    from qianbao.events.webhooks import loopback_allowed
    from qianbao.security.keyring import KeyRing
    from qianbao.store.database import Database

    settings = Settings(database_url=database_url) if database_url else Settings()
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    clock = SystemClock()
    dispatcher = Dispatcher(
        db,
        KeyRing(db, clock, key_material(settings)),
        clock,
        allow_loopback=loopback_allowed(settings),
        concurrency=concurrency,
        timeout_s=timeout,
    )
    try:
        if once:
            report = dispatcher.dispatch_once()
            console.print(
                f"events fanned out: {report.events}; attempts: {report.attempts} "
                f"(delivered {report.delivered}, given up {report.failed})"
            )
            return
        stop = threading.Event()

        def _stop(signum: int, _frame: FrameType | None) -> None:
            console.print(f"signal {signum}: finishing the current pass")
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        console.print(f"dispatching events from {db.dialect} ({concurrency} at once); Ctrl-C stops")
        dispatcher.run(stop, interval)
    finally:
        dispatcher.close()
        db.dispose()

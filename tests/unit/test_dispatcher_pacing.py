"""How often the event dispatcher passes: at once never, `gather_s` apart while events keep coming (so
they are fanned out together), `interval_s` apart when idle, and a failing pass does not stop it."""

from __future__ import annotations

import threading
from typing import Any

from qianbao.events.dispatcher import GATHER_S, Dispatcher, DispatchReport


class _Pacer(threading.Event):
    """A stop event that records each wait and stops after the passes the test planned."""

    def __init__(self, passes: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.passes = passes

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        if len(self.waits) >= self.passes:
            self.set()
        return self.is_set()


def _run(outcomes: list[Any], **options: float) -> list[float]:
    dispatcher = Dispatcher.__new__(Dispatcher)  # only run() is under test: no database, no HTTP client
    planned = iter(outcomes)

    def one_pass() -> DispatchReport:
        outcome = next(planned)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    dispatcher.dispatch_once = one_pass  # type: ignore[method-assign]
    pacer = _Pacer(len(outcomes))
    dispatcher.run(pacer, **options)
    return pacer.waits


def test_busy_passes_are_gather_apart_and_idle_ones_interval_apart() -> None:
    busy, idle = DispatchReport(events=3), DispatchReport()
    assert _run([busy, busy, idle, DispatchReport(attempts=1)], interval_s=1.0) == [
        GATHER_S,
        GATHER_S,
        1.0,
        GATHER_S,
    ]


def test_the_gather_wait_never_exceeds_the_interval() -> None:
    assert _run([DispatchReport(events=1)], interval_s=0.05, gather_s=0.5) == [0.05]


def test_a_failing_pass_is_logged_and_the_next_one_comes_after_the_interval() -> None:
    assert _run([RuntimeError("database down"), DispatchReport(events=1)], interval_s=2.0) == [2.0, GATHER_S]

"""The one retry loop every money unit of work runs in."""

from __future__ import annotations

import sqlite3

import pytest

from qianbao.store.errors import RETRIES, retried


def test_a_unit_that_lost_a_race_runs_again_and_its_answer_is_returned() -> None:
    calls: list[int] = []

    def unit() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert retried(unit) == "done"
    assert len(calls) == 3


def test_it_gives_up_after_the_last_attempt() -> None:
    calls: list[int] = []

    def unit() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        retried(unit)
    assert len(calls) == RETRIES


def test_an_error_running_again_cannot_resolve_is_raised_at_once() -> None:
    calls: list[int] = []

    def unit() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: wallets")

    with pytest.raises(sqlite3.OperationalError):
        retried(unit)
    assert len(calls) == 1


def test_a_business_refusal_is_not_retried() -> None:
    calls: list[int] = []

    def unit() -> None:
        calls.append(1)
        raise LookupError("declined")

    with pytest.raises(LookupError):
        retried(unit)
    assert len(calls) == 1

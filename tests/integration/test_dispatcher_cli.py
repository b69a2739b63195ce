"""`qianbao worker --once`: one dispatcher pass from the command line, then exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from qianbao.cli.main import app
from qianbao.clock import SystemClock
from qianbao.events.tables import event_recipients
from qianbao.store.database import Database
from qianbao.store.outbox import OutboxEvent, outbox
from qianbao.store.unit_of_work import UnitOfWork

runner = CliRunner()


def test_worker_once_fans_out_and_exits(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QIANBAO_VAR_DIR", str(tmp_path / "var"))  # the sandbox key file goes here
    db = Database(fresh_database_url)
    opened = OutboxEvent("wallet.opened", "wallet", "wal_cli", {"wallet_id": "wal_cli", "user_id": "usr_cli"})
    with UnitOfWork(db, SystemClock()) as uow:
        uow.emit(opened)
        uow.commit()
    result = runner.invoke(app, ["worker", "--once", "--database-url", fresh_database_url])
    assert result.exit_code == 0, result.output
    assert "events fanned out: 1; attempts: 0" in result.output
    with db.read() as conn:
        assert (
            conn.execute(select(outbox.c.published_at).where(outbox.c.id == opened.id)).scalar_one()
            is not None
        )
        assert conn.execute(select(event_recipients.c.user_id)).scalars().all() == ["usr_cli"]
    db.dispose()
    again = runner.invoke(app, ["worker", "--once", "--database-url", fresh_database_url])
    assert "events fanned out: 0; attempts: 0" in again.output


def test_worker_help_names_its_options() -> None:
    result = runner.invoke(app, ["worker", "--help"])
    assert result.exit_code == 0
    for option in ("--once", "--concurrency", "--timeout", "--interval", "--database-url"):
        assert option in result.output

"""The `qianbao` command: migrations, ledger checks, the benchmark, and `serve` as a real process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2 as httpx
import pytest
from typer.testing import CliRunner

from qianbao.cli.main import app
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import AccountSpec, NormalBalance, TransferSpec
from qianbao.store import migrate
from qianbao.store.database import Database
from tests.conftest import unique
from tests.support.server import serve

runner = CliRunner()


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = runner.invoke(app, ["db", "current", "--database-url", url])
    assert result.exit_code == 1  # an empty database is behind the code
    assert "(empty database)" in result.output
    result = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["db", "current", "--database-url", url])
    assert result.exit_code == 0
    assert f"current: {migrate.head_revision()}" in result.output


def _ledger_with_history(url: str) -> tuple[str, str]:
    db = Database(url)
    engine = LedgerEngine(db)
    funding, wallet = unique("funding"), unique("wallet")
    engine.create_accounts(
        [
            AccountSpec(funding, "CNY", "test.funding", normal_balance=NormalBalance.DEBIT),
            AccountSpec(wallet, "CNY", "test.wallet", debits_must_not_exceed_credits=True),
        ]
    )
    engine.create_transfers([TransferSpec.posted(unique(), funding, wallet, 12_345, "CNY")])
    db.dispose()
    return funding, wallet


def test_ledger_verify_passes_then_names_a_tampered_account(fresh_database_url: str) -> None:
    _, wallet = _ledger_with_history(fresh_database_url)
    result = runner.invoke(app, ["ledger", "verify", "--database-url", fresh_database_url])
    assert result.exit_code == 0, result.output
    assert "ledger OK" in result.output

    db = Database(fresh_database_url)
    with db.write() as conn:
        conn.exec_driver_sql(
            f"UPDATE ledger_accounts SET credits_posted = credits_posted + 7 WHERE id = '{wallet}'"
        )
    db.dispose()
    result = runner.invoke(app, ["ledger", "verify", "--database-url", fresh_database_url])
    assert result.exit_code == 1
    assert "balance_mismatch" in result.output
    assert wallet[:20] in result.output  # rich may wrap long ids; the start is always shown


def test_ledger_show_prints_balance_and_history(database_url: str) -> None:
    _, wallet = _ledger_with_history(database_url)
    result = runner.invoke(app, ["ledger", "show", wallet, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "balance 12345" in result.output
    assert "credit" in result.output
    result = runner.invoke(app, ["ledger", "show", "no-such-account", "--database-url", database_url])
    assert result.exit_code == 1


def test_ledger_sweep_runs(database_url: str) -> None:
    result = runner.invoke(app, ["ledger", "sweep", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "expired" in result.output


def test_bench_ledger_prints_json_last_line(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_server").database_url("test")
    else:
        url = f"sqlite:///{tmp_path / 'bench-target.db'}"
    result = runner.invoke(
        app,
        ["bench", "ledger", "--database-url", url, "--transfers", "2000", "--accounts", "50",
         "--clients", "16", "--baseline-transfers", "320", "--hot-share", "0.5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["benchmark"] == "ledger"
    assert summary["database"] == backend
    assert summary["transfers"] == 2000
    assert summary["hot_share"] == 0.5
    assert summary["verified"] is True
    assert summary["transfers_per_s"] > 0 and summary["baseline_transfers_per_s"] > 0
    assert summary["ratio"] == pytest.approx(
        summary["transfers_per_s"] / summary["baseline_transfers_per_s"], 0.01
    )
    for key in ("p50_ms", "p99_ms", "clients", "accounts"):
        assert key in summary


def test_serve_migrates_seeds_and_answers_with_two_workers(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2") as served:
        assert served.health["database"] == "sqlite"
        assert (tmp_path / "var" / "qianbao.db").exists()
    output = served.output
    assert "+8613800000001" in output and "Demo-Wallet-2026" in output
    assert "¥5,000.00" in output
    db = Database(f"sqlite:///{tmp_path / 'var' / 'qianbao.db'}")
    try:
        with db.read() as conn:
            alice = conn.exec_driver_sql(
                "SELECT a.credits_posted - a.debits_posted FROM ledger_accounts a"
                " JOIN wallets w ON w.id = a.id JOIN ledger_transfers t ON t.credit_account_id = a.id"
                " WHERE t.id = 'seed:demo:alice'"
            ).scalar_one()
    finally:
        db.dispose()
    assert alice == 500_000


def test_serve_describes_the_address_it_really_listens_on(tmp_path: Path) -> None:
    # The environment names another host; --host and --port (from `serve`) are what the server binds.
    environment = {"QIANBAO_HOST": "localhost", "QIANBAO_SEED_DEMO_DATA": "false"}
    with serve(tmp_path, "--host", "127.0.0.1", env=environment) as served:
        document = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
        policies = [
            httpx.get(f"{served.url}{page}", timeout=10).headers["content-security-policy"]
            for page in ("/docs", "/redoc")
        ]
    assert document["servers"][0]["url"] == served.url
    assert document["info"]["contact"]["url"] == f"{served.url}/"
    for policy in policies:
        assert f"connect-src 'self' {served.url}" in [part.strip() for part in policy.split(";")]

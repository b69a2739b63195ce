"""The migrations build the schema the code describes, on both databases, and can be run again safely."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import ForeignKeyConstraint, Table, inspect, text
from sqlalchemy.exc import IntegrityError

from qianbao.clock import FixedClock
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.ledger.verify import verify_ledger
from qianbao.store import migrate
from qianbao.store.database import Database
from qianbao.store.schema import metadata
from tests.conftest import PostgresServer
from tests.support.ledger import open_accounts

# Every table the migrations create, as the capabilities' tables modules describe them.
DESCRIBED = set(metadata.tables)
SQLITE_ONLY = {"ledger_sequences"}  # SQLite has no sequences (migration 0001, _sqlite_guards)
SCOPE = DESCRIBED | SQLITE_ONLY


def _name_in_scope(name: str | None, type_: str, parent_names: Any) -> bool:
    """Reflected side: only our tables."""
    return type_ != "table" or name in SCOPE


def _object_in_scope(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Metadata side: only our tables."""
    return type_ != "table" or name in SCOPE


def schema_diff(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        opts = {"include_name": _name_in_scope, "include_object": _object_in_scope}
        context = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(context, metadata))


def describe(diff: list[Any]) -> list[tuple[str, ...]]:
    """Each difference as plain data: (operation, table[, constraint or column name])."""
    out = []
    for entry in diff:
        if isinstance(entry, list):  # column modifications come grouped
            out += [(op[0], op[2], op[3]) for op in entry]
            continue
        op, obj = entry[0], entry[1]
        if isinstance(obj, Table):
            out.append((op, obj.name))
        elif isinstance(obj, ForeignKeyConstraint):
            out.append((op, obj.table.name, str(obj.name)))
        else:
            out.append((op, str(getattr(obj, "table", obj)), str(getattr(obj, "name", obj))))
    return sorted(out)


# Differences between the migrated schema and the metadata that are there on purpose, and nothing else.
EXPECTED_DIFF: dict[str, list[tuple[str, ...]]] = {
    "sqlite": [
        # Composite (account id, currency) keys: on SQLite in the database; tables.py leaves them out
        # because PostgreSQL checks the same with a statement trigger instead.
        ("remove_fk", "ledger_transfers", "fk_ledger_transfers_credit_account_id_currency_ledger_accounts"),
        ("remove_fk", "ledger_transfers", "fk_ledger_transfers_debit_account_id_currency_ledger_accounts"),
        ("remove_table", "ledger_sequences"),
    ],
    "postgresql": [],
}


def test_schema_matches_the_metadata(db: Database) -> None:
    assert describe(schema_diff(db)) == EXPECTED_DIFF[db.dialect]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_guards_exist_outside_the_metadata(db: Database) -> None:
    # The sequence and guards exist even though the metadata does not describe them.
    with db.read() as conn:
        sequences = (
            conn.exec_driver_sql("SELECT sequence_name FROM information_schema.sequences").scalars().all()
        )
        triggers = set(
            conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN"
                " ('ledger_transfers'::regclass, 'ledger_accounts'::regclass)"
            ).scalars()
        )
    assert "ledger_transfer_seq" in sequences
    assert triggers == {
        "ledger_transfers_immutable",
        "ledger_transfers_no_truncate",
        "ledger_transfers_accounts_exist",
        "ledger_accounts_identity",
        "ledger_accounts_no_delete",
        "ledger_accounts_no_truncate",
    }


def test_the_drift_check_notices_a_difference(fresh_db: Database) -> None:
    # A test that cannot fail is a defect: drop an index the metadata declares and the diff shows it.
    with fresh_db.write() as conn:
        conn.exec_driver_sql("DROP INDEX ix_ledger_transfers_open_timeouts")
    assert ("add_index", "ledger_transfers", "ix_ledger_transfers_open_timeouts") in describe(
        schema_diff(fresh_db)
    )


def test_upgrade_is_idempotent(db: Database) -> None:
    head = migrate.head_revision()
    assert migrate.current_revision(db) == head
    before = _schema_snapshot(db)

    migrate.upgrade(db)
    migrate.upgrade(db)

    assert migrate.current_revision(db) == head
    assert _schema_snapshot(db) == before
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [head]


def test_head_revision_is_the_latest_script() -> None:
    versions = Path(migrate.__file__).parent / "migrations" / "versions"
    revisions = sorted(p.name.split("_", 1)[0] for p in versions.glob("[0-9]*_*.py"))
    assert migrate.head_revision() == revisions[-1]


@pytest.fixture
def empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create()  # no template: nothing in it
    else:
        url = f"sqlite:///{tmp_path / 'brand-new.db'}"
    db = Database(url)
    yield db
    db.dispose()


def test_a_brand_new_database_upgrades_from_nothing(empty_database: Database) -> None:
    db = empty_database
    assert migrate.current_revision(db) is None
    assert not inspect(db.engine).get_table_names()

    migrate.upgrade(db)

    assert migrate.current_revision(db) == migrate.head_revision()
    tables = set(inspect(db.engine).get_table_names())
    assert DESCRIBED | {"alembic_version"} <= tables
    assert ("ledger_sequences" in tables) is (db.dialect == "sqlite")
    assert describe(schema_diff(db)) == EXPECTED_DIFF[db.dialect]
    migrate.upgrade(db)  # and a second run on it is a no-op
    assert migrate.current_revision(db) == migrate.head_revision()
    # The new database is a working ledger.
    engine = LedgerEngine(db, FixedClock())
    _, (a, b) = open_accounts(engine, 2, funded=500)
    [result] = engine.create_transfers([TransferSpec.posted("first", a, b, 200, "CNY")])
    assert result.code is ResultCode.OK
    assert verify_ledger(db).ok


def _schema_snapshot(db: Database) -> dict[str, Any]:
    inspector = inspect(db.engine)
    snapshot: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        snapshot[table] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
            ),
            sorted(str(c["name"]) for c in inspector.get_check_constraints(table)),
        )
    return snapshot


def _approval(conn: Any, approval_id: str, status: str, requested_by: str, decided_by: str | None) -> None:
    conn.execute(
        text(
            "INSERT INTO approvals (id, action, params, reason, status, requested_by, requested_at,"
            " decided_by, decided_at) VALUES (:id, 'limit_override', '{}', 'r', :status, :requested_by, 1,"
            " :decided_by, 2)"
        ),
        {"id": approval_id, "status": status, "requested_by": requested_by, "decided_by": decided_by},
    )


def test_0011_turns_self_rejections_into_withdrawals_and_the_database_says_who_decides(
    empty_database: Database,
) -> None:
    db = empty_database
    migrate.upgrade(db, "0010")
    with db.write() as conn:
        _approval(conn, "apr_self", "rejected", "opr_maker", "opr_maker")  # the requester took it back
        _approval(conn, "apr_checker", "rejected", "opr_maker", "opr_checker")
    migrate.upgrade(db)

    with db.read() as conn:
        statuses = dict(conn.exec_driver_sql("SELECT id, status FROM approvals").all())
    assert statuses == {"apr_self": "withdrawn", "apr_checker": "rejected"}
    refusals = {
        ("rejected", "opr_maker"): "ck_approvals_two_people",
        ("withdrawn", "opr_checker"): "ck_approvals_withdrawn_by_requester",
        ("withdrawn", None): "ck_approvals_withdrawn_by_requester",
        ("gone", "opr_checker"): "ck_approvals_status",
    }
    for n, ((status, decided_by), guard) in enumerate(refusals.items()):
        with pytest.raises(IntegrityError, match=guard), db.write() as conn:
            _approval(conn, f"apr_bad{n}", status, "opr_maker", decided_by)
    with db.write() as conn:  # the control: the same statement, keeping the rules
        _approval(conn, "apr_ok1", "withdrawn", "opr_maker", "opr_maker")
        _approval(conn, "apr_ok2", "rejected", "opr_maker", "opr_checker")
    assert describe(schema_diff(db)) == EXPECTED_DIFF[db.dialect]


def test_0012_forgets_the_latency_of_attempts_that_got_no_answer(empty_database: Database) -> None:
    db = empty_database
    migrate.upgrade(db, "0011")
    with db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO webhook_endpoints (id, owner_user_id, url, events, enabled, secret_cipher,"
                " created_at, updated_at) VALUES ('whe_1', 'usr_1', 'https://hooks.example.com', '[\"*\"]',"
                " :yes, 'x', 1, 1)"
            ),
            {"yes": True},
        )
        conn.execute(
            text(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, event_created_at,"
                " status, attempt_count, next_attempt_at, created_at)"
                " VALUES ('whd_1', 'whe_1', 'evt_1', 't', 1, 'pending', 2, 9, 1)"
            )
        )
        for number, status_code, latency, error in ((1, None, 5003, "connection_failed"), (2, 503, 41, None)):
            conn.execute(
                text(
                    "INSERT INTO webhook_attempts (id, delivery_id, number, manual, attempted_at,"
                    " status_code, latency_ms, error, succeeded)"
                    " VALUES (:id, 'whd_1', :number, :no, 1, :status_code, :latency, :error, :no)"
                ),
                {
                    "id": f"wha_{number}",
                    "number": number,
                    "no": False,
                    "status_code": status_code,
                    "latency": latency,
                    "error": error,
                },
            )
    migrate.upgrade(db)
    with db.read() as conn:
        latencies = dict(conn.exec_driver_sql("SELECT id, latency_ms FROM webhook_attempts").all())
    assert latencies == {"wha_1": None, "wha_2": 41}
    assert describe(schema_diff(db)) == EXPECTED_DIFF[db.dialect]

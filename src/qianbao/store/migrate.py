"""Schema migrations (Alembic), run programmatically so `qianbao db upgrade` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from qianbao.store.database import Database

_SCRIPTS = Path(__file__).parent / "migrations"
# Several server processes may start at once; on PostgreSQL they take turns migrating.
_MIGRATION_LOCK_KEY = 7_165_730_001


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None  # noqa: S101 - the package always ships at least one revision
    return head


def upgrade(db: Database, revision: str = "head") -> None:
    cfg = _config()
    with db.engine.connect() as conn:
        if db.is_postgresql:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            if db.is_postgresql:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                conn.commit()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()

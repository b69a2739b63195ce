"""Throw-away databases for benchmarks: a fresh PostgreSQL database or SQLite file, dropped afterwards."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from qianbao.store.database import normalise_url


@contextmanager
def scratch_database(url: str, *, keep: bool = False, prefix: str = "qianbao_bench") -> Iterator[str]:
    """Yield the URL of a new empty database on the same server as `url` (or a temp SQLite file)."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

"""Fixtures of the integration tests that drive services directly on PostgreSQL (concurrency races)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qianbao.bootstrap import Container, build_container
from tests.conftest import PostgresServer
from tests.support.api import make_settings


@pytest.fixture
def container(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Container]:
    """A service container on a fresh, migrated PostgreSQL database (races need real row locks)."""
    url = postgres_server.create(template=postgres_server.migrated_template())
    built = build_container(make_settings(url, tmp_path / "var"))
    try:
        yield built
    finally:
        built.close()

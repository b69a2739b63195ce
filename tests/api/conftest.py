"""API tests run the sandbox app on a fresh database of each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qianbao.config import Settings
from tests.support.api import SignedUp, api_client, make_settings, sign_up


@pytest.fixture
def settings(fresh_database_url: str, tmp_path: Path) -> Settings:
    return make_settings(fresh_database_url, tmp_path / "var")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from api_client(settings)


@pytest.fixture
def alice(client: TestClient) -> SignedUp:
    return sign_up(client, name="王丽")


@pytest.fixture
def bob(client: TestClient) -> SignedUp:
    return sign_up(client, name="李四")

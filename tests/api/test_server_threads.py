"""`QIANBAO_THREADS`: how many threads each server process runs blocking work (every database call) on."""

from __future__ import annotations

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from qianbao.config import Settings


async def _tokens() -> float:
    return anyio.to_thread.current_default_thread_limiter().total_tokens


def test_the_server_runs_blocking_work_on_the_configured_number_of_threads(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"threads": 3}))) as client:
        assert client.portal.call(_tokens) == 3
        assert client.get("/healthz").status_code == 200


def test_the_default_is_eight_threads(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QIANBAO_THREADS", raising=False)
    assert Settings().threads == 8
    with TestClient(create_app(settings)) as client:
        assert client.portal.call(_tokens) == 8

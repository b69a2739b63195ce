"""The HTTP surface of the foundation: health, OpenAPI, problem+json errors in both languages."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from qianbao.config import Settings
from qianbao.store import migrate
from tests.support.api import make_settings


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> TestClient:
    with TestClient(create_app(make_settings(database_url, tmp_path / "var"))) as test_client:
        yield test_client


def test_healthz_reports_database_and_schema(client: TestClient, backend: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == backend
    assert body["schema_revision"] == migrate.head_revision()
    assert body["env"] == "sandbox"


def test_openapi_describes_the_api(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "qianbao API"
    assert "/healthz" in document["paths"]


@pytest.mark.parametrize(
    ("language", "message"),
    [("zh-CN", "找不到该内容。"), ("en", "We couldn't find that."), (None, "We couldn't find that.")],
)
def test_unknown_route_is_a_localized_problem(client: TestClient, language: str | None, message: str) -> None:
    headers = {"Accept-Language": language} if language else {}
    response = client.get("/v1/no-such-thing", headers=headers)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "not_found"
    assert body["status"] == 404
    assert body["user_message"] == message
    assert {"type", "title", "detail"} <= body.keys()


def test_wrong_method_is_a_problem_not_a_500(client: TestClient) -> None:
    response = client.post("/healthz", json={})
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_healthz_answers_503_when_the_database_is_down() -> None:
    # Nothing listens on port 1: the app starts (connections are lazy) but cannot reach its database.
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:1/none", seed_demo_data=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/healthz", headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert body["user_message"] == "服务繁忙，请稍后再试。"

"""`GET /` is a small start page (until the web app exists): what qianbao is, the sandbox's demo users,
where the API docs are; in zh-CN or en, without inline script, under a Content-Security-Policy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from qianbao.demo import DEMO_PASSWORD, DEMO_PIN, DEMO_USERS
from tests.support.api import make_settings


def page_client(tmp_path: Path, **overrides: Any) -> TestClient:
    """The app without its lifespan: the pages need no database."""
    settings = make_settings(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path / "var", **overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def sandbox(tmp_path: Path) -> TestClient:
    return page_client(tmp_path, seed_demo_data=True)


def test_the_start_page_is_html_and_links_the_api_docs(sandbox: TestClient) -> None:
    response = sandbox.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    for link in ("/docs", "/redoc", "/openapi.json", "/healthz"):
        assert f'href="{link}"' in response.text
    assert "docs/api.md" in response.text and "README.md" in response.text


def test_the_start_page_runs_no_script_and_has_a_content_security_policy(sandbox: TestClient) -> None:
    response = sandbox.get("/")
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self'") and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in response.text
    assert re.search(r"<[^>]*\son\w+=", response.text) is None  # no inline event handlers either


def test_the_sandbox_start_page_lists_the_demo_users(sandbox: TestClient) -> None:
    text = sandbox.get("/").text
    for demo in DEMO_USERS:
        assert demo.phone in text and demo.label in text
    assert DEMO_PASSWORD in text and DEMO_PIN in text
    assert "¥5,000.00" in text and "李记面馆" in text


@pytest.mark.parametrize("overrides", [{"env": "production"}, {"env": "sandbox", "seed_demo_data": False}])
def test_no_demo_credentials_where_there_are_no_demo_users(tmp_path: Path, overrides: dict[str, Any]) -> None:
    text = page_client(tmp_path, **overrides).get("/").text
    assert DEMO_PASSWORD not in text and DEMO_PIN not in text
    assert not any(demo.phone in text for demo in DEMO_USERS)
    assert 'href="/docs"' in text


def test_production_says_so_and_mentions_no_sandbox_routes(tmp_path: Path) -> None:
    text = page_client(tmp_path, env="production").get("/").text
    assert "production mode" in text and "/v1/sandbox" not in text


@pytest.mark.parametrize(
    ("header", "language", "heading"),
    [
        (None, "en", "API documentation"),
        ("en-GB,en;q=0.9", "en", "API documentation"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN", "API 文档"),
        ("zh-TW", "zh-CN", "API 文档"),
        ("fr", "en", "API documentation"),
    ],
)
def test_the_language_follows_accept_language(
    sandbox: TestClient, header: str | None, language: str, heading: str
) -> None:
    response = sandbox.get("/", headers={"Accept-Language": header} if header else {})
    assert f'<html lang="{language}">' in response.text and heading in response.text
    assert "Accept-Language" in response.headers["vary"]


def test_the_language_switch_overrides_accept_language(sandbox: TestClient) -> None:
    chinese = sandbox.get("/?lang=zh-CN", headers={"Accept-Language": "en"}).text
    assert '<html lang="zh-CN">' in chinese and "演示用户" in chinese
    assert 'href="/?lang=en"' in chinese
    english = sandbox.get("/?lang=en", headers={"Accept-Language": "zh-CN"}).text
    assert '<html lang="en">' in english and 'href="/?lang=zh-CN"' in english
    unknown = sandbox.get("/?lang=xx", headers={"Accept-Language": "zh-CN"})
    assert unknown.status_code == 200 and '<html lang="zh-CN">' in unknown.text


def test_the_page_assets_are_served(sandbox: TestClient) -> None:
    assets = re.findall(r'<link [^>]*href="([^"]+)"', sandbox.get("/").text)
    assert sorted(assets) == ["/static/favicon.svg", "/static/start.css"]
    for asset in assets:
        response = sandbox.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"].split(";")[0] in ("text/css", "image/svg+xml"), asset


def test_an_unknown_page_is_still_a_problem(sandbox: TestClient) -> None:
    response = sandbox.get("/no-such-page")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        ({"host": "0.0.0.0", "port": 9000}, "http://127.0.0.1:9000"),  # noqa: S104
        ({"host": "::", "port": 9000}, "http://[::1]:9000"),
        ({"host": "0.0.0.0", "public_url": "https://wallet.example"}, None),  # noqa: S104
        ({"host": "127.0.0.1"}, None),
    ],
)
def test_a_wildcard_host_without_a_public_url_says_other_machines_need_one(
    tmp_path: Path, overrides: dict[str, Any], shown: str | None
) -> None:
    client = page_client(tmp_path, **overrides)
    english = client.get("/?lang=en").text
    chinese = client.get("/?lang=zh-CN").text
    for text in (english, chinese):
        assert ("QIANBAO_PUBLIC_URL" in text) is (shown is not None)
    if shown is not None:
        assert f"calls {shown}: to use it from other machines" in english
        assert f"会调用 {shown}" in chinese

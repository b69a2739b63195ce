"""`/docs` (Swagger UI) and `/redoc` (Redoc) load nothing from elsewhere: their assets are vendored in the
package (pinned, with licences, checked against VENDORED.md) and served by the app, so the pages work
offline, under a Content-Security-Policy without inline scripts."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from qianbao.web.assets import VENDORED
from tests.support.api import make_settings

PAGES = ("/docs", "/redoc")
VENDOR = Path(str(files("qianbao.web") / "static" / "vendor"))
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """The app without its lifespan: the pages need no database."""
    return TestClient(create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path / "var")))


def referenced(html: str) -> list[str]:
    return re.findall(r'(?:src|href|spec-url|data-openapi-url)="([^"]*)"', html)


@pytest.mark.parametrize("page", PAGES)
def test_the_docs_pages_reference_only_same_origin_assets_and_all_are_served(
    client: TestClient, page: str
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    urls = referenced(response.text)
    assert "/openapi.json" in urls and any(url.endswith(".js") for url in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        expected = CONTENT_TYPES.get(Path(url).suffix, "application/json")
        assert asset.headers["content-type"].split(";")[0] == expected, url


@pytest.mark.parametrize("page", ["/", *PAGES])
def test_no_page_names_a_cdn(client: TestClient, page: str) -> None:
    text = client.get(page).text
    for host in ("cdn.jsdelivr.net", "unpkg.com", "fonts.googleapis.com", "cdn.redoc.ly", "://"):
        assert host not in text, (page, host)


@pytest.mark.parametrize("page", PAGES)
def test_the_docs_pages_run_no_inline_script(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", response.text) == []
    policy = dict(
        part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert "script-src" not in policy  # scripts fall back to default-src 'self': no inline, no eval
    assert policy["connect-src"] == "'self' http://127.0.0.1:8000"


def test_swagger_ui_never_sends_the_document_to_the_public_validator(client: TestClient) -> None:
    initializer = client.get("/static/swagger-init.js").text
    assert "validatorUrl: null" in initializer


def test_fastapis_cdn_pages_are_gone(client: TestClient) -> None:
    assert client.get("/docs/oauth2-redirect").status_code == 404


def manifest() -> dict[str, dict[str, str]]:
    """VENDORED.md: for each `## <name> <version>` section, file → sha256."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in (VENDOR / "VENDORED.md").read_text().splitlines():
        if heading := re.fullmatch(r"## (\S+) (\S+)", line):
            current = sections.setdefault(f"{heading[1]}-{heading[2]}", {})
        elif row := re.fullmatch(r"\| `([^`]+)` \| \d+ \| ([0-9a-f]{64}) \|", line):
            current[row[1]] = row[2]
    return sections


def test_the_vendored_files_are_exactly_the_pinned_ones_with_their_licences() -> None:
    sections = manifest()
    assert sorted(sections) == sorted(package.folder for package in VENDORED)
    assert sorted(p.name for p in VENDOR.iterdir() if p.is_dir()) == sorted(sections)
    for package in VENDORED:
        folder = VENDOR / package.folder
        on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        assert on_disk == sorted(package.files) == sorted(sections[package.folder])
        assert "LICENSE" in package.files
        for file, sha256 in sections[package.folder].items():
            assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == sha256, (package.folder, file)

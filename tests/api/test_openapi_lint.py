"""The OpenAPI document is lint clean for integrators: Spectral's standard ruleset (`spectral:oas`, as
`.spectral.yaml` says) finds nothing, not even a hint, in sandbox and in production mode.

Spectral is a Node program, pinned in tools/spectral/ and installed there by `make spectral` (part of
`make test`). Without it the Spectral test is skipped, except with CI=true, where it fails. The rules
that found something before are also checked here directly, so a machine without npm still catches them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qianbao.api.app import create_app
from qianbao.api.openapi import TAGS
from qianbao.config import Settings
from tests.support.api import make_settings

ROOT = Path(__file__).resolve().parents[2]
SPECTRAL = ROOT / "tools" / "spectral" / "node_modules" / ".bin" / "spectral"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def settings_for(tmp_path: Path, env: str = "sandbox", **overrides: Any) -> Settings:
    return make_settings(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path / "var", env=env, **overrides)


def openapi_document(settings: Settings) -> dict[str, Any]:
    """What /openapi.json serves (built without starting the app: no database needed)."""
    return create_app(settings).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


@pytest.mark.parametrize("env", ["sandbox", "production"])
def test_spectral_finds_nothing_in_the_openapi_document(tmp_path: Path, env: str) -> None:
    if not SPECTRAL.exists():
        message = (
            f"Spectral is not installed at {SPECTRAL.relative_to(ROOT)}: run `make spectral` (needs npm)"
        )
        if IN_CI:
            pytest.fail(message + " (CI=true: the OpenAPI lint must run)")
        pytest.skip(message)
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(openapi_document(settings_for(tmp_path, env))))
    findings_file = tmp_path / "findings.json"
    result = subprocess.run(
        [
            str(SPECTRAL), "lint", str(document), "--ruleset", str(ROOT / ".spectral.yaml"),
            "--format", "json", "--output", str(findings_file), "--fail-severity", "hint",
        ],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert findings_file.exists(), result.stderr
    findings = json.loads(findings_file.read_text())
    readable = [f"{f['code']} at {'.'.join(map(str, f['path']))}: {f['message']}" for f in findings]
    assert readable == []
    assert result.returncode == 0, result.stderr


def test_every_tag_is_defined_with_a_description_and_every_operation_has_one(tmp_path: Path) -> None:
    document = openapi_document(settings_for(tmp_path))
    defined = {tag["name"]: tag.get("description", "") for tag in document["tags"]}
    assert all(description.strip() for description in defined.values())
    assert [tag["name"] for tag in document["tags"]] == [name for name, _ in TAGS]  # sandbox uses all
    for method, path, operation in operations(document):
        assert len(operation.get("tags", [])) == 1 and operation["tags"][0] in defined, (method, path)


def test_every_operation_has_a_description(tmp_path: Path) -> None:
    document = openapi_document(settings_for(tmp_path))
    missing = [
        f"{m.upper()} {p}" for m, p, op in operations(document) if not op.get("description", "").strip()
    ]
    assert missing == []


def test_production_document_defines_only_the_tags_it_uses(tmp_path: Path) -> None:
    document = openapi_document(settings_for(tmp_path, "production"))
    used = {tag for _, _, operation in operations(document) for tag in operation["tags"]}
    assert {tag["name"] for tag in document["tags"]} == used
    assert "sandbox" not in used


def test_servers_contact_and_licence(tmp_path: Path) -> None:
    document = openapi_document(settings_for(tmp_path))
    assert document["servers"] == [
        {"url": "http://127.0.0.1:8000", "description": "this qianbao server (sandbox)"}
    ]
    assert document["info"]["contact"] == {"name": "qianbao", "url": "http://127.0.0.1:8000/"}
    assert document["info"]["license"] == {"name": "Apache-2.0", "identifier": "Apache-2.0"}


def test_servers_and_contact_are_configurable(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, "production", public_url="https://wallet.bank.test/", api_contact_email="api@bank.test"
    )
    document = openapi_document(settings)
    assert document["servers"] == [
        {"url": "https://wallet.bank.test", "description": "this qianbao server (production)"}
    ]
    assert document["info"]["contact"] == {
        "name": "qianbao",
        "url": "https://wallet.bank.test/",
        "email": "api@bank.test",
    }


WILDCARDS = [("0.0.0.0", "http://127.0.0.1:9000"), ("::", "http://[::1]:9000")]  # noqa: S104


@pytest.mark.parametrize(("host", "url"), WILDCARDS)
def test_a_wildcard_listen_address_is_listed_as_the_loopback(tmp_path: Path, host: str, url: str) -> None:
    document = openapi_document(settings_for(tmp_path, host=host, port=9000))
    assert document["servers"][0]["url"] == url


@pytest.mark.parametrize(
    "public_url", ["ftp://x.test", "wallet.bank.test", "https://x.test/?a=1", "https://"]
)
def test_a_public_url_that_is_not_an_http_base_url_is_refused(tmp_path: Path, public_url: str) -> None:
    with pytest.raises(ValueError, match="public_url"):
        settings_for(tmp_path, public_url=public_url)


def test_docs_api_md_lists_every_tag_in_order() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("\n### The OpenAPI document\n", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \| ", section, re.MULTILINE)
    assert rows == [name for name, _ in TAGS]

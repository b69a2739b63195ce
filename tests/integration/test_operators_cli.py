"""`qianbao operators`: create (password from stdin, TOTP printed once), list, disable; the new operator can
then sign in to the API with the printed secret."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from qianbao.api.app import create_app
from qianbao.cli.main import app
from qianbao.identity.totp import totp_code
from tests.support.api import make_settings

runner = CliRunner()
PASSWORD = "Granite-Orchard-58"  # noqa: S105 - a test password


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI reads settings from the environment: same key file as the app below, cheap hashing."""
    var = tmp_path / "var"
    monkeypatch.setenv("QIANBAO_VAR_DIR", str(var))
    for name, value in (("TIME_COST", "1"), ("MEMORY_KIB", "8"), ("PARALLELISM", "1")):
        monkeypatch.setenv(f"QIANBAO_ARGON2_{name}", value)
    return var


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ops.db'}"  # empty: the command migrates it


def create(database_url: str, *args: str, password: str = PASSWORD) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["operators", "create", *args, "--password-stdin", "--database-url", database_url],
        input=password + "\n",
    )
    return result.exit_code, result.output


def test_create_prints_totp_once_and_the_operator_can_sign_in(var_dir: Path, database_url: str) -> None:
    code, output = create(
        database_url, "ops.wang", "--name", "Wang Fang", "--role", "admin", "--role", "finance"
    )
    assert code == 0, output
    uri = re.search(r"otpauth://\S+", output)
    assert uri is not None, output
    parsed = urlparse(uri.group(0))
    secret = parse_qs(parsed.query)["secret"][0]
    assert "ops.wang" in parsed.path and f"secret: {secret}" in output
    assert PASSWORD not in output

    listed = runner.invoke(app, ["operators", "list", "--database-url", database_url])
    assert listed.exit_code == 0 and "ops.wang" in listed.output and "active" in listed.output

    with TestClient(
        create_app(make_settings(database_url, var_dir)), raise_server_exceptions=False
    ) as client:
        body = {"username": "ops.wang", "password": PASSWORD, "totp_code": "000000"}
        if totp_code(secret, time.time()) == "000000":
            body["totp_code"] = "111111"
        assert client.post("/v1/operator/sessions", json=body).status_code == 401
        body["totp_code"] = totp_code(secret, time.time())
        r = client.post("/v1/operator/sessions", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["roles"] == ["finance", "admin"]
        token = r.json()["token"]
        assert client.get("/v1/operator/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200

        disabled = runner.invoke(app, ["operators", "disable", "ops.wang", "--database-url", database_url])
        assert disabled.exit_code == 0, disabled.output
        assert client.get("/v1/operator/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_weak_passwords_duplicates_and_unknown_roles_are_refused(var_dir: Path, database_url: str) -> None:
    code, output = create(database_url, "ops.li", "--name", "Li", "--role", "support", password="password")  # noqa: S106 - a weak password on purpose
    assert code == 2 and "weak_password" in output
    code, output = create(database_url, "ops.li", "--name", "Li", "--role", "janitor")
    assert code == 2 and "unknown role" in output
    code, output = create(database_url, "ops.li", "--name", "Li", "--role", "support")
    assert code == 0, output
    code, output = create(database_url, "ops.li", "--name", "Li", "--role", "support")
    assert code == 2 and "already exists" in output
    missing = runner.invoke(app, ["operators", "disable", "nobody", "--database-url", database_url])
    assert missing.exit_code == 2 and "not_found" in missing.output

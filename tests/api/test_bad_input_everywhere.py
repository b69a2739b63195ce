"""Bad input on every endpoint of the OpenAPI document: a problem+json with a stable code, never a 500,
and nothing written.

The endpoints are read from `/openapi.json`, so a new endpoint is covered the day it appears.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

from qianbao.api.problems import STATUS_BY_CODE
from qianbao.config import Settings
from qianbao.store.schema import metadata
from tests.support.api import SignedUp
from tests.support.messages import assert_helpful

# Tables that may legitimately change on a refused request: failures are audited and idempotency claims
# are released again (the count is compared, so a claim left behind would still show).
MAY_GROW = {"audit_events"}
HUGE = "x" * 100_000
WRONG_VALUES: list[Any] = [None, 12, -1, 1.5, True, "", HUGE, [], {}, "\x00", "💥" * 50]


def operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    document = client.get("/openapi.json").json()
    found = []
    for path, methods in document["paths"].items():
        for method, spec in methods.items():
            if path == "/healthz" or method == "get" and path == "/v1/sandbox/messages":
                continue
            found.append((method.upper(), path, spec))
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "zz_does_not_exist", path)


def body_schema(document: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    content = spec.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = content.get("schema", {})
    ref = schema.get("$ref")
    if ref:
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return dict(schema)


def row_counts(settings: Settings) -> dict[str, int]:
    engine = create_engine(settings.database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            names = set(metadata.tables)
            return {
                name: int(conn.execute(select(func.count()).select_from(text(name))).scalar_one())
                for name in sorted(names - MAY_GROW)
            }
    finally:
        engine.dispose()


def assert_problem(response: Any, context: str) -> None:
    assert response.status_code < 500, f"{context}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), context
        body = response.json()
        assert body["code"] in STATUS_BY_CODE, f"{context}: unknown code {body['code']}"
        assert body["user_message"] and body["detail"] is not None, context


def test_every_endpoint_refuses_bad_input_cleanly(
    client: TestClient, alice: SignedUp, settings: Settings
) -> None:
    document = client.get("/openapi.json").json()
    before = row_counts(settings)
    tried = 0
    for method, path, spec in operations(client):
        url = concrete(path)
        context = f"{method} {path}"
        for headers in ({}, alice.auth):
            # Not JSON at all, and JSON of the wrong shape.
            for raw in (b"not json", b"[1, 2, 3]", b'{"unexpected": {"deeply": [1, {}]}}', b"\xff\xfe"):
                response = client.request(
                    method, url, content=raw, headers={**headers, "Content-Type": "application/json"}
                )
                assert_problem(response, context)
                tried += 1
            # Every declared field with every wrong value in turn (other fields absent).
            schema = body_schema(document, spec)
            for field in schema.get("properties", {}):
                for value in WRONG_VALUES:
                    response = client.request(method, url, json={field: value}, headers=headers)
                    assert_problem(response, f"{context} {field}={str(value)[:20]!r}")
                    tried += 1
    assert tried > 100
    assert row_counts(settings) == before


@pytest.mark.parametrize("header", ["Bearer", "Bearer qbs_forged", "Basic abc", "Bearer " + "x" * 5000])
def test_forged_credentials_are_401(client: TestClient, header: str) -> None:
    response = client.get("/v1/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_nul_characters_in_ids_and_text_are_refused_not_500(client: TestClient, alice: SignedUp) -> None:
    """PostgreSQL text cannot hold NUL: such input is refused at the door on both databases."""
    for method, path, _spec in operations(client):
        if "{" not in path:
            continue
        url = re.sub(r"\{[^}]+\}", "a%00b", path)
        for headers in ({}, alice.auth):
            response = client.request(method, url, json={}, headers=headers)
            assert response.status_code == 404, f"{method} {path}: {response.text[:200]}"
    passkey = client.post("/v1/sessions/passkey", json={"ceremony_id": "a\x00b", "credential": {}})
    assert passkey.status_code == 422 and passkey.json()["code"] == "validation_error"
    query = client.get("/v1/me/security-events", params={"cursor": "1\x002"}, headers=alice.auth)
    assert query.status_code == 422


# Wrong values whose refusal is about the value itself: a wrong type, empty, far too long.
SWEEP_VALUES: list[Any] = [12, "", HUGE, {"nested": True}]


def test_every_refusal_says_which_field_and_what_is_wrong_in_both_languages(
    client: TestClient, alice: SignedUp
) -> None:
    """Bad input anywhere gets a `user_message` naming the field and what is wrong with it, in Chinese
    without English sentences and in English: never the generic "some of the information is not valid"."""
    document = client.get("/openapi.json").json()
    checked = 0
    for method, path, spec in operations(client):
        url = concrete(path)
        for field in body_schema(document, spec).get("properties", {}):
            for value in SWEEP_VALUES:
                for language in ("zh-CN", "en"):
                    headers = {**alice.auth, "Accept-Language": language}
                    response = client.request(method, url, json={field: value}, headers=headers)
                    if response.status_code != 422 or response.json()["code"] != "validation_error":
                        continue
                    context = f"{method} {path} {field}={str(value)[:20]!r} ({language})"
                    assert_helpful(response.json(), language, context)
                    checked += 1
    assert checked > 300

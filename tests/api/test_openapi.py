"""The OpenAPI document tells integrators how to authenticate and what errors look like."""

from __future__ import annotations

from fastapi.testclient import TestClient

from qianbao.api.openapi import PUBLIC


def test_every_operation_declares_problem_errors_and_who_may_call_it(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["session"]["scheme"] == "bearer" and schemes["signedApiKey"]["name"] == "Qianbao-Key"
    assert "HTTPValidationError" not in document["components"]["schemas"]
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    operations = [(m, p, op) for p, ops in document["paths"].items() for m, op in ops.items()]
    assert len(operations) > 100
    for method, path, operation in operations:
        for status in ("401", "404", "422", "429"):
            content = operation["responses"][status]["content"]
            assert content["application/problem+json"]["schema"] == problem_ref, (method, path, status)
        assert ("security" in operation) == ((method, path) not in PUBLIC), (method, path)


def test_public_operations_exist(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for method, path in PUBLIC:
        assert method in paths[path], (method, path)

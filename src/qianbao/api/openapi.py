"""The OpenAPI document as integrators need it: how to authenticate, and what errors really look like.

FastAPI generates paths and schemas from the routes; on its own it declares no security schemes and
describes validation errors with its default `{"detail": [...]}` shape, which is not what qianbao answers.
This adds the three ways in (bearer session token, web session cookie, signed API key), the problem+json
schema, and the error answers every operation can give (401, 403, 404, 409, 422, 423, 429), replacing the
default 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from qianbao.api.deps import SESSION_COOKIE
from qianbao.security.request_signing import HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; `code` is stable (docs/errors.md lists every one).",
    "required": ["type", "title", "status", "detail", "code", "user_message"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "technical, English"},
        "code": {"type": "string", "description": "stable snake_case error code"},
        "user_message": {"type": "string", "description": "for people, in zh-CN or en (Accept-Language)"},
        "next_step": {"type": "string", "description": "what to do next, as a stable code"},
        "next_step_message": {"type": "string"},
        "support_reference": {"type": "string", "description": "quote it to support"},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "validation details"},
    },
    "additionalProperties": True,
}
ERRORS = {
    "401": "`unauthenticated`, or `step_up_required` (with `challenge_id` and `methods`)",
    "403": "`forbidden`: authenticated, but not allowed (an API key without the scope)",
    "404": "`not_found`: does not exist, or is not yours",
    "409": "a conflict: `idempotency_key_reused`, a state that does not allow this",
    "422": "`validation_error` or a business decline (`insufficient_funds`, limits …)",
    "423": "locked or frozen: `wallet_frozen`, `wallet_locked`, `pin_locked`, `merchant_inactive`",
    "429": "`rate_limited`, with `Retry-After`",
}
SECURITY_SCHEMES = {
    "session": {
        "type": "http",
        "scheme": "bearer",
        "description": "A session token from `POST /v1/sessions`: `Authorization: Bearer qbs_…`.",
    },
    "webSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The web app's session cookie; state changes also need the `X-CSRF-Token` header.",
    },
    "signedApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": HEADER_KEY,
        "description": (
            f"An API key id; every request also carries {HEADER_TIMESTAMP}, {HEADER_NONCE} and "
            f"{HEADER_SIGNATURE} (HMAC-SHA256 of the canonical request, see docs/security.md)."
        ),
    },
}
PUBLIC = {
    ("post", "/v1/verifications"),
    ("post", "/v1/users"),
    ("post", "/v1/sessions"),
    ("post", "/v1/sessions/passkey"),
    ("post", "/v1/sessions/passkey/options"),
    ("post", "/v1/operator/sessions"),
    ("get", "/v1/sandbox/messages"),
    ("post", "/v1/recovery/phone"),
    ("post", "/v1/recovery/phone/confirm"),
    ("post", "/v1/recovery/password"),
    ("get", "/healthz"),
}


def _describe(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM
    components["securitySchemes"] = SECURITY_SCHEMES
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                if status == "422" or status not in responses:
                    responses[status] = {"description": description, "content": problem}
            if (method, path) not in PUBLIC:
                operation["security"] = [{"session": []}, {"webSession": []}, {"signedApiKey": []}]
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return document


def install(app: FastAPI) -> None:
    """Serve the described document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = _describe(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

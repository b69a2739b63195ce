"""The OpenAPI document as integrators need it: how to authenticate, and what errors really look like.

FastAPI generates paths and schemas from the routes; on its own it declares no security schemes and
describes validation errors with its default `{"detail": [...]}` shape, which is not what qianbao answers.
This adds the three ways in (bearer session token, web session cookie, signed API key), the problem+json
schema, and the error answers every operation can give (401, 403, 404, 409, 422, 423, 429), replacing the
default 422. It also declares what generators and linters look for (Spectral's `spectral:oas` ruleset, run
by `tests/api/test_openapi_lint.py`): the server's base URL, a contact, the licence, and every tag with a
description, in the order the interactive docs show them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from qianbao.api.deps import SESSION_COOKIE
from qianbao.config import Settings
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


# Every operation has exactly one of these tags (a test checks); a tag used by no route of this server (the
# sandbox's in production) is left out of the document.
TAGS: tuple[tuple[str, str], ...] = (
    (
        "identity",
        "Sign-up, sessions (sign-in and out), the signed-in user, the PIN and password, and "
        "step-up challenges (`401 step_up_required`).",
    ),
    ("second-factors", "TOTP with recovery codes, and passkeys (WebAuthn), also for passwordless sign-in."),
    ("recovery", "Changing the phone number, and recovering an account after losing it or the password."),
    ("kyc", "KYC tiers 4 → 1 and the limits of each; operators review the applications for tier 1."),
    (
        "wallets",
        "Wallets and sub-wallets (budgets, goals, locks, closing), transfers between wallets and "
        "to phone numbers, and history with filters and CSV export.",
    ),
    ("money-requests", "Asking someone for money; the payer accepts (a transfer) or declines."),
    ("qr-codes", "Parsing EMVCo QR payloads, reading QR codes from images, and personal receive codes."),
    (
        "merchants",
        "Merchants (a business and its wallet), their static and dynamic QR codes, and their payments.",
    ),
    ("payments", "Paying a merchant by QR code, reading payments, and refunds."),
    (
        "payment-codes",
        "Customer payment codes (付款码): devices that show them, the password-free allowance, "
        "tills charging a code, and confirming held payments.",
    ),
    ("checkout", "Online checkout: a merchant's server creates a payment intent, the customer pays it."),
    ("api-keys", "API keys for partners' servers, with scopes; requests made with them are signed (HMAC)."),
    ("webhooks", "Webhook endpoints, signed deliveries with retries, and their delivery log."),
    ("events", "The event feed: the same events as webhooks, to poll."),
    ("notifications", "In-app notifications about money in and out, payments, budgets and security."),
    (
        "operators",
        "The deploying bank's staff: operator sessions, customers and merchants (freeze, "
        "suspend, reveal), the audit log, and maker-checker approvals.",
    ),
    ("sandbox", "Sandbox mode only (absent in production): the SMS and e-mails the server would have sent."),
    ("operations", "Health and readiness, for load balancers and monitoring."),
)
LICENSE = {"name": "Apache-2.0", "identifier": "Apache-2.0"}


# A wildcard listen address, and the loopback address it is reached at from this machine.
WILDCARD_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def server_url(settings: Settings) -> str:
    """The base URL clients reach this server at: `public_url`, else the address `qianbao serve` listens
    on (a wildcard address is reached on the loopback)."""
    if settings.public_url is not None:
        return settings.public_url.rstrip("/")
    host = WILDCARD_LOOPBACK.get(settings.host, settings.host)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def server_url_is_loopback_stand_in(settings: Settings) -> bool:
    """The server listens on every interface, but its URL is the loopback: other machines reach it, yet
    "Try it out" from their browsers calls their own loopback until `public_url` says where it is."""
    return settings.public_url is None and settings.host in WILDCARD_LOOPBACK


def _contact(settings: Settings) -> dict[str, str]:
    contact = {"name": "qianbao", "url": f"{server_url(settings)}/"}
    if settings.api_contact_email is not None:
        contact["email"] = settings.api_contact_email
    return contact


def _tags(document: dict[str, Any]) -> list[dict[str, str]]:
    used = {
        tag
        for operations in document.get("paths", {}).values()
        for op in operations.values()
        for tag in op.get("tags", ())
    }
    return [{"name": name, "description": description} for name, description in TAGS if name in used]


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


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the described document at /openapi.json (built once, on first request)."""
    mode = "sandbox" if settings.is_sandbox else "production"

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                servers=[{"url": server_url(settings), "description": f"this qianbao server ({mode})"}],
                contact=_contact(settings),
                license_info=LICENSE,
            )
            document["tags"] = _tags(document)
            app.openapi_schema = _describe(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

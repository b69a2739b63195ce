"""RFC 9457 problem+json responses, localized in zh-CN and en.

The codes, their HTTP status and default next step come from the registry (`qianbao.error_codes`); the
texts from the gettext catalogs (`qianbao.error_messages`). Besides the RFC fields, `code` and
`user_message`, a problem says what to do next (`next_step`, `next_step_message`) and gives the user a
`support_reference` to quote: the transfer or payment id when the operation has one, else the request id
(also sent as `X-Request-Id` on every response). docs/errors.md lists them all.

`user_message` is the error's specific message when it carries one (`QianbaoError.user_text`), else, for
bad input naming a `field`, the generic "this field is not valid" one, else the code's message. Request
bodies and parameters that fail schema validation are described by `qianbao.api.request_errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qianbao.api.request_errors import describe_validation_errors, route_labels
from qianbao.error_codes import ERROR_CODES, lookup
from qianbao.error_messages import negotiate_language, next_step_message, specific_message, user_message
from qianbao.errors import QianbaoError, UserText
from qianbao.ids import new_id

log = logging.getLogger(__name__)

# Derived from the registry; other modules (and tests) import it.
STATUS_BY_CODE: dict[str, int] = {entry.code: entry.status for entry in ERROR_CODES}

REQUEST_ID_HEADER = "X-Request-Id"
# Extras that name the operation itself, in order of preference, for the support reference.
REFERENCE_FIELDS = ("payment_id", "refund_id", "transfer_id", "charge_id", "payment_intent_id", "intent_id")
# Extras that tell until when something is locked (the `{until}` of a next-step message).
UNTIL_FIELDS = ("locked_until", "locked_until_us")


class RequestIdMiddleware:
    """Gives every HTTP request an id (`request.state.request_id`) and answers it in `X-Request-Id`.

    Always minted here, never taken from the client: it is what support looks up in the logs, so
    nobody else may choose it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER.lower() not in headers:
                    headers.append(REQUEST_ID_HEADER, request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str:
    """This request's id; outside the middleware (a bare Request in a test) a fresh one, kept."""
    state = request.scope.setdefault("state", {})
    found = state.get("request_id")
    if not isinstance(found, str):
        found = state["request_id"] = new_id("req")
    return found


def language(request: Request) -> str:
    return negotiate_language(request.headers.get("accept-language"))


def support_reference(request: Request, extra: Mapping[str, Any]) -> str:
    for field in REFERENCE_FIELDS:
        value = extra.get(field)
        if isinstance(value, str) and value:
            return value
    return request_id(request)


# Bad input that names its field but no more specific message still says which field is wrong.
FIELD_INVALID = UserText("validation_error", "invalid")
# A body nested deeper than the JSON parser goes (about a thousand levels), though under the size limit.
JSON_TOO_DEEP = UserText("validation_error", "json_too_deep")


def problem(
    request: Request,
    code: str,
    detail: str,
    status: int | None = None,
    *,
    user_text: UserText | None = None,
    **extra: Any,
) -> JSONResponse:
    entry = lookup(code)
    status = status or (entry.status if entry is not None else 422)
    lang = language(request)
    reference = support_reference(request, extra)
    body: dict[str, Any] = {
        "type": f"https://qianbao.dev/problems/{code}",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        "user_message": localized_message(
            code, lang, status, user_text, extra.get("field"), route_labels(request)
        ),
        **extra,
    }
    # The error's own next step (it knows more, e.g. that no higher KYC tier exists) wins.
    step = extra["next_step"] if "next_step" in extra else (entry.next_step if entry is not None else None)
    if isinstance(step, str):
        body["next_step"] = step
        until = next((extra[field] for field in UNTIL_FIELDS if extra.get(field) is not None), None)
        message = next_step_message(step, lang, reference=reference, until=until)
        if message is not None:
            body.setdefault("next_step_message", message)
    body.setdefault("support_reference", reference)
    log.info(
        "problem %s (%d) on %s %s, reference %s", code, status, request.method, request.url.path, reference
    )
    response = JSONResponse(body, status_code=status, media_type="application/problem+json")
    # Set here too: a 500 is answered outside the middleware.
    response.headers[REQUEST_ID_HEADER] = request_id(request)
    return response


def localized_message(
    code: str,
    lang: str,
    status: int,
    user_text: UserText | None,
    field: object,
    labels: Mapping[str, str] | None = None,
) -> str:
    """The error's specific message in `lang`, else the generic one for its field, else its code's.
    `labels` are the route's own field labels."""
    if user_text is None and code == "validation_error" and isinstance(field, str) and field:
        user_text = FIELD_INVALID
    if user_text is not None:
        specific = specific_message(user_text, lang, field=field, labels=labels)
        if specific is not None:
            return specific
    return user_message(code, lang, status)


def install_problem_handlers(app: FastAPI) -> None:
    # The request id belongs with the problems: it is the support reference of most of them.
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(QianbaoError)
    async def _domain(request: Request, exc: QianbaoError) -> JSONResponse:
        response = problem(request, exc.code, exc.detail, user_text=exc.user_text, **exc.extra)
        retry_after = exc.extra.get("retry_after")
        if isinstance(retry_after, int):
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        described = describe_validation_errors(
            exc.errors(),
            language(request),
            request.headers.get("content-type"),
            body=exc.body,
            labels=route_labels(request),
        )
        return problem(
            request,
            "validation_error",
            described.detail,
            user_text=described.user_text,
            errors=described.errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # FastAPI answers a body its JSON parser gave up on with 400; bad input is 422 here.
            return problem(
                request,
                "validation_error",
                "the JSON body is nested too deeply to be read",
                user_text=JSON_TOO_DEEP,
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "validation_error")
        return problem(request, code, str(exc.detail), status=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
        return problem(request, "internal_error", "an unexpected error occurred", status=500)

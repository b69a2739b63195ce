"""RFC 9457 problem+json responses: one table maps error codes to HTTP status, messages in zh-CN and en."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qianbao.errors import QianbaoError

STATUS_BY_CODE: dict[str, int] = {
    "validation_error": 422,
    "not_found": 404,
    "conflict": 409,
    "idempotency_key_reused": 409,
    "method_not_allowed": 405,
    "service_unavailable": 503,
    "internal_error": 500,
}

# What a person can read; `detail` stays technical and English for integrators.
USER_MESSAGES: dict[str, dict[str, str]] = {
    "validation_error": {"en": "Some of the information is not valid.", "zh-CN": "提交的信息有误。"},
    "not_found": {"en": "We couldn't find that.", "zh-CN": "找不到该内容。"},
    "conflict": {"en": "That can't be done right now.", "zh-CN": "当前无法完成该操作。"},
    "idempotency_key_reused": {
        "en": "This request was already sent with different details.",
        "zh-CN": "该请求已使用不同的内容提交过。",
    },
    "method_not_allowed": {"en": "That action isn't supported here.", "zh-CN": "不支持该操作。"},
    "service_unavailable": {
        "en": "The service is busy. Please try again shortly.",
        "zh-CN": "服务繁忙，请稍后再试。",
    },
    "internal_error": {
        "en": "Something went wrong on our side. Please try again later.",
        "zh-CN": "系统出现问题，请稍后再试。",
    },
}


def language(request: Request) -> str:
    header = request.headers.get("accept-language", "")
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"


def problem(
    request: Request, code: str, detail: str, status: int | None = None, **extra: Any
) -> JSONResponse:
    status = status or STATUS_BY_CODE.get(code, 422)
    messages = (
        USER_MESSAGES.get(code) or USER_MESSAGES["validation_error" if status < 500 else "internal_error"]
    )
    body = {
        "type": f"https://qianbao.dev/problems/{code}",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        "user_message": messages[language(request)],
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(QianbaoError)
    async def _domain(request: Request, exc: QianbaoError) -> JSONResponse:
        return problem(request, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return problem(request, "validation_error", "the request is not valid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "validation_error")
        return problem(request, code, str(exc.detail), status=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
        return problem(request, "internal_error", "an unexpected error occurred", status=500)

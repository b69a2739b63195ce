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
    "weak_password": 422,
    "weak_pin": 422,
    "verification_failed": 422,
    "second_factor_invalid": 422,
    "second_factor_required": 422,
    "recovery_not_possible": 422,
    "challenge_invalid": 422,
    "passkey_invalid": 422,
    "passkey_already_registered": 409,
    "unauthenticated": 401,
    "step_up_required": 401,
    "signature_invalid": 401,
    "signature_expired": 401,
    "signature_malformed": 401,
    "signature_replayed": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "pin_locked": 423,
    "wallet_frozen": 423,
    "account_frozen": 423,
    "phone_taken": 409,
    "idempotency_key_in_use": 409,
    "insufficient_funds": 422,
    "currency_mismatch": 422,
    "same_wallet": 422,
    "limit_exceeded_single": 422,
    "limit_exceeded_daily": 422,
    "balance_cap_exceeded": 422,
    "recipient_not_found": 404,
    "risk_declined": 422,
    "kyc_rejected": 422,
    "id_number_in_use": 409,
    "approval_required": 202,
    "not_found": 404,
    "conflict": 409,
    "idempotency_key_reused": 409,
    "method_not_allowed": 405,
    "service_unavailable": 503,
    "internal_error": 500,
}

# What a person can read; `detail` stays technical and English for integrators.
USER_MESSAGES: dict[str, dict[str, str]] = {
    "weak_password": {
        "en": "Choose a longer, less common password (at least 8 characters, not your name or number).",
        "zh-CN": "密码太简单，请设置至少 8 位、不含姓名或手机号的密码。",
    },
    "weak_pin": {
        "en": "That PIN is too easy to guess. Avoid repeated or sequential digits, dates and "
        "your phone number.",
        "zh-CN": "支付密码过于简单，请勿使用重复、连续数字、日期或手机号中的数字。",
    },
    "verification_failed": {
        "en": "The code is wrong or has expired. Request a new code.",
        "zh-CN": "验证码错误或已过期，请重新获取。",
    },
    "second_factor_invalid": {
        "en": "That confirmation was not correct. Try again.",
        "zh-CN": "验证未通过，请重试。",
    },
    "second_factor_required": {
        "en": "Enter the code from your authenticator app, or a recovery code, to continue.",
        "zh-CN": "请输入身份验证器中的动态码或一个恢复码后继续。",
    },
    "recovery_not_possible": {
        "en": "We couldn't verify your identity with these details. Check them, or contact customer "
        "service to recover your account.",
        "zh-CN": "身份核验未通过。请核对信息，或联系客服协助找回账户。",
    },
    "challenge_invalid": {
        "en": "This confirmation has expired or was already used. Start the action again.",
        "zh-CN": "本次验证已失效或已使用，请重新发起操作。",
    },
    "passkey_invalid": {"en": "The passkey could not be verified.", "zh-CN": "通行密钥验证失败。"},
    "passkey_already_registered": {
        "en": "This passkey is already registered.",
        "zh-CN": "该通行密钥已添加，无需重复添加。",
    },
    "unauthenticated": {"en": "Please sign in again.", "zh-CN": "请重新登录。"},
    "step_up_required": {
        "en": "For your security, please confirm it's you to continue.",
        "zh-CN": "为了您的资金安全，请验证身份后继续。",
    },
    "signature_invalid": {"en": "The request signature is not valid.", "zh-CN": "请求签名无效。"},
    "signature_expired": {
        "en": "The request signature has expired. Check your clock and sign again.",
        "zh-CN": "请求签名已过期，请校准时间后重新签名。",
    },
    "signature_malformed": {
        "en": "The request signature headers are malformed.",
        "zh-CN": "请求签名格式错误。",
    },
    "signature_replayed": {
        "en": "This signed request was already received. Sign each request with a new nonce.",
        "zh-CN": "该签名请求已被使用，请为每个请求使用新的随机数重新签名。",
    },
    "forbidden": {"en": "You don't have permission to do that.", "zh-CN": "您没有权限执行该操作。"},
    "rate_limited": {
        "en": "Too many attempts. Please wait a moment and try again.",
        "zh-CN": "操作过于频繁，请稍后再试。",
    },
    "pin_locked": {
        "en": "Your payment PIN is locked after too many wrong attempts. Try again later or reset it.",
        "zh-CN": "支付密码错误次数过多，已被锁定，请稍后再试或重置支付密码。",
    },
    "wallet_frozen": {
        "en": "This wallet is frozen. Contact support for help.",
        "zh-CN": "该钱包已被冻结，请联系客服。",
    },
    "account_frozen": {
        "en": "Your account is frozen. Contact support for help.",
        "zh-CN": "您的账户已被冻结，请联系客服。",
    },
    "phone_taken": {
        "en": "This phone number already has an account. Sign in instead.",
        "zh-CN": "该手机号已注册，请直接登录。",
    },
    "idempotency_key_in_use": {
        "en": "This request is still being processed. Please wait.",
        "zh-CN": "该请求正在处理中，请稍候。",
    },
    "insufficient_funds": {
        "en": "Not enough balance. Top up or lower the amount.",
        "zh-CN": "余额不足，请充值或降低金额。",
    },
    "currency_mismatch": {"en": "The currencies don't match.", "zh-CN": "币种不一致。"},
    "same_wallet": {"en": "Choose a different wallet to pay into.", "zh-CN": "付款和收款钱包不能相同。"},
    "limit_exceeded_single": {
        "en": "This payment is above your single-payment limit. Lower the amount or verify your identity "
        "to raise the limit.",
        "zh-CN": "超过单笔支付限额，请降低金额或完成实名认证以提高限额。",
    },
    "limit_exceeded_daily": {
        "en": "You've reached today's payment limit. Try again tomorrow or verify your identity to raise it.",
        "zh-CN": "已达到今日支付限额，请明天再试或完成实名认证以提高限额。",
    },
    "balance_cap_exceeded": {
        "en": "The receiving wallet can't hold this amount. Lower the amount; for your own wallets, verify "
        "your identity to raise the limit.",
        "zh-CN": "收款钱包超过余额上限，请降低金额；如为本人钱包，可完成实名认证以提高上限。",
    },
    "recipient_not_found": {
        "en": "We couldn't find that recipient. Check the number.",
        "zh-CN": "未找到收款人，请核对号码。",
    },
    "risk_declined": {
        "en": "This payment was declined for your security. Contact support if you need help.",
        "zh-CN": "为保障资金安全，该笔支付未能完成。如需帮助请联系客服。",
    },
    "kyc_rejected": {
        "en": "We couldn't verify your identity with these details. Check them and try again.",
        "zh-CN": "身份信息核验未通过，请核对后重试。",
    },
    "id_number_in_use": {
        "en": "This ID number is already verified on another account. Contact support if it is yours.",
        "zh-CN": "该身份证号已在其他账户完成实名认证，如有疑问请联系客服。",
    },
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
        response = problem(request, exc.code, exc.detail, **exc.extra)
        retry_after = exc.extra.get("retry_after")
        if isinstance(retry_after, int):
            response.headers["Retry-After"] = str(retry_after)
        return response

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

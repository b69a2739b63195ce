"""The start page at `/`: what this server is, how to try it, and where the API documentation is.

Until the web app exists this is what a browser finds at the server's address. It is in Simplified
Chinese or English, by `?lang=` (the page's language switch) or else `Accept-Language`. The demo users'
credentials are shown in sandbox mode only, and only when the demo data is seeded: a production server
never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from qianbao import __version__
from qianbao.api.openapi import server_url, server_url_is_loopback_stand_in
from qianbao.config import Settings
from qianbao.demo import CURRENCY, DEMO_PASSWORD, DEMO_PIN, DEMO_USERS
from qianbao.error_messages import LANGUAGES, negotiate_language
from qianbao.money import Money, format_money
from qianbao.web.assets import static_url
from qianbao.web.rendering import render


@dataclass(frozen=True, slots=True)
class StartText:
    """Every text of the page, once per language (a missing one is a type error)."""

    title: str
    tagline: str
    intro: str
    no_web_app: str
    mode_sandbox: str
    mode_production: str
    version: str
    sandbox_note: str
    demo_heading: str
    demo_intro: str
    demo_columns: tuple[str, str, str, str, str]  # who, phone, password, payment PIN, opening balance
    shop: str  # {owner}, {name}, {mcc}, {city}
    api_heading: str
    swagger: str
    redoc: str
    openapi: str
    healthz: str
    offline: str
    other_machines: str  # {url}: shown when the server listens on every interface and no public URL is set
    docs_heading: str
    docs_intro: str
    documents: tuple[tuple[str, str], ...]  # (file in the repository, what it is)
    switch_label: str


EN = StartText(
    title="qianbao — an open-source digital wallet platform",
    tagline="qianbao (钱包, “wallet”) is an open-source digital wallet platform for banks and fintechs.",
    intro=(
        "Consumers get a wallet with sub-wallets, send money to a phone number, and pay merchants by QR "
        "code, payment code or online checkout. Merchants collect payments, refund and receive signed "
        "webhooks. Underneath is a double-entry ledger that never loses a cent."
    ),
    no_web_app="The web app is not here yet: this server offers the HTTP API, documented below.",
    mode_sandbox="sandbox mode",
    mode_production="production mode",
    version="version",
    sandbox_note=(
        "Nothing leaves this machine in sandbox mode: the SMS codes the server “sent” are listed at "
        "GET /v1/sandbox/messages?to=<phone>, and POST /v1/sandbox/fund adds test money to a wallet."
    ),
    demo_heading="Demo users",
    demo_intro="Sign in with POST /v1/sessions as one of these sandbox users:",
    demo_columns=("who", "phone", "password", "payment PIN", "opening balance"),
    shop="{owner} also owns a shop, {name} (MCC {mcc}, {city}), to try merchant payments on.",
    api_heading="API documentation",
    swagger="Swagger UI: every endpoint, to try from the browser",
    redoc="Redoc: the same reference, to read",
    openapi="the OpenAPI 3.1 document, for client generators and linters",
    healthz="health and readiness",
    offline="These pages work offline: everything they need is served by this server.",
    other_machines=(
        "This server listens on every network interface, but “Try it out” in the API docs calls {url}: "
        "to use it from other machines, set QIANBAO_PUBLIC_URL to the address they reach this server at."
    ),
    docs_heading="Documentation",
    docs_intro="In the qianbao source repository:",
    documents=(
        ("README.md", "what qianbao is, a short tour with curl"),
        ("docs/api.md", "the HTTP API for integrators, with walkthroughs in curl and Python"),
        ("docs/security.md", "sign-in, step-up, limits, API keys and request signing"),
        ("docs/payments.md", "merchants, QR codes, payment codes, checkout and refunds"),
        ("docs/webhooks.md", "events and signed webhooks"),
        ("docs/errors.md", "every error code, with its messages and next step"),
        ("docs/configuration.md", "every setting"),
    ),
    switch_label="中文",
)

ZH = StartText(
    title="钱包 qianbao —— 开源数字钱包平台",
    tagline="钱包（qianbao）是一个开源数字钱包平台，供银行或金融科技公司部署。",
    intro=(
        "用户拥有主钱包和子钱包，可以向手机号转账，用二维码、付款码或在线收银台向商户付款。商户可以收款、"
        "退款并接收签名的 Webhook 通知。底层是一本复式记账总账，一分钱也不会丢。"
    ),
    no_web_app="网页版应用尚未上线：本服务器目前提供 HTTP API，文档见下方。",
    mode_sandbox="沙箱模式",
    mode_production="生产模式",
    version="版本",
    sandbox_note=(
        "沙箱模式下不会向外发送任何消息：服务器“发出”的短信验证码可在 GET /v1/sandbox/messages?to=<手机号> "
        "查看，POST /v1/sandbox/fund 可为钱包充入测试资金。"
    ),
    demo_heading="演示用户",
    demo_intro="可用 POST /v1/sessions 以下列沙箱用户登录：",
    demo_columns=("用户", "手机号", "登录密码", "支付密码", "初始余额"),
    shop="{owner} 还开了一家店：{name}（MCC {mcc}，{city}），可用来体验商户收款。",
    api_heading="API 文档",
    swagger="Swagger UI：所有接口，可在浏览器中直接调用",
    redoc="Redoc：同一份接口参考，便于阅读",
    openapi="OpenAPI 3.1 文档，供客户端代码生成和规范检查工具使用",
    healthz="健康与就绪检查",
    offline="这些页面可离线使用：所需的一切均由本服务器提供。",
    other_machines=(
        "本服务器监听所有网络接口，但 API 文档中的“Try it out”会调用 {url}：若要在其他机器上使用，"
        "请将 QIANBAO_PUBLIC_URL 设为这些机器访问本服务器的地址。"
    ),
    docs_heading="文档",
    docs_intro="位于 qianbao 源代码仓库中：",
    documents=(
        ("README.md", "qianbao 简介，以及用 curl 快速上手"),
        ("docs/api.md", "面向接入方的 HTTP API 说明，附 curl 和 Python 示例"),
        ("docs/security.md", "登录、二次身份验证、限额、API 密钥与请求签名"),
        ("docs/payments.md", "商户、二维码、付款码、收银台与退款"),
        ("docs/webhooks.md", "事件与签名的 Webhook"),
        ("docs/errors.md", "所有错误码及其提示信息和建议操作"),
        ("docs/configuration.md", "所有配置项"),
    ),
    switch_label="English",
)
TEXTS = {"en": EN, "zh-CN": ZH}


@dataclass(frozen=True, slots=True)
class DemoRow:
    who: str
    phone: str
    password: str
    pin: str
    opening_balance: str


def shows_demo_users(settings: Settings) -> bool:
    """The demo users exist (`qianbao serve` seeds them) only in sandbox mode with the demo data."""
    return settings.is_sandbox and settings.seed_demo_data


def demo_rows(settings: Settings) -> list[DemoRow]:
    if not shows_demo_users(settings):
        return []
    return [
        DemoRow(
            demo.label,
            demo.phone,
            DEMO_PASSWORD,
            DEMO_PIN,
            format_money(Money(demo.opening_balance, CURRENCY)),
        )
        for demo in DEMO_USERS
    ]


def demo_shops(settings: Settings, text: StartText) -> list[str]:
    """A sentence for each demo user who owns a shop."""
    if not shows_demo_users(settings):
        return []
    shops = [(demo.label, demo.merchant) for demo in DEMO_USERS if demo.merchant is not None]
    return [
        text.shop.format(owner=owner, name=name, mcc=mcc, city=city) for owner, (name, mcc, city) in shops
    ]


def other_machines(settings: Settings, text: StartText) -> str | None:
    """Why "Try it out" fails from another machine, when it would."""
    if not server_url_is_loopback_stand_in(settings):
        return None
    return text.other_machines.format(url=server_url(settings))


def router(settings: Settings) -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    @routes.get("/", response_class=HTMLResponse)
    def start_page(request: Request, lang: str | None = None) -> HTMLResponse:
        language = lang if lang in LANGUAGES else negotiate_language(request.headers.get("accept-language"))
        text = TEXTS[language]
        return render(
            "start.html",
            headers={"Vary": "Accept-Language"},
            language=language,
            other_language="en" if language == "zh-CN" else "zh-CN",
            text=text,
            mode=text.mode_sandbox if settings.is_sandbox else text.mode_production,
            sandbox=settings.is_sandbox,
            version=__version__,
            demo_users=demo_rows(settings),
            demo_shops=demo_shops(settings, text),
            other_machines=other_machines(settings, text),
            stylesheet=static_url("start.css"),
            favicon=static_url("favicon.svg"),
        )

    return routes

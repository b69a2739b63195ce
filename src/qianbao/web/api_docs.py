"""The interactive API documentation: Swagger UI at `/docs`, Redoc at `/redoc`.

FastAPI's own pages load both from a CDN (blank offline) and start Swagger UI with an inline script;
these serve the vendored copies (`assets.py`) and start Swagger UI from a static file, so the pages work
offline under a Content-Security-Policy without `'unsafe-inline'` for scripts. Both bundles inject
styles at run time, and Redoc runs its search in a worker made from a blob: the policy allows exactly that.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from qianbao.api.openapi import server_url
from qianbao.config import Settings
from qianbao.web.assets import REDOC, SWAGGER_UI, static_url
from qianbao.web.rendering import PAGE_POLICY, render

OPENAPI_URL = "/openapi.json"
TITLE = "qianbao API"


def docs_policy(settings: Settings) -> str:
    """The page policy, plus injected styles, Redoc's worker, and "Try it out" calls to the server in
    the OpenAPI document's `servers` (another origin when `public_url` names one)."""
    server = urlsplit(server_url(settings))
    return (
        f"{PAGE_POLICY}; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; "
        f"connect-src 'self' {server.scheme}://{server.netloc}"
    )


def router(settings: Settings) -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    policy = docs_policy(settings)

    @routes.get("/docs", response_class=HTMLResponse)
    def swagger_ui() -> HTMLResponse:
        return render(
            "swagger.html",
            policy=policy,
            title=f"{TITLE} — Swagger UI",
            openapi_url=OPENAPI_URL,
            stylesheet=SWAGGER_UI.url("swagger-ui.css"),
            favicon=static_url("favicon.svg"),
            bundle=SWAGGER_UI.url("swagger-ui-bundle.js"),
            initializer=static_url("swagger-init.js"),
        )

    @routes.get("/redoc", response_class=HTMLResponse)
    def redoc() -> HTMLResponse:
        return render(
            "redoc.html",
            policy=policy,
            title=f"{TITLE} — Redoc",
            openapi_url=OPENAPI_URL,
            stylesheet=static_url("api-docs.css"),
            favicon=static_url("favicon.svg"),
            bundle=REDOC.url("bundles/redoc.standalone.js"),
        )

    return routes

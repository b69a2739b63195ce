"""The FastAPI application factory (`uvicorn --factory qianbao.api.app:create_app`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from qianbao import __version__
from qianbao.api import log_redaction, openapi
from qianbao.api.body_limits import BodySizeLimitMiddleware, route_limits
from qianbao.api.client_address import TrustedProxyMiddleware
from qianbao.api.guards import refuse_nul_characters
from qianbao.api.problems import install_problem_handlers
from qianbao.api.routes import api_keys, kyc, operators, qr, recovery, second_factors, wallets
from qianbao.api.routes import checkout as checkout_routes
from qianbao.api.routes import events as event_routes
from qianbao.api.routes import history as history_routes
from qianbao.api.routes import identity as identity_routes
from qianbao.api.routes import merchants as merchant_routes
from qianbao.api.routes import money_requests as money_request_routes
from qianbao.api.routes import notifications as notification_routes
from qianbao.api.routes import payment_codes as payment_code_routes
from qianbao.api.routes import payments as payment_routes
from qianbao.api.routes import sandbox as sandbox_routes
from qianbao.api.routes import webhooks as webhook_routes
from qianbao.bootstrap import Container, build_container
from qianbao.config import Settings
from qianbao.errors import ServiceUnavailable
from qianbao.events.dispatcher import start_inline
from qianbao.store.migrate import current_revision
from qianbao.web import install as install_web_pages


class Health(BaseModel):
    status: str
    version: str
    env: str
    database: str
    schema_revision: str | None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Starlette runs sync endpoints and dependencies on anyio's default thread limiter (40 tokens).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        container = build_container(settings)
        container.start()
        app.state.container = container
        dispatcher = start_inline(container.identity) if settings.dispatcher == "inline" else None
        try:
            yield
        finally:
            if dispatcher is not None:
                dispatcher.stop()
            container.close()

    app = FastAPI(
        title="qianbao API",
        version=__version__,
        description="Digital wallet platform: ledger, wallets, payments. Errors are problem+json.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_characters)],
        docs_url=None,  # /docs and /redoc are served by qianbao.web, from vendored assets (no CDN)
        redoc_url=None,
    )
    install_problem_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware, default_limit=settings.max_body_bytes, limits=route_limits(settings)
    )
    app.add_middleware(TrustedProxyMiddleware, trusted_proxies=settings.trusted_proxies)
    openapi.install(app, settings)
    install_web_pages(app, settings)
    log_redaction.install()
    app.include_router(identity_routes.router)
    for routes in (second_factors, kyc, wallets, api_keys, operators, recovery, qr):
        app.include_router(routes.router)
    for routes in (webhook_routes, event_routes, notification_routes):
        app.include_router(routes.router)
    app.include_router(merchant_routes.router)
    # Before the payments router: /v1/payments/pending must not be read as a payment id.
    app.include_router(payment_code_routes.router)
    app.include_router(payment_routes.router)
    app.include_router(checkout_routes.router)
    app.include_router(history_routes.router)
    app.include_router(money_request_routes.router)
    if settings.is_sandbox:
        app.include_router(sandbox_routes.router)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz(request: Request) -> Health:
        """Liveness and readiness: answers 200 only when the database answers."""
        container: Container = request.app.state.container
        try:
            revision = current_revision(container.db)
        except Exception as exc:
            raise ServiceUnavailable("the database is not reachable") from exc
        return Health(
            status="ok",
            version=__version__,
            env=settings.env.value,
            database=container.db.dialect,
            schema_revision=revision,
        )

    return app

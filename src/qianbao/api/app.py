"""The FastAPI application factory (`uvicorn --factory qianbao.api.app:create_app`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from qianbao import __version__
from qianbao.api import log_redaction
from qianbao.api.guards import refuse_nul_characters
from qianbao.api.problems import install_problem_handlers
from qianbao.api.routes import api_keys, kyc, operators, qr, recovery, second_factors, wallets
from qianbao.api.routes import identity as identity_routes
from qianbao.api.routes import sandbox as sandbox_routes
from qianbao.bootstrap import Container, build_container
from qianbao.config import Settings
from qianbao.errors import ServiceUnavailable
from qianbao.store.migrate import current_revision


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
        container = build_container(settings)
        container.start()
        app.state.container = container
        try:
            yield
        finally:
            container.close()

    app = FastAPI(
        title="qianbao API",
        version=__version__,
        description="Digital wallet platform: ledger, wallets, payments. Errors are problem+json.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_characters)],
    )
    install_problem_handlers(app)
    log_redaction.install()
    app.include_router(identity_routes.router)
    for routes in (second_factors, kyc, wallets, api_keys, operators, recovery, qr):
        app.include_router(routes.router)
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

"""Server-rendered pages and their static assets (GUIDE.md: Jinja2, vendored assets, no CDN).

Today: the start page at `/` (what this server is, the sandbox's demo users, where the docs are) and the
API documentation at `/docs` (Swagger UI) and `/redoc` (Redoc), served with their assets from
`/static`. The web app to come lives here too.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from qianbao.config import Settings
from qianbao.web import api_docs, start
from qianbao.web.assets import STATIC_PACKAGE, STATIC_URL


def install(app: FastAPI, settings: Settings) -> None:
    app.mount(STATIC_URL, StaticFiles(packages=[STATIC_PACKAGE]), name="static")
    app.include_router(start.router(settings))
    app.include_router(api_docs.router(settings))

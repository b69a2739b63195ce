"""Rendering pages: one Jinja2 environment over the package's templates, and the headers every page has.

Pages run no inline script (scripts are static files), so the Content-Security-Policy can say `'self'`.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

# Everything from this origin only; images may also be data: URIs (CSS icons); no plugins, no <base>, no
# framing (clickjacking), forms post back here only.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@functools.cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("qianbao.web", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a missing value is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(
    template: str, *, policy: str = PAGE_POLICY, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    html = environment().get_template(template).render(**context)
    security = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    return HTMLResponse(html, headers={**security, **(headers or {})})

"""The browser assets qianbao serves itself: its own (`static/`) and vendored npm packages, pinned.

Pages never load anything from a CDN: `/docs` and `/redoc` work offline and under a Content-Security-Policy
of `'self'`. Each vendored package sits in `static/vendor/<name>-<version>/` with its licence, exactly as
published (only the files listed here are kept); `static/vendor/VENDORED.md` records where each file came
from and its SHA-256. `scripts/vendor_web_assets.py` fetches them again after a version change here.
"""

from __future__ import annotations

from dataclasses import dataclass

STATIC_PACKAGE = ("qianbao.web", "static")  # served at STATIC_URL, from the installed package
STATIC_URL = "/static"


@dataclass(frozen=True, slots=True)
class VendoredPackage:
    name: str  # on the npm registry
    version: str  # exact: a new version is a reviewed change (re-vendor, read its changelog)
    licence: str  # SPDX, as its package.json says
    files: tuple[str, ...]  # paths inside the package, kept as they are

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.version}"

    def url(self, file: str) -> str:
        if file not in self.files:
            raise ValueError(f"{file} is not vendored from {self.name}")
        return f"{STATIC_URL}/vendor/{self.folder}/{file}"


SWAGGER_UI = VendoredPackage(
    "swagger-ui-dist",
    "5.36.0",
    "Apache-2.0",
    (
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "LICENSE",
        "NOTICE",
        "swagger-ui-bundle.js.LICENSE.txt",  # the licences of what the bundle includes
    ),
)
# Redoc 2, not 3: Redoc 3's bundle reports usage to Redocly's telemetry service and loads icons from
# their CDN, which an offline page under our Content-Security-Policy cannot (and should not) do.
REDOC = VendoredPackage(
    "redoc",
    "2.5.2",
    "MIT",
    ("bundles/redoc.standalone.js", "bundles/redoc.standalone.js.LICENSE.txt", "LICENSE"),
)
VENDORED = (SWAGGER_UI, REDOC)


def static_url(file: str) -> str:
    """One of qianbao's own static files (not vendored)."""
    return f"{STATIC_URL}/{file}"

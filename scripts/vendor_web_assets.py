"""Fetch the vendored browser assets again (Swagger UI, Redoc) from the npm registry.

    .venv/bin/python scripts/vendor_web_assets.py

The packages and versions are pinned in `src/qianbao/web/assets.py` (`VENDORED`). For each, `npm pack`
downloads the published tarball (npm checks it against the registry's integrity hash), the files listed
there are copied to `src/qianbao/web/static/vendor/<name>-<version>/` (older versions' folders are
removed), its licence is checked against the pin, and `static/vendor/VENDORED.md` is written anew with
every file's size and SHA-256 (`tests/api/test_api_docs_pages.py` checks the files against it).
Needs npm; uses no package scripts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess  # noqa: S404 - runs npm, with fixed arguments
import sys
import tarfile
import tempfile
from pathlib import Path

from qianbao.web.assets import VENDORED, VendoredPackage

ROOT = Path(__file__).resolve().parents[1]
VENDOR_DIR = ROOT / "src" / "qianbao" / "web" / "static" / "vendor"
MANIFEST = VENDOR_DIR / "VENDORED.md"

HEADER = """# Vendored browser assets

Served by qianbao under `/static/vendor/` for `/docs` (Swagger UI) and `/redoc` (Redoc), so that the API
documentation works offline and loads nothing from a CDN. Each folder holds files of one npm package as
published, with its licence. Written by `scripts/vendor_web_assets.py` from the pins in
`src/qianbao/web/assets.py`: do not edit by hand; `tests/api/test_api_docs_pages.py` checks every file
against the SHA-256 below.
"""


def fetch(package: VendoredPackage, work: Path) -> tuple[Path, str]:
    """The unpacked tarball of `package` and its registry integrity (sha512)."""
    spec = f"{package.name}@{package.version}"
    result = subprocess.run(  # noqa: S603
        ["npm", "pack", spec, "--json", "--ignore-scripts", "--pack-destination", str(work)],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    )
    [packed] = json.loads(result.stdout)
    with tarfile.open(work / packed["filename"]) as tarball:
        tarball.extractall(work / "unpacked", filter="data")
    return work / "unpacked" / "package", str(packed["integrity"])


def vendor(package: VendoredPackage, work: Path) -> str:
    source, integrity = fetch(package, work)
    published = json.loads((source / "package.json").read_text())
    if published.get("version") != package.version or published.get("license") != package.licence:
        sys.exit(f"{package.name}: npm has {published.get('version')} under {published.get('license')}")
    for old in VENDOR_DIR.glob(f"{package.name}-*"):
        shutil.rmtree(old)
    rows = []
    for file in package.files:
        target = VENDOR_DIR / package.folder / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / file, target)
        data = target.read_bytes()
        rows.append(f"| `{file}` | {len(data)} | {hashlib.sha256(data).hexdigest()} |")
    return "\n".join(
        [
            f"## {package.name} {package.version}",
            "",
            f"- licence: {package.licence} (see its `LICENSE`)",
            f"- npm tarball integrity: `{integrity}`",
            "",
            "| file | bytes | sha256 |",
            "|---|---|---|",
            *rows,
        ]
    )


def main() -> None:
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    sections = []
    for package in VENDORED:
        with tempfile.TemporaryDirectory() as work:
            sections.append(vendor(package, Path(work)))
        print(f"vendored {package.name} {package.version}")  # noqa: T201
    MANIFEST.write_text(HEADER + "\n" + "\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()

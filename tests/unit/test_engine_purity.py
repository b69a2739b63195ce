"""The decision core stays pure: its modules import no database, no settings, no clock, and never raise.

Read with `ast`, not imported, so a forbidden import fails here even where it would be harmless at run
time. The settings (`qianbao.config`), the clock and the store are the loaders' business, not the rules':
the tier limits the rules read are plain data in `identity/model.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PURE_MODULES = [
    "qianbao/payments/engine/facts.py",
    "qianbao/payments/engine/decide.py",
    "qianbao/payments/engine/rules.py",
    "qianbao/identity/limit_rules.py",
    "qianbao/wallets/spend_rules.py",
    "qianbao/findings.py",
    "qianbao/identity/model.py",
    "qianbao/wallets/model.py",
]
FORBIDDEN = (
    "sqlalchemy",
    "psycopg",
    "psycopg2",
    "sqlite3",
    "qianbao.clock",
    "time",
    "datetime",
    "qianbao.store",
    "qianbao.config",
)


def _forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join([*base, node.module] if node.module else base)


def impure_imports(source: str, package: str = "qianbao") -> list[str]:
    """Each forbidden import in `source` (a module of `package`), as `line: what`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _forbidden(alias.name):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if _forbidden(module) or _forbidden(full):
                    found.append(f"{node.lineno}: from {module} import {alias.name}")
        elif isinstance(node, ast.Call):  # no way round it by importing at run time
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name in ("__import__", "import_module"):
                found.append(f"{node.lineno}: {name}(...)")
    return found


def raises(source: str) -> list[int]:
    """The lines of every `raise` statement in `source`."""
    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Raise)]


def _package_of(relative: str) -> str:
    return ".".join(Path(relative).with_suffix("").parts[:-1])


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_pure_modules_import_no_database_settings_or_clock(relative: str) -> None:
    source = (SRC / relative).read_text(encoding="utf-8")
    assert impure_imports(source, _package_of(relative)) == [], relative


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_pure_modules_never_raise(relative: str) -> None:
    source = (SRC / relative).read_text(encoding="utf-8")
    assert raises(source) == [], f"{relative}: a rule returns a Finding, it does not raise"


def test_the_list_of_pure_modules_is_current() -> None:
    for relative in PURE_MODULES:
        assert (SRC / relative).is_file(), relative


# -- the checkers can fail --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "snippet",
    [
        "import sqlalchemy",
        "import sqlalchemy.orm as orm",
        "from sqlalchemy import Connection, select",
        "from sqlalchemy.dialects import postgresql",
        "import psycopg",
        "from psycopg.rows import dict_row",
        "import psycopg2",
        "import sqlite3",
        "from sqlite3 import connect",
        "import qianbao.config",
        "from qianbao.config import Settings",
        "from qianbao.config import TierLimits, Settings",
        "from qianbao.config import TierLimits",
        "from qianbao.config import DEFAULT_TIERS",
        "from qianbao import config",
        "from qianbao import clock",
        "from qianbao.clock import now_us",
        "import qianbao.clock",
        "import time",
        "from time import monotonic",
        "import datetime",
        "from datetime import UTC, datetime",
        "from qianbao.store.database import Database",
        "from qianbao import store",
        "import qianbao.store.migrate",
        "def f():\n    from sqlalchemy import text\n    return text",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sqlalchemy import Connection",
        "import importlib\nsqlalchemy = importlib.import_module('sqlalchemy')",
        "db = __import__('sqlite3')",
    ],
)
def test_the_import_checker_flags(snippet: str) -> None:
    assert impure_imports(snippet) != []


def test_the_import_checker_resolves_relative_imports() -> None:
    assert impure_imports("from ..config import Settings", "qianbao.identity") != []
    assert impure_imports("from .. import clock", "qianbao.wallets") != []
    assert impure_imports("from ...store import database", "qianbao.payments.engine") != []
    assert impure_imports("from ..config import TierLimits", "qianbao.identity") != []
    assert impure_imports("from . import rules", "qianbao.payments.engine") == []


@pytest.mark.parametrize(
    "snippet",
    [
        "from qianbao.identity.model import TierLimits",
        "from qianbao.configuration_of_my_own import x",
        "from qianbao.findings import Finding",
        "from qianbao.ledger.model import Account",
        "import timeit",
        "import datetimes_of_my_own",
        "from qianbao.clockwork import spring",
        "from qianbao.storefront import shop",
        "from dataclasses import dataclass",
    ],
)
def test_the_import_checker_allows(snippet: str) -> None:
    assert impure_imports(snippet) == []


def test_the_raise_checker_flags_a_raise() -> None:
    assert raises("def f(x):\n    if x:\n        raise ValueError(x)\n    return x") == [3]
    assert raises("try:\n    pass\nexcept KeyError:\n    raise") == [4]
    assert raises("def f(x):\n    assert x is not None\n    return x") == []


def test_importing_the_decision_core_loads_no_database_layer() -> None:
    """Not only the rule modules' own imports: nothing they import, transitively, brings in the
    database layer or the clock (checked in a fresh interpreter)."""
    import subprocess
    import sys

    probe = (
        "import sys, qianbao.payments.engine.decide, qianbao.payments.engine.rules\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'psycopg', 'sqlite3')"
        " or m.startswith(('qianbao.store', 'qianbao.clock', 'qianbao.config')))\n"
        "print(','.join(bad))\n"
    )
    loaded = subprocess.run(  # noqa: S603 - our own interpreter and a fixed script
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"the decision core pulls in: {loaded}"

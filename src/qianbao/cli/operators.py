"""`qianbao operators` commands (being built)."""

from __future__ import annotations

import typer

app = typer.Typer(help="operators", no_args_is_help=True)

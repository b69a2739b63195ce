"""Settings, read from the environment (prefix `QIANBAO_`) by pydantic-settings.

See docs/configuration.md for every setting. Nothing here builds connections: `bootstrap` does, on demand.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QIANBAO_", extra="ignore")

    env: Environment = Environment.SANDBOX
    database_url: str = "sqlite:///./var/qianbao.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    var_dir: Path = Path("./var")
    # Group commit: how long the ledger waits for more transfers once one arrives, and the batch cap.
    ledger_batch_window_ms: float = Field(default=1.0, ge=0, le=100)
    ledger_batch_max: int = Field(default=4096, ge=1, le=65536)
    # How often the pending-transfer sweeper looks for expired holds.
    ledger_sweep_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # SQLite durability: FULL fsyncs every commit; NORMAL (WAL) may lose the last commits on power loss.
    sqlite_synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL)$")
    seed_demo_data: bool = True
    log_level: str = "info"

    @property
    def is_sandbox(self) -> bool:
        return self.env is Environment.SANDBOX

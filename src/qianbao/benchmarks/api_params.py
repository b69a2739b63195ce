"""The API bench's parameters, constants and error (shared by its population, wrk and run modules)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[int], None]


PAYMENT_CODE = "merchant.payment"
RESULT_MARKER = "QIANBAO_WRK_RESULT "
SIGNUPS_PER_ADDRESS = 10  # the server allows 20 SMS codes per IP and hour (otp_send_ip)
FUNDING = 200_000  # fen each payer starts with (¥2,000: the tier-4 balance cap is ¥10,000)
PASSWORD_WORDS = ("Lantern", "Harbour", "Quartz", "Meadow", "Copper", "Falcon", "Juniper", "Saffron")
DEFAULT_SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "api_payments.lua"
# The environment of a server the bench starts (see the module docstring).
SERVER_ENV = {
    "QIANBAO_ENV": "sandbox",
    "QIANBAO_SEED_DEMO_DATA": "false",
    "QIANBAO_LOG_LEVEL": "warning",
    "QIANBAO_ARGON2_TIME_COST": "1",
    "QIANBAO_ARGON2_MEMORY_KIB": "8",
    "QIANBAO_ARGON2_PARALLELISM": "1",
}


class BenchError(Exception):
    """The benchmark cannot run or its books do not balance (a message for the operator)."""


@dataclass(frozen=True)
class ApiBenchParams:
    workers: int = 2
    connections: int = 64
    threads: int = 1  # wrk threads: one is plenty at these rates and leaves the cores to the server
    duration_s: int = 30
    warmup_s: int = 5
    payers: int = 400
    merchants: int = 20
    qr_share: float = 0.5
    amount_min: int = 100
    amount_max: int = 1000
    setup_concurrency: int = 16
    ledger_transfers: int = 60_000
    ledger_clients: int = 0  # 0: as many as the HTTP run has connections
    floor_s: int = 10  # seconds per floor (api_floors); 0: skip the floors
    floor_statements: int = 1  # statements (rows written) per request in the writing floors
    timeout_s: int = 10
    seed: int = 1

"""Settings, read from the environment (prefix `QIANBAO_`) by pydantic-settings.

See docs/configuration.md for every setting. Nothing here builds connections: `bootstrap` does, on demand.
"""

from __future__ import annotations

import ipaddress
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from qianbao.identity.model import TierLimits


class Environment(StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"


# Modelled on the e-CNY wallet tiers (4 = phone number only … 1 = enhanced verification).
DEFAULT_TIERS: dict[int, TierLimits] = {
    4: TierLimits(balance_cap=1_000_000, single_payment=200_000, daily_outflow=500_000),
    3: TierLimits(balance_cap=2_000_000, single_payment=500_000, daily_outflow=1_000_000),
    2: TierLimits(balance_cap=50_000_000, single_payment=5_000_000, daily_outflow=10_000_000),
    1: TierLimits(balance_cap=None, single_payment=None, daily_outflow=None),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QIANBAO_", extra="ignore")

    env: Environment = Environment.SANDBOX
    database_url: str = "sqlite:///./var/qianbao.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # The base URL clients reach this server at (behind a proxy: the proxy's), listed as the OpenAPI
    # document's `servers`; by default http://<host>:<port>. An e-mail address for integrators' questions,
    # listed as its `info.contact`.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    api_contact_email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    workers: int = Field(default=1, ge=1, le=64)
    # Threads per worker for blocking work (sync endpoints and dependencies, i.e. every database call).
    # They share one GIL: beyond a few, more threads add switching, not throughput (docs/benchmarks.md).
    threads: int = Field(default=8, ge=1, le=256)
    var_dir: Path = Path("./var")
    # Group commit: how long the ledger waits for more transfers once one arrives, and the batch cap.
    ledger_batch_window_ms: float = Field(default=1.0, ge=0, le=100)
    ledger_batch_max: int = Field(default=4096, ge=1, le=65536)
    # The payment pipeline: most payments decided and written in one database transaction.
    payment_batch_max: int = Field(default=256, ge=1, le=4096)
    # How often the pending-transfer sweeper looks for expired holds.
    ledger_sweep_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # SQLite durability: FULL fsyncs every commit; NORMAL (WAL) may lose the last commits on power loss.
    sqlite_synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL)$")
    seed_demo_data: bool = True
    log_level: str = "info"
    # --- What one HTTP request may be (docs/security.md, "Requests"). JSON bodies are small: the largest
    # legitimate one, a passkey attestation, is a few KiB. Only the QR image upload takes more, and never
    # more than the decoder reads (8 MiB). Header limits hold for the request line and all header lines.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=8 * 1024 * 1024)
    max_image_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=8 * 1024 * 1024)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    max_header_count: int = Field(default=100, ge=10, le=1000)
    # --- Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed; none by default.
    # From the environment: comma-separated (`10.0.0.0/8,127.0.0.1`) or a JSON list.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- Keys for personal data (docs/security.md). Without them, sandbox creates var_dir/keys.json.
    master_key: SecretStr | None = None
    index_key: SecretStr | None = None
    key_file: Path | None = None
    # --- Rate limits: in-process memory unless a Redis URL is given (share limits across workers).
    redis_url: str | None = None
    # --- Sessions: bearer tokens (apps, API) and cookies (web app) have their own lifetimes.
    session_lifetime_s: int = Field(default=30 * 24 * 3600, ge=60)
    session_idle_s: int = Field(default=7 * 24 * 3600, ge=60)
    cookie_session_lifetime_s: int = Field(default=12 * 3600, ge=60)
    cookie_session_idle_s: int = Field(default=30 * 60, ge=60)
    cookie_secure: bool = True
    # --- One-time codes and step-up.
    otp_ttl_s: int = Field(default=300, ge=30, le=3600)
    challenge_ttl_s: int = Field(default=300, ge=30, le=3600)
    step_up_amount: int = Field(default=200_000, ge=0)  # fen: payments from ¥2,000 need step-up
    new_payee_step_up_amount: int = Field(default=50_000, ge=0)  # first payment to a new payee above ¥500
    small_payment_amount: int = Field(default=100_000, ge=0)  # above this, a new device needs step-up
    pin_max_failures: int = Field(default=5, ge=1, le=20)
    pin_lock_s: int = Field(default=30 * 60, ge=1)
    cooling_off_s: int = Field(default=24 * 3600, ge=0)
    # During cooling-off (after a phone change or recovery) single and daily limits are divided by this.
    cooling_off_limit_divisor: int = Field(default=10, ge=1)
    kyc_tiers: dict[int, TierLimits] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    # --- Passkeys (WebAuthn): the relying party is the host name the web app is served from.
    webauthn_rp_id: str = "localhost"
    webauthn_rp_name: str = "qianbao"
    # Empty: the origins the sandbox is reached at (http://localhost:<port>, http://127.0.0.1:<port>, and
    # the origin of `public_url` when set), so `qianbao serve --port 8765` keeps passkeys working.
    webauthn_origins: list[str] = Field(default_factory=list)
    # --- Password and PIN hashing (argon2id). Tests lower these; production keeps the defaults.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=2, ge=1)
    # --- API keys: after a rotation the old key keeps working this long.
    api_key_overlap_s: int = Field(default=24 * 3600, ge=0)
    # --- Operators (staff): their sessions end after this, however active.
    operator_session_lifetime_s: int = Field(default=8 * 3600, ge=60)
    operator_session_idle_s: int = Field(default=30 * 60, ge=60)
    # --- Events: `inline` runs the outbox dispatcher (webhooks, notifications) inside each server process;
    # `off` leaves it to `qianbao worker` (docs/webhooks.md).
    dispatcher: str = Field(default="inline", pattern="^(inline|off)$")
    # How long the event feed, webhook deliveries (with their attempts) and published outbox rows are kept,
    # and how long in-app notifications are kept (housekeeping deletes older ones).
    event_retention_days: int = Field(default=30, ge=1, le=3650)
    notification_retention_days: int = Field(default=90, ge=1, le=3650)
    # Sandbox only: webhooks may go to this machine's loopback (127.0.0.0/8, ::1, localhost), for a
    # developer's own receiver. Off by default; ignored in production (docs/webhooks.md).
    webhooks_allow_loopback: bool = False
    # --- Merchant payments. The merchant discount rate is in parts per million of the amount (3800 =
    # 0.38 %), per MCC with a default; fees are rounded half-up to the fen and refunded pro-rata.
    merchant_fee_ppm: int = Field(default=3800, ge=0, le=100_000)
    merchant_fee_ppm_by_mcc: dict[str, int] = Field(default_factory=dict)
    refund_fees_pro_rata: bool = True
    dynamic_qr_ttl_s: int = Field(default=300, ge=30, le=24 * 3600)
    # Payment codes (付款码): password-free (免密) payments up to these amounts (users may lower them, to
    # zero); above them the customer confirms within `payment_code_confirm_s` while a hold keeps the money.
    no_pin_per_payment: int = Field(default=100_000, ge=0)
    no_pin_daily: int = Field(default=200_000, ge=0)
    payment_code_confirm_s: int = Field(default=60, ge=10, le=600)
    payment_intent_ttl_s: int = Field(default=1800, ge=60, le=7 * 24 * 3600)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_networks(cls, value: Any) -> Any:
        """Each entry as a network (`127.0.0.1` → `127.0.0.1/32`); a typo fails at start, not silently."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
        if not isinstance(value, list):
            return value
        return [str(ipaddress.ip_network(str(entry).strip(), strict=False)) for entry in value]

    @property
    def is_sandbox(self) -> bool:
        return self.env is Environment.SANDBOX

    @property
    def passkey_origins(self) -> tuple[str, ...]:
        """The exact origins passkey ceremonies may come from: `webauthn_origins`, or those derived from
        where this server is reached."""
        if self.webauthn_origins:
            return tuple(self.webauthn_origins)
        derived = [f"http://localhost:{self.port}", f"http://127.0.0.1:{self.port}"]
        if self.public_url is not None:
            scheme, _, rest = self.public_url.partition("://")
            derived.append(f"{scheme}://{rest.split('/', 1)[0]}")
        return tuple(dict.fromkeys(derived))

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.var_dir / "keys.json"

"""Identity tables, as migration 0002 creates them (described here for queries and the drift test).

Personal data never sits here in clear: `*_cipher` columns hold AES-GCM tokens from
`qianbao.security.crypto.FieldCipher` (each naming its data key), `*_index` columns hold keyed blind-index
digests for equality look-ups. Secrets (passwords, PINs, tokens, codes) are stored only as hashes.
Times are BIGINT microseconds since the epoch (UTC), as in the ledger.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from qianbao.store.metadata import metadata

USER_STATUSES = ("active", "frozen", "closed")
PRINCIPAL_KINDS = ("user", "operator")
CHALLENGE_STATUSES = ("pending", "verified", "consumed", "failed")
KYC_STATUSES = ("pending", "approved", "rejected")

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("phone_cipher", Text, nullable=False),
    Column("phone_index", String(64), nullable=False, unique=True),
    Column("name_cipher", Text, nullable=False),
    Column("id_number_cipher", Text, nullable=True),
    Column("id_number_index", String(64), nullable=True, index=True),
    Column("email_cipher", Text, nullable=True),
    Column("password_hash", Text, nullable=False),
    Column("pin_hash", Text, nullable=True),
    Column("pin_failures", Integer, nullable=False, server_default="0"),
    Column("pin_locked_until", BigInteger, nullable=True),
    # How many times the PIN has locked: each lock lasts twice as long as the one before.
    Column("pin_lockouts", Integer, nullable=False, server_default="0"),
    Column("totp_secret_cipher", Text, nullable=True),
    Column("totp_enabled_at", BigInteger, nullable=True),
    # The last TOTP time step accepted: a code is never accepted twice.
    Column("totp_last_step", BigInteger, nullable=True),
    Column("kyc_tier", Integer, nullable=False, server_default="4"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("status_reason", String(200), nullable=True),
    # Until this instant the account runs with reduced limits (a phone number change, a recovery).
    Column("cooling_off_until", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint("kyc_tier BETWEEN 1 AND 4", name="kyc_tier"),
    CheckConstraint(f"status IN {USER_STATUSES!r}", name="status"),
    CheckConstraint("pin_failures >= 0 AND pin_lockouts >= 0", name="pin_counters"),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False),
    # What the client calls its device (an install id); unique per user, not globally.
    Column("device_key", String(128), nullable=False),
    Column("label", String(128), nullable=True),
    Column("first_seen_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    # Set when the device is known: the sign-up device, or after a step-up proved on it.
    Column("trusted_at", BigInteger, nullable=True),
    Index("uq_devices_user_id_device_key", "user_id", "device_key", unique=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("principal_kind", String(16), nullable=False),
    Column("principal_id", String(40), nullable=False, index=True),
    Column("device_id", String(40), nullable=True),
    Column("transport", String(16), nullable=False),
    Column("csrf_hash", String(64), nullable=True),
    Column("auth_method", String(32), nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(256), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("revoked_reason", String(64), nullable=True),
    CheckConstraint(f"principal_kind IN {PRINCIPAL_KINDS!r}", name="principal_kind"),
    CheckConstraint("transport IN ('bearer', 'cookie')", name="transport"),
)

verifications = Table(
    "verifications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column("phone_index", String(64), nullable=False),
    Column("user_id", String(40), nullable=True),
    Column("code_hash", String(64), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("consumed_at", BigInteger, nullable=True),
    Index("ix_verifications_phone_index_purpose", "phone_index", "purpose", "created_at"),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("code_hash", String(64), nullable=False),
    Column("user_id", String(40), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("user_id", "code_hash"),
)

passkeys = Table(
    "passkeys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False, index=True),
    Column("credential_id", String(1400), nullable=False, unique=True),
    Column("public_key", Text, nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("aaguid", String(64), nullable=False),
    Column("transports", JSON, nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
)

# Short-lived server state of a WebAuthn ceremony (the challenge it must answer).
ceremonies = Table(
    "auth_ceremonies",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("user_id", String(40), nullable=True),
    Column("challenge", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("consumed_at", BigInteger, nullable=True),
)

challenges = Table(
    "challenges",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False, index=True),
    Column("session_id", String(40), nullable=True),
    Column("operation", String(64), nullable=False),
    # SHA-256 of the operation and its parameters: the proof only unlocks that exact request.
    Column("binding", String(64), nullable=False),
    Column("methods", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("webauthn_challenge", String(128), nullable=True),
    Column("sms_code_hash", String(64), nullable=True),
    Column("verified_method", String(16), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("verified_at", BigInteger, nullable=True),
    Column("consumed_at", BigInteger, nullable=True),
    CheckConstraint(f"status IN {CHALLENGE_STATUSES!r}", name="status"),
)

kyc_applications = Table(
    "kyc_applications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False, index=True),
    Column("target_tier", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("name_cipher", Text, nullable=True),
    Column("id_number_cipher", Text, nullable=True),
    Column("account_number_cipher", Text, nullable=True),
    Column("reason", String(200), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    Column("decided_by", String(40), nullable=True),
    CheckConstraint(f"status IN {KYC_STATUSES!r}", name="status"),
    CheckConstraint("target_tier BETWEEN 1 AND 3", name="target_tier"),
)

# Outflow counted against the daily limit, per user and local (Asia/Shanghai) day. The conditional UPDATE
# that adds to it runs in the payment's own transaction, so concurrent payments cannot overshoot.
limit_usage = Table(
    "limit_usage",
    metadata,
    Column("user_id", String(40), nullable=False),
    Column("day", String(10), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("outflow", BigInteger, nullable=False),
    Column("payments", Integer, nullable=False),
    PrimaryKeyConstraint("user_id", "day", "currency"),
    CheckConstraint("outflow >= 0", name="outflow_non_negative"),
)

# Per-user limits set by operators (maker-checker), replacing the tier's where a value is given.
limit_overrides = Table(
    "limit_overrides",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("balance_cap", BigInteger, nullable=True),
    Column("single_payment", BigInteger, nullable=True),
    Column("daily_outflow", BigInteger, nullable=True),
    Column("reason", String(500), nullable=False),
    Column("approval_id", String(40), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_user_id", String(40), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    # HMAC verification needs the secret itself, so besides its hash it is kept encrypted (never in clear).
    Column("secret_cipher", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
    Column("replaced_by", String(40), nullable=True),
)

api_nonces = Table(
    "api_nonces",
    metadata,
    Column("key_id", String(40), nullable=False),
    Column("nonce", String(64), nullable=False),
    Column("seen_at", BigInteger, nullable=False, index=True),
    PrimaryKeyConstraint("key_id", "nonce"),
)

operators = Table(
    "operators",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(128), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("totp_secret_cipher", Text, nullable=False),
    Column("totp_last_step", BigInteger, nullable=True),
    Column("roles", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("status IN ('active', 'disabled')", name="status"),
)

# Maker-checker: a sensitive operator action is requested by one operator and carried out only when a
# different operator approves it.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("action", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("reason", String(500), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(40), nullable=False),
    Column("requested_at", BigInteger, nullable=False),
    Column("decided_by", String(40), nullable=True),
    Column("decided_at", BigInteger, nullable=True),
    Column("decision_note", String(500), nullable=True),
    Column("result", JSON, nullable=True),
    CheckConstraint("status IN ('pending', 'executed', 'rejected', 'withdrawn', 'failed')", name="status"),
    # The database itself refuses an action carried out, or turned down, on its requester's own decision:
    # approving and rejecting are a second operator's. Only a withdrawal is the requester's own.
    CheckConstraint(
        "status NOT IN ('executed', 'failed', 'rejected') "
        "OR (decided_by IS NOT NULL AND decided_by <> requested_by)",
        name="two_people",
    ),
    CheckConstraint(
        "status <> 'withdrawn' OR (decided_by IS NOT NULL AND decided_by = requested_by)",
        name="withdrawn_by_requester",
    ),
)

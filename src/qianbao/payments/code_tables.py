"""Payment codes (付款码) and checkout payment intents (migration 0008).

`payment_code_devices`: a device enabled to show payment codes for one wallet, with its secret (encrypted)
and its 7-digit device number (part of every code it shows). `payment_code_uses`: every accepted code
(device, time step, sequence digit), so each code pays once. `payment_code_settings`: the user's
password-free (免密) allowance, and `no_pin_usage` what of it was used per day.
`payment_code_failures` (migrations 0010, 0013): every wrong code presented, by device number and
merchant, so guessing at one device from many merchants blocks it (`blocked_at`), and a merchant's wrong
codes are bounded.
`payment_intents`: online checkout, one row per intent with its state.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, Integer, String, Table, Text

from qianbao.store.metadata import metadata

DEVICE_STATUSES = ("active", "revoked")
INTENT_STATUSES = ("requires_confirmation", "processing", "succeeded", "failed", "canceled", "expired")

payment_code_devices = Table(
    "payment_code_devices",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("wallet_id", String(40), nullable=False),
    Column("number", String(7), nullable=False, unique=True),
    Column("secret_cipher", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    # Set when too many wrong codes arrived for its number: its codes pay no more until it is enabled again.
    Column("blocked_at", BigInteger, nullable=True),
    CheckConstraint(f"status IN {DEVICE_STATUSES!r}", name="status"),
    Index("ix_payment_code_devices_user_id", "user_id"),
)

payment_code_uses = Table(
    "payment_code_uses",
    metadata,
    Column("device_id", String(40), primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("used_at", BigInteger, nullable=False),
    # The charge (its ledger transfer id) that spent the code: a retry of that same charge may go on.
    Column("charge_ref", String(128), nullable=False),
    Index("ix_payment_code_uses_used_at", "used_at"),
)

payment_code_failures = Table(
    "payment_code_failures",
    metadata,
    Column("id", String(40), primary_key=True),
    # The device number the wrong code named, whether or not a device has it (so counting it tells a
    # merchant nothing about which numbers exist); NULL when the failure counts against the merchant
    # only (a malformed code, or a used one: not a guess at a device).
    Column("number", String(7), nullable=True),
    Column("merchant_id", String(40), nullable=False),
    Column("failed_at", BigInteger, nullable=False),
    Index("ix_payment_code_failures_number_failed_at", "number", "failed_at"),
    Index("ix_payment_code_failures_merchant_id_failed_at", "merchant_id", "failed_at"),
    Index("ix_payment_code_failures_failed_at", "failed_at"),
)

payment_code_settings = Table(
    "payment_code_settings",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("no_pin_per_payment", BigInteger, nullable=False),
    Column("no_pin_daily", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint("no_pin_per_payment >= 0 AND no_pin_daily >= 0", name="allowance_nonnegative"),
)

no_pin_usage = Table(
    "no_pin_usage",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("amount >= 0", name="amount_nonnegative"),
)

payment_intents = Table(
    "payment_intents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("merchant_user_id", String(40), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("order_id", String(64), nullable=True),
    Column("description", String(200), nullable=True),
    Column("return_url", String(2000), nullable=True),
    Column("status", String(24), nullable=False),
    Column("payer_user_id", String(40), nullable=True),
    Column("payment_id", String(40), nullable=True),
    Column("failure_code", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(f"status IN {INTENT_STATUSES!r}", name="status"),
    CheckConstraint("status <> 'succeeded' OR payment_id IS NOT NULL", name="succeeded_has_payment"),
    Index("ix_payment_intents_merchant_id_created_at", "merchant_id", "created_at"),
    Index("ix_payment_intents_status_expires_at", "status", "expires_at"),
)

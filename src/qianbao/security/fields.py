"""Where encrypted personal data lives: every `*_cipher` column of the schema, with its cipher context.

Key rotation walks this list, and the plaintext-dump test checks it covers every cipher column, so a new
encrypted column cannot be forgotten by either.
"""

from __future__ import annotations

from typing import NamedTuple


class EncryptedTable(NamedTuple):
    table: str
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]


ENCRYPTED: tuple[EncryptedTable, ...] = (
    EncryptedTable(
        "users",
        ("id",),
        ("phone_cipher", "name_cipher", "id_number_cipher", "email_cipher", "totp_secret_cipher"),
    ),
    EncryptedTable("kyc_applications", ("id",), ("name_cipher", "id_number_cipher", "account_number_cipher")),
    EncryptedTable("messages", ("id",), ("to_cipher", "text_cipher", "code_cipher")),
    EncryptedTable("api_keys", ("id",), ("secret_cipher",)),
    EncryptedTable("operators", ("id",), ("totp_secret_cipher",)),
    EncryptedTable("transfers", ("id",), ("memo_cipher",)),
    EncryptedTable("webhook_endpoints", ("id",), ("secret_cipher", "previous_secret_cipher")),
    EncryptedTable("money_requests", ("id",), ("memo_cipher", "decline_reason_cipher")),
    EncryptedTable("merchant_payments", ("id",), ("memo_cipher",)),
    EncryptedTable("refunds", ("id",), ("reason_cipher",)),
    EncryptedTable("payment_code_devices", ("id",), ("secret_cipher",)),
)


def context(table: str, column: str) -> str:
    """The AES-GCM associated data naming a value's column: a ciphertext moved elsewhere will not open."""
    return f"{table}.{column}"

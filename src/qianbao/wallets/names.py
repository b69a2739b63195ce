"""How a wallet is named to its owner in text: by its name, except the main wallet, whose default name is
shown in the reader's language ("主钱包", "Main wallet").

Sign-up stores the main wallet's name as `MAIN_WALLET_NAME` and it cannot be renamed; the stored name
is never rewritten, only shown (history, CSV, notifications and `GET /v1/wallets`).
"""

from __future__ import annotations

MAIN_WALLET_NAME = "Main"
MAIN_WALLET_LABELS = {"en": "Main wallet", "zh-CN": "主钱包"}


def shown_wallet_name(kind: str, name: str, language: str) -> str:
    """The name to show for a wallet of `kind` named `name`, in `language` ("en" or "zh-CN")."""
    if kind == "main" and name == MAIN_WALLET_NAME:
        return MAIN_WALLET_LABELS.get(language, MAIN_WALLET_LABELS["en"])
    return name

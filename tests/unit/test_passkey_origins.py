"""Passkey origins follow where the server is reached, unless they are configured."""

from __future__ import annotations

from qianbao.config import Settings


def test_by_default_the_origins_follow_the_port_and_the_public_url() -> None:
    assert Settings(port=8765).passkey_origins == ("http://localhost:8765", "http://127.0.0.1:8765")
    assert Settings(port=8000, public_url="https://wallet.example.com/app").passkey_origins == (
        "http://localhost:8000",
        "http://127.0.0.1:8000",
        "https://wallet.example.com",
    )


def test_configured_origins_are_taken_as_they_are() -> None:
    settings = Settings(port=8765, webauthn_origins=["https://pay.example.com"])
    assert settings.passkey_origins == ("https://pay.example.com",)

"""The client address behind X-Forwarded-For: believed only from trusted proxies, read from the right."""

from __future__ import annotations

import ipaddress
from typing import Any

import anyio
import pytest
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from qianbao.api.client_address import TrustedProxyMiddleware, client_address
from qianbao.config import Settings

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # The peer is no proxy of ours: whatever it claims, it is the client.
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
        ("127.0.0.1", ["198.51.100.1"], "127.0.0.1"),
        # Behind our proxy: the address it appended, not what the client wrote before it.
        ("10.0.0.2", ["1.1.1.1", "198.51.100.7"], "198.51.100.7"),
        # Through two of our proxies: skip both.
        ("10.0.0.2", ["1.1.1.1", "198.51.100.7", "10.0.0.9"], "198.51.100.7"),
        # Ports and IPv6 forms.
        ("10.0.0.2", ["198.51.100.7:4711"], "198.51.100.7"),
        ("10.0.0.2", ["[2001:db9::1]:443"], "2001:db9::1"),
        ("2001:db8::5", ["2001:db9::1"], "2001:db9::1"),
        # Something no proxy writes: stop at the proxy that passed it on.
        ("10.0.0.2", ["198.51.100.7", "not-an-ip"], "10.0.0.2"),
        ("10.0.0.2", ["198.51.100.7", "not-an-ip", "10.0.0.9"], "10.0.0.9"),
        # Every hop is ours (a client inside the network): the left-most.
        ("10.0.0.2", ["10.1.1.1", "10.0.0.9"], "10.1.1.1"),
        # Our proxy without the header.
        ("10.0.0.2", [], "10.0.0.2"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], client: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == client


def through(middleware_proxies: list[str], peer: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, _receive: Receive, _send: Send) -> None:
        seen.update(client=scope["client"], scheme=scope["scheme"])

    async def nothing() -> Any:
        return {}

    async def drop(_message: Any) -> None:
        return None

    scope = {"type": "http", "client": (peer, 5555), "scheme": "http", "headers": list(headers)}
    anyio.run(TrustedProxyMiddleware(app, trusted_proxies=middleware_proxies), scope, nothing, drop)
    return seen


def test_by_default_no_forwarded_header_is_believed() -> None:
    seen = through([], "127.0.0.1", (b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-proto", b"https"))
    assert seen == {"client": ("127.0.0.1", 5555), "scheme": "http"}


def test_a_trusted_proxy_names_the_client_and_the_scheme() -> None:
    seen = through(
        ["10.0.0.0/8"], "10.0.0.2",
        (b"x-forwarded-for", b"6.6.6.6, 198.51.100.7"), (b"x-forwarded-for", b"10.0.0.9"),
        (b"x-forwarded-proto", b"https"),
    )  # fmt: skip
    assert seen == {"client": ("198.51.100.7", 0), "scheme": "https"}


def test_the_setting_takes_a_comma_separated_list_or_json_and_refuses_typos(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QIANBAO_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert Settings().trusted_proxies == ["10.0.0.0/8", "127.0.0.1/32"]
    monkeypatch.setenv("QIANBAO_TRUSTED_PROXIES", '["::1"]')
    assert Settings().trusted_proxies == ["::1/128"]
    monkeypatch.setenv("QIANBAO_TRUSTED_PROXIES", "10.0.0.0/8,localhost")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("QIANBAO_TRUSTED_PROXIES")
    assert Settings().trusted_proxies == []

"""Who is on the other end: the connection's peer, or, behind a trusted reverse proxy, the client it names.

The client address is recorded (sessions, audit log) and keys per-IP rate limits, so nobody may choose
it. `X-Forwarded-For` is whatever the client wrote, followed by one address per proxy it passed, each
appended by that proxy: only the entries our own proxies appended are facts. So the header is believed
only when the peer is a proxy listed in `QIANBAO_TRUSTED_PROXIES` (none by default), and read from the
right: trusted proxies are skipped and the first address that is not one is the client. An entry that is
not an IP address ends the walk at the proxy that passed it on. `qianbao serve` turns uvicorn's own
proxy-header handling off (it trusts 127.0.0.1 by default), so this is the only place that reads it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """An IP address from a forwarded entry (`1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:443`, `::1`)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client behind `peer`: `peer` itself unless it is a trusted proxy, else the right-most entry of
    `forwarded_for` (all X-Forwarded-For values, in order) that is not a trusted proxy."""

    def is_trusted(address: Address) -> bool:
        return any(address in network for network in trusted)

    nearest = parse_address(peer)
    if nearest is None or not is_trusted(nearest):
        return peer
    for entry in reversed(forwarded_for):
        address = parse_address(entry)
        if address is None:
            break  # not written by a proxy of ours: stop at the proxy that passed it on
        nearest = address
        if not is_trusted(address):
            break
    return str(nearest)


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    values = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    return [entry for value in values for entry in value.split(",")]


class TrustedProxyMiddleware:
    """Rewrites the ASGI `client` (and `scheme`, from X-Forwarded-Proto) only for trusted proxies."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Sequence[str]) -> None:
        self.app = app
        self.trusted = tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if self.trusted and scope["type"] in ("http", "websocket") and peer:
            client = client_address(peer[0], _forwarded_for(scope["headers"]), self.trusted)
            if client != peer[0]:
                scope["client"] = (client, 0)
                proto = dict(scope["headers"]).get(b"x-forwarded-proto", b"").decode("latin-1").strip()
                if proto in ("http", "https"):
                    scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
        await self.app(scope, receive, send)

"""Sending a webhook to the very address that was vetted.

Checking where a host resolves and then letting the HTTP client resolve it again to connect leaves a gap:
a DNS answer that changes in between (DNS rebinding, a TTL of zero) passes the check with a public
address and connects to loopback. `PinnedTransport` closes it: it resolves the host once, vets *every*
address it got (`addresses.reach`), and connects to a vetted address itself, by IP, while TLS still
checks the certificate against the URL's host name (sent as SNI) and the `Host` header still names it.
Each attempt resolves and connects afresh (no keep-alive: a pooled connection is keyed by IP, and must
not carry one host's verified TLS session into another host's request).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

import httpx2 as httpx

from qianbao.events.addresses import IPAddress, Reach, parse_address, reach

Resolver = Callable[[str, int], Sequence[str]]
# A host with more addresses is tried on its first few: each may cost a connect timeout.
MAX_ADDRESSES_TRIED = 3


def system_resolver(host: str, port: int) -> list[str]:
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if len(sockaddr) == 4 and sockaddr[3] and "%" not in address:
            address = f"{address}%{sockaddr[3]}"  # an IPv6 zone is kept, so that it is refused
        found.append(address)
    return found


class DestinationRefused(httpx.TransportError):
    """The host did not resolve, or resolved to an address a webhook may not reach: nothing was sent."""


class PinnedTransport(httpx.BaseTransport):
    """Wraps a transport (by default a plain HTTP one) so that every request connects only to an address
    of its host that `reach` allows: public ones, and loopback when `allow_loopback`. Plain http is sent
    to loopback only."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        resolver: Resolver = system_resolver,
        allow_loopback: bool = False,
    ) -> None:
        # A transport built here reads no proxy from the environment (only the CA bundle, SSL_CERT_FILE):
        # a proxy would resolve the host itself, after our check. No keep-alive (see the module).
        self._inner = inner or httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        self._resolver = resolver
        self._allow_loopback = allow_loopback

    def vetted_addresses(self, url: httpx.URL) -> list[IPAddress]:
        """Every address `url`'s host resolves to, if all of them may be reached; else DestinationRefused."""
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            answers = list(dict.fromkeys(self._resolver(host, port)))
        except (OSError, UnicodeError) as exc:
            raise DestinationRefused(f"{host} did not resolve: {exc}") from exc
        addresses = [parse_address(a) for a in answers]
        verdicts = {reach(a) if a is not None else Reach.FORBIDDEN for a in addresses}
        allowed = {Reach.PUBLIC, Reach.LOOPBACK} if self._allow_loopback else {Reach.PUBLIC}
        if not addresses or not verdicts <= allowed:
            raise DestinationRefused(f"{host} resolves to {answers}, not only to allowed addresses")
        if url.scheme != "https" and verdicts != {Reach.LOOPBACK}:
            raise DestinationRefused(f"plain http to {host}, which is not loopback")
        return [a for a in addresses if a is not None]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        *first, last = self.vetted_addresses(request.url)[:MAX_ADDRESSES_TRIED]
        for address in first:
            try:
                return self._send_to(address, request)
            except httpx.ConnectError:  # refused or unreachable, nothing sent: the next address
                continue
        return self._send_to(last, request)

    def _send_to(self, address: IPAddress, request: httpx.Request) -> httpx.Response:
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=request.headers,  # `Host` was set from the original URL
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": request.url.raw_host.decode("ascii")},
        )
        return self._inner.handle_request(pinned)

    def close(self) -> None:
        self._inner.close()

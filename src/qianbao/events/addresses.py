"""Which network addresses a webhook may reach: one rule, for registration and for every delivery, in
sandbox and production alike. Pure: no I/O.

A webhook URL is chosen by a user, and the server connects to it: without a rule, anyone could make the
server knock on its own loopback, the private network behind it, or a cloud metadata service. So an
address is *public* only if it is global unicast, judged after unwrapping the forms that carry an IPv4
address inside an IPv6 one (IPv4-mapped `::ffff:a.b.c.d` and NAT64 `64:ff9b::a.b.c.d` reach that IPv4
address). The deprecated transition forms (IPv4-compatible `::a.b.c.d`, 6to4 `2002::/16`, Teredo
`2001::/32`) and local-use NAT64 `64:ff9b:1::/48` are never public: no receiver needs them and their far
end is a relay we cannot judge. Python's `ipaddress.is_global` is the base; the rules below close its
gaps (it calls NAT64, 6to4, site-local and multicast addresses global, and varies between versions).

Loopback (`127.0.0.0/8`, `::1`) is its own verdict: sandbox servers may allow it, for a developer's own
receiver, behind `QIANBAO_WEBHOOKS_ALLOW_LOOPBACK`. Everything else is forbidden.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Reach(StrEnum):
    PUBLIC = "public"
    LOOPBACK = "loopback"  # this machine: only in sandbox mode, behind an explicit setting
    FORBIDDEN = "forbidden"


_V4_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_V6_LOOPBACK = ipaddress.IPv6Address("::1")
# Not caught by `is_global` on every Python version: the 6to4 relay anycast block (deprecated).
_V4_NEVER = (ipaddress.IPv4Network("192.88.99.0/24"),)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are IPv4
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")  # every public IPv6 address is in here
_V6_NEVER = (
    ipaddress.IPv6Network("2002::/16"),  # 6to4
    ipaddress.IPv6Network("2001::/32"),  # Teredo
    ipaddress.IPv6Network("2001:db8::/32"),  # documentation
    ipaddress.IPv6Network("3fff::/20"),  # documentation (RFC 9637)
)

_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
# Cloud metadata services by name (their addresses are link-local or private and refused anyway).
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.packet.net",
        "metadata.platformequinix.com",
    }
)
# Names that only mean something inside a network (RFC 6761/6762/8375 and common private-use ones).
LOCAL_SUFFIXES = (
    ".localhost",
    ".local",
    ".internal",
    ".localdomain",
    ".home.arpa",
    ".lan",
    ".home",
    ".corp",
    ".intranet",
    ".private",
)


def reach(ip: IPAddress) -> Reach:
    """Where a connection to `ip` goes: the public internet, this machine, or somewhere forbidden."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:  # a zone: link-local or site-scoped by definition
            return Reach.FORBIDDEN
        if ip.ipv4_mapped is not None:  # a dual-stack socket connects to the IPv4 address itself
            return reach(ip.ipv4_mapped)
        if ip in _NAT64:  # the translator connects to the embedded IPv4 address, never to our loopback
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            return Reach.PUBLIC if reach(embedded) is Reach.PUBLIC else Reach.FORBIDDEN
        if ip == _V6_LOOPBACK:
            return Reach.LOOPBACK
        if ip not in _GLOBAL_UNICAST or any(ip in net for net in _V6_NEVER):
            return Reach.FORBIDDEN
    elif ip in _V4_LOOPBACK:
        return Reach.LOOPBACK
    elif ip.is_reserved or any(ip in net for net in _V4_NEVER):
        return Reach.FORBIDDEN
    if not ip.is_global or ip.is_multicast:
        return Reach.FORBIDDEN
    return Reach.PUBLIC


def parse_address(text: str) -> IPAddress | None:
    """An address as a resolver writes it (`10.0.0.1`, `2001:db8::1`, `fe80::1%eth0`), or None."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_allowed(address: str, *, allow_loopback: bool = False) -> bool:
    """May a webhook connect to `address`? Public ones always; loopback only when allowed."""
    ip = parse_address(address)
    if ip is None:
        return False
    verdict = reach(ip)
    return verdict is Reach.PUBLIC or (allow_loopback and verdict is Reach.LOOPBACK)


def host_reach(host: str) -> Reach:
    """Where the host part of a URL leads, judged from its spelling alone (the resolved addresses are
    judged again at every delivery).

    Resolvers and URL parsers accept many spellings of one address: `2130706433`, `0177.0.0.1`,
    `0x7f.1` and `127.1` are all 127.0.0.1 to `inet_aton`; `localhost.` is `localhost`; `ＬＯＣＡＬＨＯＳＴ`
    and `127。0。0。1` are mapped to ASCII by IDNA. So the host is normalised as a resolver would, an IP
    address is accepted only in its usual form (`a.b.c.d` or `[v6]`), and names that only mean something
    inside a network (single labels, `.internal`, metadata services…) are forbidden."""
    name = host.rstrip(".").lower()
    ip = parse_address(name)
    if ip is not None:
        return reach(ip)
    try:
        name = name.encode("idna").decode("ascii").lower() if name else ""
    except UnicodeError:
        return Reach.FORBIDDEN
    if not _HOST_NAME.fullmatch(name):
        return Reach.FORBIDDEN  # percent-escapes, empty labels…: not a name any resolver should see
    ip = parse_address(name)
    if ip is not None:
        return reach(ip)
    labels = name.split(".")
    last = labels[-1]
    if spelled_ipv4(name) is not None or last.isdigit() or last.startswith("0x"):
        return Reach.FORBIDDEN  # an IPv4 address in another spelling, or a name no public zone has
    if name == "localhost" or name.endswith(".localhost"):
        return Reach.LOOPBACK
    if len(labels) == 1 or name.endswith(LOCAL_SUFFIXES) or name in METADATA_NAMES:
        return Reach.FORBIDDEN
    return Reach.PUBLIC


def spelled_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address `text` spells for `inet_aton` (and browsers): one to four dot-separated numbers,
    each decimal, octal (`0…`) or hexadecimal (`0x…`); the last one fills the remaining bytes."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_number(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    *head, last = [n for n in numbers if n is not None]
    if any(n > 0xFF for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for position, number in enumerate(head):
        value |= number << (8 * (3 - position))
    return ipaddress.IPv4Address(value)


def _number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits or not digits.isascii() or not digits.isalnum():
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None

"""Which addresses a webhook may reach (`events.addresses`): every non-public range, in every spelling, in
both modes; loopback only when allowed. Tables for the named ranges, properties for the embedded forms."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qianbao.events.addresses import Reach, address_allowed, host_reach, reach, spelled_ipv4
from qianbao.events.model import url_problem

PUBLIC_V4 = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "223.5.5.5", "192.0.0.9"]
PUBLIC_V6 = ["2001:4860:4860::8888", "2606:4700:4700::1111", "2400:3200::1"]


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",  # noqa: S104 - reaches this machine on Linux
        "0.1.2.3",  # "this network"
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",  # link-local: cloud metadata
        "169.254.0.23",  # Tencent Cloud metadata
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "100.100.100.200",  # Alibaba Cloud metadata, in the shared space
        "198.18.0.1",  # benchmarking
        "198.19.255.255",
        "192.0.2.1",  # documentation
        "198.51.100.1",
        "203.0.113.1",
        "192.0.0.170",  # IETF protocol assignments
        "192.88.99.1",  # 6to4 relay anycast
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "::",  # unspecified
        "fe80::1",  # link-local
        "fe80::1%eth0",
        "fec0::1",  # site-local (deprecated)
        "fc00::1",  # unique local
        "fd00:ec2::254",  # AWS metadata over IPv6
        "ff02::1",  # multicast
        "ff0e::1",
        "100::1",  # discard-only
        "2001:db8::1",  # documentation
        "3fff::1",
        "2001::1",  # Teredo
        "2002:808:808::1",  # 6to4, even of a public address
        "64:ff9b:1::a00:1",  # local-use NAT64
        "5f00::1",  # SRv6 SIDs
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1: the translator's loopback, not ours
        "::a00:1",  # IPv4-compatible (deprecated)
        "::808:808",
        "not an address",
        "",
    ],
)
def test_non_public_addresses_are_refused_with_or_without_loopback(address: str) -> None:
    assert not address_allowed(address)
    assert not address_allowed(address, allow_loopback=True)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.1"])
def test_loopback_only_when_allowed(address: str) -> None:
    assert not address_allowed(address)
    assert address_allowed(address, allow_loopback=True)


@pytest.mark.parametrize(
    "address", [*PUBLIC_V4, *PUBLIC_V6, "::ffff:8.8.8.8", "64:ff9b::808:808", "64:ff9b::5db8:d822"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address)
    assert address_allowed(address, allow_loopback=True)


IPV6_LOOPBACK = ipaddress.IPv6Address("::1")
ipv4s = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)


def embeddings(v4: ipaddress.IPv4Address) -> dict[str, ipaddress.IPv6Address]:
    n = int(v4)
    return {
        "mapped": ipaddress.IPv6Address((0xFFFF << 32) | n),
        "nat64": ipaddress.IPv6Address((0x0064FF9B << 96) | n),
        "compatible": ipaddress.IPv6Address(n),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1),
        "local_nat64": ipaddress.IPv6Address((0x0064FF9B0001 << 80) | n),
    }


@given(ipv4s)
def test_an_embedded_ipv4_address_is_judged_as_itself(v4: ipaddress.IPv4Address) -> None:
    forms = embeddings(v4)
    assert reach(forms["mapped"]) is reach(v4)
    expected_nat64 = Reach.PUBLIC if reach(v4) is Reach.PUBLIC else Reach.FORBIDDEN
    assert reach(forms["nat64"]) is expected_nat64
    for deprecated in ("compatible", "6to4", "local_nat64"):
        if forms[deprecated] != IPV6_LOOPBACK:
            assert reach(forms[deprecated]) is Reach.FORBIDDEN, deprecated


@given(ipv4s)
def test_a_non_public_ipv4_address_is_refused_in_every_ipv6_form(v4: ipaddress.IPv4Address) -> None:
    if reach(v4) is Reach.PUBLIC:
        return
    for form, v6 in embeddings(v4).items():
        is_loopback = (form == "mapped" and reach(v4) is Reach.LOOPBACK) or v6 == IPV6_LOOPBACK  # ::0.0.0.1
        if not is_loopback:
            assert not address_allowed(str(v6), allow_loopback=True), form


@given(st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address))
def test_only_global_unicast_ipv6_is_public(v6: ipaddress.IPv6Address) -> None:
    if (
        reach(v6) is Reach.PUBLIC
        and v6.ipv4_mapped is None
        and v6 not in ipaddress.ip_network("64:ff9b::/96")
    ):
        assert v6 in ipaddress.ip_network("2000::/3") and v6.is_global


# --- spellings of a host in a URL -----------------------------------------------------------------------


def spell(v4: ipaddress.IPv4Address, parts: int, radixes: list[str]) -> str:
    """`v4` written as `parts` numbers (the last one takes the remaining bytes), each in a radix."""
    packed = v4.packed
    numbers = [*packed[: parts - 1], int.from_bytes(packed[parts - 1 :], "big")]
    written = []
    for number, radix in zip(numbers, radixes, strict=False):
        if radix == "hex":
            written.append(hex(number))
        elif radix == "octal" and number:
            written.append("0" + format(number, "o"))
        else:
            written.append(str(number))
    return ".".join(written)


@given(
    ipv4s,
    st.integers(min_value=1, max_value=4),
    st.lists(st.sampled_from(["dec", "octal", "hex"]), min_size=4, max_size=4),
)
def test_every_inet_aton_spelling_is_read_as_the_address_it_is(
    v4: ipaddress.IPv4Address, parts: int, radixes: list[str]
) -> None:
    text = spell(v4, parts, radixes)
    assert spelled_ipv4(text) == v4
    assert socket.inet_aton(text) == v4.packed  # the C library agrees: this is what a resolver does
    if text != str(v4):  # an unusual spelling is refused, whatever the address
        assert host_reach(text) is Reach.FORBIDDEN
        for production in (False, True):
            for allow_loopback in (False, True):
                assert url_problem(f"https://{text}/h", production=production, allow_loopback=allow_loopback)


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # 127.0.0.1 in decimal
        "017700000001",  # octal
        "0x7f000001",  # hex
        "0x7f.1",
        "127.1",
        "127.0.1",
        "0177.0.0.1",
        "0",  # 0.0.0.0
        "0x0",
        "3232235777",  # 192.168.1.1
        "0xa9fea9fe",  # 169.254.169.254
        "169.254.43518",
        "10.1",
        "134744072",  # 8.8.8.8: public, but no URL needs to write it this way
        "1.2.3.4.5",
        "1.2.3.999",
        "shop.example.123",  # a numeric top label: an address in disguise to some resolvers
        "localhost.localdomain",
        "intranet",
        "db.internal",
        "printer.local",
        "router.lan",
        "nas.home.arpa",
        "metadata",
        "METADATA.GOOGLE.INTERNAL.",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.tencentyun.com.",
        "10.0.0.1",
        "10.0.0.1.",
        "192.168.1.1",
        "169.254.169.254",
        "::ffff:10.0.0.1",
        "::ffff:a00:1",
        "64:ff9b::a00:1",
        "2002:a00:1::",
        "::a00:1",
        "fe80::1%25eth0",
        "%31%32%37.0.0.1",
        "%6cocalhost",
        "a..b.example.com",
        "",
        ".",
        "ｍｅｔａｄａｔａ。ｇｏｏｇｌｅ。ｉｎｔｅｒｎａｌ",  # IDNA maps fullwidth letters and dots
        "１６９．２５４．１６９．２５４",
    ],
)
def test_hosts_that_are_not_public_in_any_spelling(host: str) -> None:
    assert host_reach(host) is Reach.FORBIDDEN


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost.",
        "LOCALHOST",
        "api.localhost",
        "127.0.0.1",
        "127.0.0.1.",
        "127.9.9.9",
        "::1",
        "::ffff:127.0.0.1",
        "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ",  # IDNA maps it to localhost
        "１２７．０．０．１",
    ],
)
def test_loopback_in_every_spelling(host: str) -> None:
    assert host_reach(host) is Reach.LOOPBACK


@pytest.mark.parametrize(
    "host",
    ["shop.example.com", "shop.example.com.", "bücher.de", "xn--bcher-kva.de", "8.8.8.8", "a_b.example.cn"],
)
def test_public_host_names(host: str) -> None:
    assert host_reach(host) is Reach.PUBLIC


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "https://2130706433/",
        "https://0x7f.1/",
        "https://127.1:8443/",
        "https://localhost./",
        "http://localhost./",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:a9fe:a9fe::]/",
        "https://169.254.169.254/",
        "https://10.0.0.1/",
        "https://192.168.1.1/",
        "https://metadata.google.internal/",
        "https://metadata/",
        "https://instance-data/",
    ],
)
def test_registration_refuses_each_bad_spelling_in_production_and_in_sandbox(url: str) -> None:
    assert url_problem(url, production=True) is not None
    assert url_problem(url, production=True, allow_loopback=True) is not None
    assert url_problem(url, production=False) is not None

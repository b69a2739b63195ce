"""Webhooks over real sockets: a delivery connects to the very address that was vetted (DNS rebinding
cannot reach loopback), TLS still verifies the URL's host name, and the delivery log says one neutral word
for every failure before a verified connection (a closed port, a silent one, a non-TLS service and a bad
certificate look alike)."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qianbao.events.sending import AttemptResult, Outgoing, new_http_client, send
from tests.support.receiver import running_receiver

PUBLIC = "93.184.216.34"


def message(url: str) -> Outgoing:
    return Outgoing(
        delivery_id="whd_test",
        endpoint_id="whe_test",
        url=url,
        secrets=("whsec_test",),
        event_id="evt_test",
        event_type="transfer.succeeded",
        event_created_at=0,
        payload={"transfer_id": "trf_x"},
    )


def to(address: str) -> Any:
    def resolver(host: str, port: int) -> list[str]:
        del host, port
        return [address]

    return resolver


def deliver(url: str, *, transport: httpx.BaseTransport | None = None, **options: Any) -> AttemptResult:
    with new_http_client(0.5, transport, **options) as client:
        return send(client, message(url), timestamp_s=1_700_000_000)


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def outcome(result: AttemptResult) -> tuple[Any, ...]:
    """Everything the delivery log shows of an attempt that got no answer (its latency: nothing)."""
    assert result.latency_ms is None
    return result.status_code, result.response_snippet, result.error


# --- pinned to the vetted address -----------------------------------------------------------------------


def test_a_real_receiver_gets_the_delivery_at_the_vetted_address_under_its_host_name() -> None:
    with running_receiver([200]) as (local, url):
        named = f"http://receiver.example:{port_of(url)}/hooks/qianbao"  # a name no DNS resolves to loopback
        result = deliver(named, resolver=to("127.0.0.1"), allow_loopback=True)
        assert result.status_code == 200 and result.error is None
        [request] = local.received
        assert request.path == "/hooks/qianbao"
        assert request.headers["Host"] == f"receiver.example:{port_of(url)}"
        assert request.headers["Qianbao-Event-Id"] == "evt_test"

        # The same loopback address without the setting: refused before any connection.
        refused = deliver(named, resolver=to("127.0.0.1"))
        assert outcome(refused) == (None, None, "destination_not_allowed")
        assert len(local.received) == 1


def test_dns_rebinding_cannot_reach_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host answers a public address when it is checked and loopback right after (TTL 0): the
    connection goes to the public address that was checked, never to the loopback receiver."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    answers = iter([PUBLIC, "127.0.0.1", "127.0.0.1", "127.0.0.1"])
    looked_up: list[str] = []
    connected: list[tuple[str, int]] = []

    def rebinding_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            looked_up.append(host)
            host = next(answers)
        return real_getaddrinfo(host, port, *args, **kwargs)

    def guarded_connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        if address[0] == PUBLIC:  # this test stays off the internet
            raise ConnectionRefusedError(111, "Connection refused")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", guarded_connect)
    with running_receiver([200]) as (local, url):
        port = port_of(url)
        result = deliver(f"https://rebind.example:{port}/hooks")
    assert local.received == []  # the loopback receiver never heard of it
    assert looked_up == ["rebind.example"]  # resolved once
    assert connected == [(PUBLIC, port)]  # and connected to what was vetted
    assert outcome(result) == (None, None, "connection_failed")


# --- TLS to a pinned address ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for `hooks.example`: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "cert.pem", folder / "key.pem"


@contextmanager
def tls_server(certificate: tuple[Path, Path], *, answer: bool) -> Iterator[tuple[int, list[Any]]]:
    """A TLS server on 127.0.0.1 for `hooks.example`: (port, what it saw: SNI names and requests). It
    answers 200, or, with `answer=False`, completes the handshake and then says nothing."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    seen: list[Any] = []

    def note_sni(_sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        seen.append(("sni", name))

    context.sni_callback = note_sni
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # to notice `stop`
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        if not answer:
                            stop.wait(5)
                            continue
                        seen.append(("request", read_request(tls)))
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                except (ssl.SSLError, OSError):
                    continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def read_request(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return data


def deliver_tls(certificate: tuple[Path, Path], host: str, port: int) -> AttemptResult:
    """A delivery to https://host:port/hooks, `host` resolving to 127.0.0.1, through a plain transport
    that trusts the test certificate."""
    context = ssl.create_default_context(cafile=str(certificate[0]))
    return deliver(
        f"https://{host}:{port}/hooks",
        transport=httpx.HTTPTransport(verify=context, trust_env=False),
        resolver=to("127.0.0.1"),
        allow_loopback=True,
    )


def test_tls_checks_the_urls_host_name_while_connecting_to_the_pinned_address(
    certificate: tuple[Path, Path],
) -> None:
    with tls_server(certificate, answer=True) as (port, seen):
        result = deliver_tls(certificate, "hooks.example", port)
        assert result.status_code == 200 and result.response_snippet == "ok"
        assert seen[0] == ("sni", "hooks.example")
        assert b"\r\nHost: hooks.example:" + str(port).encode() + b"\r\n" in seen[1][1]

        # A host name the certificate does not cover fails, though the address is the same.
        other = deliver_tls(certificate, "other.example", port)
        assert outcome(other) == (None, None, "connection_failed")


# --- neutral errors -------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_closed_port_an_open_one_and_a_bad_certificate_look_alike(certificate: tuple[Path, Path]) -> None:
    outcomes = {"closed": outcome(deliver_tls(certificate, "hooks.example", closed_port()))}
    with running_receiver([200]) as (_local, url):  # open, speaks plain HTTP: WRONG_VERSION_NUMBER
        outcomes["plain http"] = outcome(deliver_tls(certificate, "hooks.example", port_of(url)))
    with socket.create_server(("127.0.0.1", 0)) as silent:  # open, accepts, never says a word
        outcomes["silent"] = outcome(deliver_tls(certificate, "hooks.example", silent.getsockname()[1]))
    with tls_server(certificate, answer=True) as (port, _seen):  # TLS, but not for this host name
        outcomes["wrong name"] = outcome(deliver_tls(certificate, "wrong.example", port))
    assert outcomes == dict.fromkeys(outcomes, (None, None, "connection_failed"))


def test_after_a_verified_connection_a_silent_receiver_is_a_timeout(certificate: tuple[Path, Path]) -> None:
    with tls_server(certificate, answer=False) as (port, _seen):
        result = deliver_tls(certificate, "hooks.example", port)
    assert outcome(result) == (None, None, "timeout")


def test_proxies_from_the_environment_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would resolve the host itself, after the check: the webhook client never uses one."""
    with running_receiver([200]) as (proxy, proxy_url):
        proxy_address = proxy_url.rsplit("/", 2)[0]
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_address)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with running_receiver([200]) as (local, url):
            result = deliver(
                url.replace("127.0.0.1", "receiver.example"), resolver=to("127.0.0.1"), allow_loopback=True
            )
        assert result.status_code == 200 and len(local.received) == 1
        assert proxy.received == []


def test_each_attempt_opens_its_own_connection() -> None:
    with (
        running_receiver([200]) as (local, url),
        new_http_client(0.5, resolver=to("127.0.0.1"), allow_loopback=True) as client,
    ):
        for _ in range(3):
            assert send(client, message(url), timestamp_s=1_700_000_000).status_code == 200
        ports = {r.client_port for r in local.received}
    assert len(ports) == 3  # three TCP connections: none kept for another host's request

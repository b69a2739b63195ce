"""Request signing: round trip, tamper detection, the replay window, header parsing, a known-answer vector."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from qianbao.errors import Unauthenticated
from qianbao.security.request_signing import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    REPLAY_WINDOW_S,
    SignatureInvalid,
    SignedRequest,
    canonical_request,
    parse_signature_headers,
    sign_request,
    signing_headers,
    verify_request_signature,
)

SECRET = "sk_test_4f1c2b9e0d7a"  # noqa: S105 (a test secret)
NOW = 1_700_000_000
NONCE = "n0nce_abcdefghij-XYZ"
METHOD, PATH, QUERY, BODY = "POST", "/v1/transfers", "dry_run=1&b=2", b'{"amount":"12.30"}'


def _headers() -> dict[str, str]:
    return signing_headers("key_123", SECRET, METHOD, PATH, QUERY, BODY, now_s=NOW, nonce=NONCE)


def _verify(
    signed: SignedRequest,
    *,
    now_s: float = NOW,
    method: str = METHOD,
    path: str = PATH,
    query: str = QUERY,
    body: bytes = BODY,
    secret: str = SECRET,
    window_s: int = REPLAY_WINDOW_S,
) -> None:
    verify_request_signature(
        secret, signed, method=method, path=path, query=query, body=body, now_s=now_s, window_s=window_s
    )


def _parsed(headers: dict[str, str]) -> SignedRequest:
    signed = parse_signature_headers(headers)
    assert signed is not None
    return signed


def test_round_trip() -> None:
    headers = _headers()
    signed = _parsed(headers)
    assert signed == SignedRequest("key_123", NOW, NONCE, headers[HEADER_SIGNATURE])
    _verify(signed)  # does not raise


def test_default_nonce_and_timestamp_are_valid_and_fresh() -> None:
    headers = signing_headers("key_123", SECRET, "GET", "/v1/balance", "", b"")
    other = signing_headers("key_123", SECRET, "GET", "/v1/balance", "", b"")
    assert headers[HEADER_NONCE] != other[HEADER_NONCE]
    signed = _parsed(headers)
    verify_request_signature(
        SECRET, signed, method="GET", path="/v1/balance", query="", body=b"", now_s=signed.timestamp
    )


def test_method_case_does_not_matter() -> None:
    assert sign_request(SECRET, "post", "/p", "", "1", NONCE, b"") == sign_request(
        SECRET, "POST", "/p", "", "1", NONCE, b""
    )


@pytest.mark.parametrize(
    "change",
    [
        {"method": "PUT"},
        {"path": "/v1/transfers/"},
        {"path": "/v1/Transfers"},
        {"query": "dry_run=0&b=2"},
        {"query": "b=2&dry_run=1"},  # the raw query string is signed, not a normalised one
        {"query": ""},
        {"body": b'{"amount":"12.31"}'},
        {"body": b'{"amount":"12.30"} '},
        {"body": b""},
    ],
    ids=lambda change: f"{next(iter(change))}={next(iter(change.values()))!r}",
)
def test_changing_a_request_field_breaks_the_signature(change: dict[str, Any]) -> None:
    signed = _parsed(_headers())
    with pytest.raises(SignatureInvalid) as raised:
        _verify(signed, **change)
    assert raised.value.code == "signature_invalid"


def test_changing_the_timestamp_breaks_the_signature() -> None:
    signed = _parsed(_headers())
    moved = SignedRequest(signed.key_id, NOW + 1, signed.nonce, signed.signature)
    with pytest.raises(SignatureInvalid) as raised:
        _verify(moved)
    assert raised.value.code == "signature_invalid"


def test_changing_the_nonce_breaks_the_signature() -> None:
    signed = _parsed(_headers())
    assert NONCE[-1] != "Q"
    renonced = SignedRequest(signed.key_id, signed.timestamp, NONCE[:-1] + "Q", signed.signature)
    with pytest.raises(SignatureInvalid) as raised:
        _verify(renonced)
    assert raised.value.code == "signature_invalid"


def test_every_body_byte_is_covered() -> None:
    body = BODY
    signed = _parsed(_headers())
    for index in range(len(body)):
        tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
        with pytest.raises(SignatureInvalid):
            _verify(signed, body=tampered)


def test_wrong_secret_is_refused() -> None:
    signed = _parsed(_headers())
    with pytest.raises(SignatureInvalid) as raised:
        _verify(signed, secret=SECRET + "x")
    assert raised.value.code == "signature_invalid"


@pytest.mark.parametrize(
    "skew", [-REPLAY_WINDOW_S, -(REPLAY_WINDOW_S - 1), 0, REPLAY_WINDOW_S - 1, REPLAY_WINDOW_S]
)
def test_inside_the_window_is_accepted(skew: int) -> None:
    _verify(_parsed(_headers()), now_s=NOW + skew)


@pytest.mark.parametrize("skew", [REPLAY_WINDOW_S + 1, -(REPLAY_WINDOW_S + 1), 0.5 + REPLAY_WINDOW_S, 10**6])
def test_outside_the_window_is_expired(skew: float) -> None:
    with pytest.raises(SignatureInvalid) as raised:
        _verify(_parsed(_headers()), now_s=NOW + skew)
    assert raised.value.code == "signature_expired"


def test_window_is_configurable() -> None:
    signed = _parsed(_headers())
    _verify(signed, now_s=NOW + 30, window_s=30)
    with pytest.raises(SignatureInvalid) as raised:
        _verify(signed, now_s=NOW + 31, window_s=30)
    assert raised.value.code == "signature_expired"


def test_signature_invalid_is_an_authentication_error() -> None:
    error = SignatureInvalid("signature_expired", "old")
    assert isinstance(error, Unauthenticated)
    assert error.code == "signature_expired"
    assert SignatureInvalid("signature_invalid", "x").code == "signature_invalid"
    assert Unauthenticated("x").code == "unauthenticated"  # the per-instance code does not leak to the class


def test_known_answer_vector() -> None:
    body = b'{"amount":"100.00","currency":"CNY"}'
    body_hash = hashlib.sha256(body).hexdigest()
    canonical = f"POST\n/v1/payouts\na=1&b=%20x\n1700000000\nabcdefghijklmnop\n{body_hash}".encode()
    expected = "v1=" + hmac.new(b"partner-secret", canonical, hashlib.sha256).hexdigest()

    assert canonical_request("post", "/v1/payouts", "a=1&b=%20x", "1700000000", "abcdefghijklmnop", body) == (
        canonical
    )
    assert (
        sign_request(
            "partner-secret", "POST", "/v1/payouts", "a=1&b=%20x", "1700000000", "abcdefghijklmnop", body
        )
        == expected
    )
    # Pinned, so a change of algorithm cannot also change the test's own computation unnoticed.
    assert (
        hashlib.sha256(b"").hexdigest() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert (
        sign_request("key", "GET", "/", "", "0", "0000000000000000", b"")
        == "v1="
        + hmac.new(
            b"key",
            b"GET\n/\n\n0\n0000000000000000\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            hashlib.sha256,
        ).hexdigest()
    )


def test_no_signing_headers_means_unsigned() -> None:
    assert parse_signature_headers({}) is None
    assert parse_signature_headers({"Authorization": "Bearer x", "Content-Type": "application/json"}) is None


def test_header_names_are_case_insensitive() -> None:
    headers = {name.lower(): value for name, value in _headers().items()}
    assert _parsed(headers) == _parsed(_headers())


def test_uppercase_hex_signature_is_accepted() -> None:
    headers = _headers()
    headers[HEADER_SIGNATURE] = "v1=" + headers[HEADER_SIGNATURE][3:].upper()
    _verify(_parsed(headers))


@pytest.mark.parametrize("missing", [HEADER_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE])
def test_partial_headers_are_malformed(missing: str) -> None:
    headers = _headers()
    del headers[missing]
    with pytest.raises(SignatureInvalid) as raised:
        parse_signature_headers(headers)
    assert raised.value.code == "signature_malformed"
    assert missing in raised.value.detail


def test_duplicated_header_is_malformed() -> None:
    class RawHeaders(dict[str, str]):
        """Like Starlette's Headers: items() lists every header line, duplicates included."""

        def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
            return [*super().items(), ("qianbao-nonce", "another_nonce_value_1234")]

    with pytest.raises(SignatureInvalid) as raised:
        parse_signature_headers(RawHeaders(_headers()))
    assert raised.value.code == "signature_malformed"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (HEADER_KEY, ""),
        (HEADER_KEY, "key 123"),
        (HEADER_TIMESTAMP, ""),
        (HEADER_TIMESTAMP, "abc"),
        (HEADER_TIMESTAMP, "1700000000.5"),
        (HEADER_TIMESTAMP, "-1700000000"),
        (HEADER_TIMESTAMP, "+1700000000"),
        (HEADER_TIMESTAMP, " 1700000000"),
        (HEADER_TIMESTAMP, "01700000000"),
        (HEADER_TIMESTAMP, "1_700_000_000"),
        (HEADER_TIMESTAMP, "１７００００００００"),  # full-width digits: int() would accept them
        (HEADER_TIMESTAMP, "1" * 13),
        (HEADER_NONCE, "a" * 15),
        (HEADER_NONCE, "a" * 65),
        (HEADER_NONCE, "abcdefghijklmnop!"),
        (HEADER_NONCE, "abcdefghijklmno="),
        (HEADER_NONCE, "abcdefghijklmnö_"),
        (HEADER_SIGNATURE, "0" * 64),
        (HEADER_SIGNATURE, "v2=" + "0" * 64),
        (HEADER_SIGNATURE, "v1=" + "0" * 63),
        (HEADER_SIGNATURE, "v1=" + "0" * 65),
        (HEADER_SIGNATURE, "v1=" + "g" * 64),
        (HEADER_SIGNATURE, "v1=" + "0" * 64 + "\n"),
    ],
)
def test_malformed_values(header: str, value: str) -> None:
    headers = _headers()
    headers[header] = value
    with pytest.raises(SignatureInvalid) as raised:
        parse_signature_headers(headers)
    assert raised.value.code == "signature_malformed"


@pytest.mark.parametrize("nonce", ["a" * 16, "A-z_09" * 10 + "abcd"])
def test_nonce_length_bounds_are_inclusive(nonce: str) -> None:
    headers = _headers()
    headers[HEADER_NONCE] = nonce
    assert _parsed(headers).nonce == nonce

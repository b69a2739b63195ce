"""Tests for qianbao.identity.passkeys, driven by a real software authenticator through py_webauthn's real
verification: every refusal here is a refusal of genuinely signed (or genuinely tampered) data."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qianbao.errors import InvalidInput
from qianbao.identity.passkeys import (
    NewPasskey,
    PasskeyError,
    RelyingParty,
    authentication_options,
    b64url,
    credential_id_of,
    from_b64url,
    registration_options,
    verify_authentication,
    verify_registration,
)
from tests.support.authenticator import (
    AuthenticatorRefused,
    SoftwareAuthenticator,
    StoredCredential,
    unb64url,
)

RP = RelyingParty("localhost", "qianbao", ("http://localhost:8000", "http://127.0.0.1:8000"))
ORIGIN = "http://localhost:8000"
PHISHING_ORIGIN = "https://qianbao-login.example"
USER = b"user-handle-0001"


def make_authenticator(**kwargs: Any) -> SoftwareAuthenticator:
    return SoftwareAuthenticator(rp_id=RP.id, origin=ORIGIN, **kwargs)


def start_registration(user: bytes = USER, **kwargs: Any) -> tuple[dict[str, Any], bytes]:
    return registration_options(RP, user_handle=user, user_name="alice", display_name="Alice", **kwargs)


def register(authenticator: SoftwareAuthenticator, user: bytes = USER) -> NewPasskey:
    options, challenge = start_registration(user)
    return verify_registration(RP, authenticator.create(options), expected_challenge=challenge)


def assertion(
    authenticator: SoftwareAuthenticator, passkey: NewPasskey, **kwargs: Any
) -> tuple[dict[str, Any], bytes]:
    options, challenge = authentication_options(RP, allow_credential_ids=[passkey.credential_id])
    return authenticator.get(options, **kwargs), challenge


def sign_in(
    credential: dict[str, Any], challenge: bytes, passkey: NewPasskey, count: int | None = None
) -> int:
    return verify_authentication(
        RP,
        credential,
        expected_challenge=challenge,
        public_key=passkey.public_key,
        current_sign_count=passkey.sign_count if count is None else count,
    )


def tamper(credential: dict[str, Any], field: str, change: Callable[[bytes], bytes]) -> dict[str, Any]:
    tampered = copy.deepcopy(credential)
    tampered["response"][field] = b64url(change(unb64url(tampered["response"][field])))
    return tampered


def flip(index: int, mask: int = 0x01) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        changed = bytearray(data)
        changed[index] ^= mask
        return bytes(changed)

    return change


def refusal(call: Callable[[], object]) -> PasskeyError:
    with pytest.raises(PasskeyError) as info:
        call()
    return info.value


# -- relying party configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rp_id", "origins"),
    [
        ("", ("http://localhost:8000",)),
        ("https://localhost", ("http://localhost:8000",)),
        ("localhost:8000", ("http://localhost:8000",)),
        ("localhost", ()),
        ("localhost", ("http://localhost:8000/",)),
        ("localhost", ("localhost:8000",)),
        ("localhost", ("ftp://localhost",)),
        ("localhost", ("https://localhost/login",)),
    ],
)
def test_relying_party_refuses_misconfiguration(rp_id: str, origins: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        RelyingParty(rp_id, "qianbao", origins)


# -- options -----------------------------------------------------------------------------------------------


def test_registration_options_carry_challenge_user_policy_and_exclude_list() -> None:
    existing = [b"\x01" * 32, b"\x02" * 16]
    challenge = b"c" * 32
    options, returned = start_registration(exclude_credential_ids=existing, challenge=challenge)

    assert returned == challenge
    assert options["challenge"] == b64url(challenge)
    assert options["rp"] == {"id": "localhost", "name": "qianbao"}
    assert options["user"] == {"id": b64url(USER), "name": "alice", "displayName": "Alice"}
    assert [c["id"] for c in options["excludeCredentials"]] == [b64url(cid) for cid in existing]
    assert {c["type"] for c in options["excludeCredentials"]} == {"public-key"}
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["attestation"] == "none"
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert json.loads(json.dumps(options)) == options  # JSON-ready as is


def test_registration_options_draw_a_fresh_random_challenge() -> None:
    first, first_challenge = start_registration()
    _, second_challenge = start_registration()
    assert len(first_challenge) == 64
    assert first_challenge != second_challenge
    assert first["challenge"] == b64url(first_challenge)
    assert first["excludeCredentials"] == []


def test_exclude_list_stops_a_second_registration_on_the_same_authenticator() -> None:
    authenticator = make_authenticator()
    passkey = register(authenticator)
    options, _ = start_registration(exclude_credential_ids=[passkey.credential_id])
    with pytest.raises(AuthenticatorRefused, match="InvalidStateError"):
        authenticator.create(options)


@pytest.mark.parametrize(
    ("user", "user_name", "challenge"),
    [
        (b"", "alice", None),
        (b"u" * 65, "alice", None),
        (USER, "", None),
        (USER, "alice", b""),
        (USER, "alice", b"c" * 15),
    ],
)
def test_registration_options_refuse_bad_arguments(
    user: bytes, user_name: str, challenge: bytes | None
) -> None:
    error = refusal(
        lambda: registration_options(
            RP, user_handle=user, user_name=user_name, display_name="Alice", challenge=challenge
        )
    )
    assert error.reason == "invalid_options"


def test_authentication_options_carry_challenge_and_allow_list() -> None:
    allowed = [b"\x03" * 32, b"\x04" * 20]
    options, challenge = authentication_options(RP, allow_credential_ids=allowed, challenge=b"k" * 16)
    assert challenge == b"k" * 16
    assert options["challenge"] == b64url(challenge)
    assert options["rpId"] == "localhost"
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(cid) for cid in allowed]
    assert options["userVerification"] == "required"


def test_authentication_options_without_allow_list_draw_a_random_challenge() -> None:
    options, challenge = authentication_options(RP)
    assert len(challenge) == 64
    assert options["allowCredentials"] == []
    assert authentication_options(RP)[1] != challenge
    assert refusal(lambda: authentication_options(RP, challenge=b"short")).reason == "invalid_options"


# -- the happy path ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
def test_register_then_sign_in(algorithm: str) -> None:
    authenticator = make_authenticator(algorithm=algorithm, aaguid=bytes(range(16)))
    options, challenge = start_registration()
    created = authenticator.create(options)
    passkey = verify_registration(RP, created, expected_challenge=challenge)

    assert passkey.credential_id == credential_id_of(created)
    assert passkey.credential_id in authenticator.credentials
    assert passkey.sign_count == 0
    assert passkey.aaguid == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert passkey.transports == ("hybrid", "internal")
    assert passkey.backed_up is False

    first, first_challenge = assertion(authenticator, passkey)
    assert credential_id_of(first) == passkey.credential_id
    assert sign_in(first, first_challenge, passkey) == 1
    second, second_challenge = assertion(authenticator, passkey)
    assert sign_in(second, second_challenge, passkey, count=1) == 2


def test_credentials_as_json_strings_and_a_second_origin_are_accepted() -> None:
    authenticator = SoftwareAuthenticator(rp_id="localhost", origin="http://127.0.0.1:8000", backed_up=True)
    options, challenge = start_registration()
    passkey = verify_registration(RP, json.dumps(authenticator.create(options)), expected_challenge=challenge)
    assert passkey.backed_up is True

    options, challenge = authentication_options(RP)  # usernameless: the authenticator picks its passkey
    credential = json.dumps(authenticator.get(options))
    assert credential_id_of(credential) == passkey.credential_id
    assert sign_in(json.loads(credential), challenge, passkey) == 1
    assert (
        verify_authentication(
            RP, credential, expected_challenge=challenge, public_key=passkey.public_key, current_sign_count=0
        )
        == 1
    )


def test_authenticators_without_a_counter_stay_at_zero() -> None:
    authenticator = make_authenticator(uses_counter=False)
    passkey = register(authenticator)
    for _ in range(2):
        credential, challenge = assertion(authenticator, passkey)
        assert sign_in(credential, challenge, passkey) == 0


def test_expected_user_handle_must_match_the_assertions() -> None:
    authenticator = make_authenticator()
    passkey = register(authenticator)
    credential, challenge = assertion(authenticator, passkey)

    def check(expected: bytes) -> int:
        return verify_authentication(
            RP,
            credential,
            expected_challenge=challenge,
            public_key=passkey.public_key,
            current_sign_count=0,
            expected_user_handle=expected,
        )

    assert check(USER) == 1
    assert refusal(lambda: check(b"someone-else")).reason == "user_handle_mismatch"


# -- registration refusals ---------------------------------------------------------------------------------


def test_registration_refuses_another_challenge() -> None:
    options, _ = start_registration()
    created = make_authenticator().create(options)
    error = refusal(lambda: verify_registration(RP, created, expected_challenge=b"x" * 64))
    assert error.reason == "challenge_mismatch"


def test_registration_refuses_an_empty_expected_challenge() -> None:
    options, _ = start_registration(challenge=b"c" * 16)
    created = make_authenticator().create(options)
    assert (
        refusal(lambda: verify_registration(RP, created, expected_challenge=b"")).reason
        == "challenge_mismatch"
    )


@pytest.mark.parametrize(
    ("change", "create_kwargs", "reason"),
    [
        ({"origin": PHISHING_ORIGIN}, {}, "origin_mismatch"),
        ({"origin": "http://localhost:8001"}, {}, "origin_mismatch"),
        ({"rp_id": "qianbao-login.example"}, {}, "rp_id_mismatch"),
        ({}, {"user_verified": False}, "user_not_verified"),
        ({}, {"user_present": False}, "user_not_present"),
    ],
)
def test_registration_refusals(change: dict[str, str], create_kwargs: dict[str, bool], reason: str) -> None:
    authenticator = make_authenticator()
    for attribute, value in change.items():
        setattr(authenticator, attribute, value)
    options, challenge = start_registration()
    created = authenticator.create(options, **create_kwargs)
    error = refusal(lambda: verify_registration(RP, created, expected_challenge=challenge))
    assert error.reason == reason


def test_registration_refuses_an_assertion_dressed_as_a_registration() -> None:
    authenticator = make_authenticator()
    passkey = register(authenticator)
    options, challenge = authentication_options(RP)
    credential = authenticator.get(options)
    credential["response"]["attestationObject"] = b64url(b"\xa0")  # an empty CBOR map
    error = refusal(lambda: verify_registration(RP, credential, expected_challenge=challenge))
    assert error.reason == "wrong_ceremony"
    assert passkey.credential_id == credential_id_of(credential)


def test_registration_refuses_an_algorithm_we_do_not_accept() -> None:
    # py_webauthn knows ES512 (-36), but our policy does not accept it. "none" attestation signs nothing, so
    # rewriting the COSE key's alg is enough to present such a key.
    options, challenge = start_registration()
    created = make_authenticator().create(options)

    def claim_es512(attestation_object: bytes) -> bytes:
        decoded = cbor2.loads(attestation_object)
        auth_data = decoded["authData"]
        key_start = 37 + 16 + 2 + int.from_bytes(auth_data[53:55], "big")
        cose_key = cbor2.loads(auth_data[key_start:])
        cose_key[3] = -36
        decoded["authData"] = auth_data[:key_start] + cbor2.dumps(cose_key)
        return bytes(cbor2.dumps(decoded))

    es512 = tamper(created, "attestationObject", claim_es512)
    assert verify_registration(RP, created, expected_challenge=challenge).sign_count == 0
    error = refusal(lambda: verify_registration(RP, es512, expected_challenge=challenge))
    assert error.reason == "unsupported_algorithm"


# -- authentication refusals -------------------------------------------------------------------------------


@pytest.fixture
def registered() -> tuple[SoftwareAuthenticator, NewPasskey]:
    authenticator = make_authenticator()
    return authenticator, register(authenticator)


def test_authentication_refuses_another_challenge(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    credential, _ = assertion(authenticator, passkey)
    _, other_challenge = authentication_options(RP)
    assert refusal(lambda: sign_in(credential, other_challenge, passkey)).reason == "challenge_mismatch"


@pytest.mark.parametrize(
    ("change", "get_kwargs", "reason"),
    [
        ({"origin": PHISHING_ORIGIN}, {}, "origin_mismatch"),
        ({"rp_id": "qianbao-login.example"}, {}, "rp_id_mismatch"),
        ({}, {"user_verified": False}, "user_not_verified"),
        ({}, {"user_present": False}, "user_not_present"),
    ],
)
def test_authentication_refusals(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
    change: dict[str, str],
    get_kwargs: dict[str, bool],
    reason: str,
) -> None:
    authenticator, passkey = registered
    for attribute, value in change.items():
        setattr(authenticator, attribute, value)
    credential, challenge = assertion(authenticator, passkey, **get_kwargs)
    assert refusal(lambda: sign_in(credential, challenge, passkey)).reason == reason


def test_authentication_refuses_a_tampered_signature(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    credential, challenge = assertion(authenticator, passkey)
    tampered = tamper(credential, "signature", flip(-1))
    assert refusal(lambda: sign_in(tampered, challenge, passkey)).reason == "bad_signature"
    assert sign_in(credential, challenge, passkey) == 1  # the untampered one was good


def test_authentication_refuses_a_forged_user_verified_flag(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    credential, challenge = assertion(authenticator, passkey, user_verified=False)
    forged = tamper(credential, "authenticatorData", flip(32, 0x04))  # set UV after signing
    assert refusal(lambda: sign_in(forged, challenge, passkey)).reason == "bad_signature"


def test_authentication_refuses_a_raised_counter(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    credential, challenge = assertion(authenticator, passkey)
    raised = tamper(credential, "authenticatorData", lambda data: data[:33] + (2**31).to_bytes(4, "big"))
    assert refusal(lambda: sign_in(raised, challenge, passkey)).reason == "bad_signature"


def test_authentication_refuses_tampered_client_data(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    credential, challenge = assertion(authenticator, passkey)
    tampered = tamper(
        credential, "clientDataJSON", lambda data: data.replace(b'"crossOrigin":false', b'"a":1')
    )
    assert refusal(lambda: sign_in(tampered, challenge, passkey)).reason == "bad_signature"


def test_authentication_refuses_a_replayed_assertion(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    credential, challenge = assertion(authenticator, passkey)
    count = sign_in(credential, challenge, passkey)
    assert count == 1
    error = refusal(lambda: sign_in(credential, challenge, passkey, count=count))
    assert error.reason == "sign_count_not_increased"


def test_authentication_refuses_a_cloned_authenticator(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    stored = authenticator.credentials[passkey.credential_id]
    clone = make_authenticator()
    clone.credentials[passkey.credential_id] = dataclasses.replace(stored)  # copied at count 0
    count = passkey.sign_count
    for _ in range(3):  # the original moves on to 3
        credential, challenge = assertion(authenticator, passkey)
        count = sign_in(credential, challenge, passkey, count=count)
    assert count == 3

    credential, challenge = assertion(clone, passkey)  # the clone says 1
    assert (
        refusal(lambda: sign_in(credential, challenge, passkey, count=count)).reason
        == "sign_count_not_increased"
    )


def test_a_counter_that_drops_to_zero_is_refused(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    authenticator.uses_counter = False
    credential, challenge = assertion(authenticator, passkey)
    assert (
        refusal(lambda: sign_in(credential, challenge, passkey, count=5)).reason == "sign_count_not_increased"
    )


def test_authentication_refuses_another_passkeys_public_key() -> None:
    authenticator = make_authenticator()
    mine = register(authenticator, b"user-mine")
    other_device = make_authenticator()
    theirs = register(other_device, b"user-theirs")
    credential, challenge = assertion(other_device, theirs)
    # The attacker's assertion presented against my stored key (e.g. my credential id swapped in):
    forged = copy.deepcopy(credential)
    forged["id"] = forged["rawId"] = b64url(mine.credential_id)
    for presented in (credential, forged):
        with pytest.raises(PasskeyError) as info:
            sign_in(presented, challenge, mine)
        assert info.value.reason == "bad_signature"


def test_authentication_refuses_a_corrupt_stored_public_key(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    credential, challenge = assertion(authenticator, passkey)
    for stored_key in (b"", b"\xff", b"\xa1\x01\x02", b"\x04" + b"\x00" * 64):
        with pytest.raises(PasskeyError) as info:
            sign_in(credential, challenge, dataclasses.replace(passkey, public_key=stored_key))
        assert info.value.reason == "malformed"


def test_authentication_refuses_an_empty_expected_challenge(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    credential, _ = assertion(authenticator, passkey)
    assert refusal(lambda: sign_in(credential, b"", passkey)).reason == "challenge_mismatch"


# -- malformed input ---------------------------------------------------------------------------------------


def _without(path: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    def change(credential: dict[str, Any]) -> Any:
        target = credential
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return credential

    return change


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(credential: dict[str, Any]) -> Any:
        target = credential
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return credential

    return change


MALFORMATIONS: list[Callable[[dict[str, Any]], Any]] = [
    lambda _: "{not json",
    lambda _: "[]",
    lambda _: [],
    _without(("rawId",)),
    _without(("response",)),
    _without(("response", "clientDataJSON")),
    _set(("type",), "password"),
    _set(("id",), "AAAA"),
    _set(("rawId",), 12),
    _set(("response",), "nope"),
    _set(("response", "clientDataJSON"), b64url(b"not json")),
    _set(("response", "clientDataJSON"), b64url(b'{"type":"webauthn.get"}')),
    _set(("response", "clientDataJSON"), "***"),
]


@pytest.mark.parametrize("malform", MALFORMATIONS)
def test_malformed_registrations_are_refused(malform: Callable[[dict[str, Any]], Any]) -> None:
    options, challenge = start_registration()
    created = malform(make_authenticator().create(options))
    error = refusal(lambda: verify_registration(RP, created, expected_challenge=challenge))
    assert error.reason == "malformed"


@pytest.mark.parametrize(
    "malform",
    [
        *MALFORMATIONS,
        _set(("response", "authenticatorData"), b64url(b"\x00" * 36)),
        _set(("response", "signature"), 7),
        _set(("response", "userHandle"), 7),
    ],
)
def test_malformed_assertions_are_refused(
    registered: tuple[SoftwareAuthenticator, NewPasskey], malform: Callable[[dict[str, Any]], Any]
) -> None:
    authenticator, passkey = registered
    credential, challenge = assertion(authenticator, passkey)
    assert refusal(lambda: sign_in(malform(credential), challenge, passkey)).reason == "malformed"


def test_malformed_attestation_objects_are_refused() -> None:
    options, challenge = start_registration()
    created = make_authenticator().create(options)
    for garbage in (b"", b"\xff", b"\xa0", b"\x82\x01\x02"):
        created["response"]["attestationObject"] = b64url(garbage)
        with pytest.raises(PasskeyError) as info:
            verify_registration(RP, created, expected_challenge=challenge)
        assert info.value.reason == "malformed"


def test_passkey_error_is_invalid_input_with_a_cause_and_no_secrets(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    authenticator, passkey = registered
    authenticator.origin = PHISHING_ORIGIN
    credential, challenge = assertion(authenticator, passkey)
    error = refusal(lambda: sign_in(credential, challenge, passkey))
    assert isinstance(error, InvalidInput)
    assert error.code == "passkey_invalid"
    assert error.extra == {"reason": "origin_mismatch"}
    assert error.__cause__ is not None
    assert "origin" in error.detail
    for secret in (b64url(challenge), b64url(passkey.public_key), credential["response"]["signature"]):
        assert secret not in error.detail


# -- credential ids and base64url --------------------------------------------------------------------------


def test_credential_id_of() -> None:
    credential = {"id": "AQID", "rawId": "AQID", "type": "public-key", "response": {}}
    assert credential_id_of(credential) == b"\x01\x02\x03"
    assert credential_id_of(json.dumps(credential)) == b"\x01\x02\x03"


@pytest.mark.parametrize(
    "credential",
    [
        "{",
        "[1]",
        "null",
        {},
        {"rawId": None},
        {"rawId": ""},
        {"rawId": "AQ=="},
        {"rawId": "A"},
        {"rawId": "a+b/"},
        {"rawId": b64url(b"\x00" * 1024)},
        17,
    ],  # fmt: skip
)
def test_credential_id_of_refuses_malformed_credentials(credential: Any) -> None:
    assert refusal(lambda: credential_id_of(credential)).reason == "malformed"


@given(st.binary(max_size=200))
def test_b64url_round_trips_without_padding(data: bytes) -> None:
    text = b64url(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert from_b64url(text) == data


@pytest.mark.parametrize("text", ["A", "AQ==", "AQ=", "a+b/", "a b", "AQ\n", "é"])
def test_from_b64url_refuses_bad_input(text: str) -> None:
    assert refusal(lambda: from_b64url(text)).reason == "malformed"


# -- properties: any corruption is a PasskeyError, never another exception --------------------------------


@functools.cache
def _signed_assertion() -> tuple[dict[str, Any], bytes, NewPasskey]:
    authenticator = make_authenticator()
    passkey = register(authenticator)
    credential, challenge = assertion(authenticator, passkey)
    assert sign_in(credential, challenge, passkey) == 1
    return credential, challenge, passkey


@functools.cache
def _created() -> tuple[dict[str, Any], bytes]:
    options, challenge = start_registration()
    return make_authenticator().create(options), challenge


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(["clientDataJSON", "authenticatorData", "signature"]),
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_flipped_byte_in_an_assertion_is_refused(field: str, position: float, mask: int) -> None:
    credential, challenge, passkey = _signed_assertion()
    length = len(unb64url(credential["response"][field]))
    tampered = tamper(credential, field, flip(int(position * length), mask))
    refusal(lambda: sign_in(tampered, challenge, passkey))


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["clientDataJSON", "authenticatorData", "signature", "userHandle", "rawId"]),
    garbage=st.one_of(st.binary(max_size=80).map(b64url), st.text(max_size=40), st.integers(), st.none()),
)
def test_garbage_fields_in_an_assertion_are_refused(field: str, garbage: Any) -> None:
    credential, challenge, passkey = _signed_assertion()
    broken = copy.deepcopy(credential)
    (broken if field == "rawId" else broken["response"])[field] = garbage
    if field == "userHandle":  # not signed: a decodable value verifies, anything else is refused; no crash
        try:
            sign_in(broken, challenge, passkey)
        except PasskeyError as error:
            assert error.reason == "malformed"
        return
    refusal(lambda: sign_in(broken, challenge, passkey))


@settings(max_examples=300, deadline=None)
@given(
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    mask=st.integers(min_value=1, max_value=255),
)
def test_a_flipped_byte_in_a_registration_is_refused_or_harmless(position: float, mask: int) -> None:
    # "none" attestation signs nothing, so some flips (e.g. in the AAGUID) still verify; none may crash.
    created, challenge = _created()
    length = len(unb64url(created["response"]["attestationObject"]))
    tampered = tamper(created, "attestationObject", flip(int(position * length), mask))
    try:
        passkey = verify_registration(RP, tampered, expected_challenge=challenge)
    except PasskeyError:
        return
    assert len(passkey.credential_id) > 0


def test_the_stored_credential_is_what_the_authenticator_signs_with(
    registered: tuple[SoftwareAuthenticator, NewPasskey],
) -> None:
    # Guards the test authenticator itself: its stored key, user handle and counter are the ones used.
    authenticator, passkey = registered
    stored = authenticator.credentials[passkey.credential_id]
    assert isinstance(stored, StoredCredential)
    assert stored.user_handle == USER
    credential, _ = assertion(authenticator, passkey)
    assert unb64url(credential["response"]["userHandle"]) == USER
    data = unb64url(credential["response"]["authenticatorData"])
    assert data[:32] == hashlib.sha256(b"localhost").digest()
    assert int.from_bytes(data[33:37], "big") == stored.sign_count == 1

"""Tests for qianbao.security.crypto: field tokens, data-key wrapping, key material and the blind index.

The known-answer tests build tokens and wrapped keys by hand from the documented format, so a change to
the format (which would make every stored ciphertext unreadable) fails here rather than in production.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from qianbao.security.crypto import (
    BlindIndex,
    CryptoError,
    FieldCipher,
    KeyMaterial,
    UnknownKeyError,
    generate_key_b64,
    key_fingerprint,
    load_key_material,
    new_data_key,
    new_data_key_id,
    token_key_id,
    unwrap_data_key,
    wrap_data_key,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
MASTER = bytes(range(200, 232))
CONTEXT = "users.phone"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def payload_of(token: str) -> bytes:
    return b64url_decode(token.split(".")[2])


@pytest.fixture
def cipher() -> FieldCipher:
    return FieldCipher({"dk_a": KEY_A, "dk_b": KEY_B}, "dk_a")


# --- field tokens: round trips and format ----------------------------------------------------------------


@given(plaintext=st.text(), context=st.text(min_size=1))
def test_round_trip_of_any_text(plaintext: str, context: str) -> None:
    cipher = FieldCipher({"dk_a": KEY_A}, "dk_a")
    assert cipher.decrypt(cipher.encrypt(plaintext, context=context), context=context) == plaintext


@pytest.mark.parametrize("plaintext", ["", "+8613800138000", "张三", "110101199003074514", "😀 \x00 tab\t"])
def test_round_trip_examples(cipher: FieldCipher, plaintext: str) -> None:
    token = cipher.encrypt(plaintext, context=CONTEXT)
    assert cipher.decrypt(token, context=CONTEXT) == plaintext


def test_token_format_and_active_key(cipher: FieldCipher) -> None:
    token = cipher.encrypt("hello", context=CONTEXT)
    version, key_id, payload = token.split(".")
    assert (version, key_id) == ("v1", "dk_a")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", payload)
    # nonce (12) + ciphertext (5) + tag (16)
    assert len(b64url_decode(payload)) == 12 + 5 + 16
    assert token_key_id(token) == "dk_a" == cipher.active_key_id


def test_encryption_is_randomised(cipher: FieldCipher) -> None:
    tokens = {cipher.encrypt("same value", context=CONTEXT) for _ in range(20)}
    assert len(tokens) == 20


def test_known_answer_token_built_from_the_documented_format(cipher: FieldCipher) -> None:
    nonce = bytes(12)
    aad = b"qianbao field v1|" + CONTEXT.encode() + b"|" + b"dk_b"
    sealed = AESGCM(KEY_B).encrypt(nonce, "张三".encode(), aad)
    token = "v1.dk_b." + b64url(nonce + sealed)
    assert cipher.decrypt(token, context=CONTEXT) == "张三"


def test_token_decrypts_with_the_documented_aad(cipher: FieldCipher) -> None:
    token = cipher.encrypt("secret", context=CONTEXT)
    raw = payload_of(token)
    aad = b"qianbao field v1|" + CONTEXT.encode() + b"|dk_a"
    assert AESGCM(KEY_A).decrypt(raw[:12], raw[12:], aad) == b"secret"


@given(plaintext=st.text(min_size=8))
def test_token_never_contains_the_plaintext(plaintext: str) -> None:
    cipher = FieldCipher({"dk_a": KEY_A}, "dk_a")
    token = cipher.encrypt(plaintext, context=CONTEXT)
    assert plaintext not in token
    assert plaintext.encode() not in payload_of(token)
    assert b64url(plaintext.encode())[:8] not in token


# --- field tokens: binding and tampering ------------------------------------------------------------------


def test_token_is_bound_to_its_context(cipher: FieldCipher) -> None:
    token = cipher.encrypt("+8613800138000", context="users.phone")
    with pytest.raises(CryptoError) as excinfo:
        cipher.decrypt(token, context="users.email")
    assert not isinstance(excinfo.value, UnknownKeyError)


def test_relabelling_the_key_id_fails_even_with_identical_key_bytes() -> None:
    # Same key under two ids: only the AAD binding of the key id can catch the relabelling.
    cipher = FieldCipher({"dk_a": KEY_A, "dk_twin": KEY_A}, "dk_a")
    token = cipher.encrypt("value", context=CONTEXT)
    relabelled = token.replace("v1.dk_a.", "v1.dk_twin.")
    with pytest.raises(CryptoError):
        cipher.decrypt(relabelled, context=CONTEXT)


def test_flipping_any_payload_byte_fails(cipher: FieldCipher) -> None:
    token = cipher.encrypt("a value worth protecting", context=CONTEXT)
    raw = payload_of(token)
    for position in range(len(raw)):
        for mask in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[position] ^= mask
            with pytest.raises(CryptoError):
                cipher.decrypt(f"v1.dk_a.{b64url(bytes(tampered))}", context=CONTEXT)


def test_changing_any_character_of_the_token_fails(cipher: FieldCipher) -> None:
    # Including the last base64 character, whose unused low bits a lenient decoder would ignore.
    token = cipher.encrypt("abcd", context=CONTEXT)
    for position, character in enumerate(token):
        for replacement in "AB-.":
            if replacement == character:
                continue
            tampered = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(CryptoError):
                cipher.decrypt(tampered, context=CONTEXT)


def test_non_canonical_base64_is_refused(cipher: FieldCipher) -> None:
    # A 32-byte payload is 43 base64 characters; the last one carries 2 unused bits. A lenient decoder
    # ignores them, so two spellings would decrypt to the same value.
    token = cipher.encrypt("abcd", context=CONTEXT)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 0b01]
    assert len(payload_of(token)) == 32
    assert payload_of(respelled) == payload_of(token)  # same bytes, another spelling
    with pytest.raises(CryptoError):
        cipher.decrypt(respelled, context=CONTEXT)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1.dk_a",
        "v1.dk_a.",
        "v2.dk_a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.dk_a.AAAA.AAAA",
        "v1.dk_a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "v1.dk_a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",
        "v1.dk_a.AAAA",  # shorter than nonce + tag
        "v1.dk|a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1..AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_malformed_tokens_are_refused(cipher: FieldCipher, token: str) -> None:
    with pytest.raises(CryptoError):
        cipher.decrypt(token, context=CONTEXT)
    with pytest.raises(CryptoError):
        token_key_id(token)


def test_unknown_key_id_raises_unknown_key_error_and_reloading_fixes_it() -> None:
    writer = FieldCipher({"dk_new": KEY_B}, "dk_new")
    reader = FieldCipher({"dk_a": KEY_A}, "dk_a")
    token = writer.encrypt("value", context=CONTEXT)
    with pytest.raises(UnknownKeyError) as excinfo:
        reader.decrypt(token, context=CONTEXT)
    assert excinfo.value.key_id == "dk_new"
    assert isinstance(excinfo.value, CryptoError)
    assert not reader.knows("dk_new")
    reloaded = reader.with_keys({"dk_a": KEY_A, "dk_new": KEY_B}, "dk_a")
    assert reloaded.knows("dk_new")
    assert reloaded.decrypt(token, context=CONTEXT) == "value"


def test_rotation_keeps_old_tokens_readable_and_writes_under_the_new_key(cipher: FieldCipher) -> None:
    old = cipher.encrypt("value", context=CONTEXT)
    rotated = cipher.with_keys({"dk_a": KEY_A, "dk_b": KEY_B}, "dk_b")
    assert cipher.active_key_id == "dk_a"  # the original is unchanged
    assert rotated.active_key_id == "dk_b"
    assert token_key_id(rotated.encrypt("value", context=CONTEXT)) == "dk_b"
    assert rotated.decrypt(old, context=CONTEXT) == "value"


def test_cipher_is_not_affected_by_later_mutation_of_its_key_mapping() -> None:
    key = bytearray(KEY_A)
    keys = {"dk_a": key}
    cipher = FieldCipher(keys, "dk_a")  # type: ignore[arg-type]  # a bytearray key is copied
    token = cipher.encrypt("value", context=CONTEXT)
    key[0] ^= 0xFF
    keys.clear()
    assert cipher.knows("dk_a")
    assert cipher.decrypt(token, context=CONTEXT) == "value"


@pytest.mark.parametrize(
    ("keys", "active"),
    [
        ({"dk_a": KEY_A}, "dk_missing"),
        ({}, "dk_a"),
        ({"dk_a": KEY_A[:16]}, "dk_a"),
        ({"dk_a": KEY_A + b"x"}, "dk_a"),
        ({"dk.a": KEY_A}, "dk.a"),
        ({"dk|a": KEY_A}, "dk|a"),
        ({"": KEY_A}, ""),
    ],
)
def test_invalid_cipher_configuration_is_refused(keys: dict[str, bytes], active: str) -> None:
    with pytest.raises(CryptoError):
        FieldCipher(keys, active)


def test_empty_context_is_refused(cipher: FieldCipher) -> None:
    with pytest.raises(CryptoError):
        cipher.encrypt("value", context="")


def test_error_messages_do_not_contain_the_plaintext(cipher: FieldCipher) -> None:
    with pytest.raises(CryptoError) as excinfo:
        cipher.encrypt("secret-\ud800-value", context=CONTEXT)
    assert "secret" not in str(excinfo.value)
    assert excinfo.value.__suppress_context__


# --- data keys ------------------------------------------------------------------------------------------


def test_new_data_key_ids_and_keys() -> None:
    ids = {new_data_key_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"dk_[0-9a-f]{16}", key_id) for key_id in ids)
    keys = {new_data_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(key) == 32 for key in keys)


def test_wrap_unwrap_round_trip_and_format() -> None:
    key_id, data_key = new_data_key_id(), new_data_key()
    wrapped = wrap_data_key(MASTER, key_id, data_key)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", wrapped)
    assert len(b64url_decode(wrapped)) == 12 + 32 + 16
    assert unwrap_data_key(MASTER, key_id, wrapped) == data_key
    assert wrap_data_key(MASTER, key_id, data_key) != wrapped  # random nonce


def test_unwrap_known_answer_from_the_documented_format() -> None:
    nonce = bytes(range(12))
    sealed = AESGCM(MASTER).encrypt(nonce, KEY_A, b"qianbao dek dk_0123456789abcdef")
    assert unwrap_data_key(MASTER, "dk_0123456789abcdef", b64url(nonce + sealed)) == KEY_A


def test_unwrap_with_the_wrong_master_key_fails() -> None:
    wrapped = wrap_data_key(MASTER, "dk_a", KEY_A)
    with pytest.raises(CryptoError) as excinfo:
        unwrap_data_key(KEY_B, "dk_a", wrapped)
    assert key_fingerprint(KEY_B) in str(excinfo.value)
    assert KEY_B.hex() not in str(excinfo.value)


def test_unwrap_for_another_key_id_fails() -> None:
    wrapped = wrap_data_key(MASTER, "dk_a", KEY_A)
    with pytest.raises(CryptoError):
        unwrap_data_key(MASTER, "dk_b", wrapped)


def test_unwrap_of_tampered_or_malformed_wrapping_fails() -> None:
    raw = b64url_decode(wrap_data_key(MASTER, "dk_a", KEY_A))
    for position in range(len(raw)):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        with pytest.raises(CryptoError):
            unwrap_data_key(MASTER, "dk_a", b64url(bytes(tampered)))
    for malformed in ("", "!!!!", b64url(raw[:-1]), b64url(raw + b"\x00")):
        with pytest.raises(CryptoError):
            unwrap_data_key(MASTER, "dk_a", malformed)


@pytest.mark.parametrize(("master", "data_key"), [(MASTER[:16], KEY_A), (MASTER, KEY_A[:31])])
def test_wrap_refuses_wrong_key_lengths(master: bytes, data_key: bytes) -> None:
    with pytest.raises(CryptoError):
        wrap_data_key(master, "dk_a", data_key)


# --- key material ---------------------------------------------------------------------------------------


def test_key_fingerprint() -> None:
    fingerprint = key_fingerprint(KEY_A)
    assert fingerprint == hashlib.sha256(b"qianbao key fingerprint" + KEY_A).hexdigest()[:16]
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert fingerprint != key_fingerprint(KEY_B)
    assert fingerprint not in KEY_A.hex()


def test_generate_key_b64_is_accepted_as_a_master_key(tmp_path: Path) -> None:
    encoded = generate_key_b64()
    assert len(base64.b64decode(encoded, validate=True)) == 32
    assert generate_key_b64() != encoded
    material = load_key_material(
        master_key_b64=encoded, index_key_b64=None, key_file=tmp_path / "keys.json", create_if_missing=True
    )
    assert material.master_key == base64.b64decode(encoded)


def test_key_material_repr_does_not_reveal_keys() -> None:
    text = repr(KeyMaterial(KEY_A, KEY_B))
    assert KEY_A.hex() not in text and repr(KEY_A) not in text and repr(KEY_B) not in text
    assert key_fingerprint(KEY_A) in text


# Bytes 0xfb 0xff encode to "+/" in standard base64 and "-_" in the urlsafe alphabet.
ODD_KEY = b"\xfb\xff\xbf" * 10 + b"\xfb\xff"


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(ODD_KEY).decode(),
        base64.urlsafe_b64encode(ODD_KEY).decode(),
        base64.urlsafe_b64encode(ODD_KEY).decode().rstrip("="),
        "  " + base64.b64encode(ODD_KEY).decode() + "\n",
    ],
)
def test_master_key_from_the_environment(tmp_path: Path, encoded: str) -> None:
    key_file = tmp_path / "keys.json"
    material = load_key_material(
        master_key_b64=encoded, index_key_b64=None, key_file=key_file, create_if_missing=True
    )
    assert material.master_key == ODD_KEY
    assert not key_file.exists()  # an explicit key means the file is neither read nor created


def test_explicit_index_key_is_used(tmp_path: Path) -> None:
    material = load_key_material(
        master_key_b64=base64.b64encode(KEY_A).decode(),
        index_key_b64=base64.urlsafe_b64encode(KEY_B).decode(),
        key_file=tmp_path / "keys.json",
        create_if_missing=False,
    )
    assert material == KeyMaterial(KEY_A, KEY_B)


def test_derived_index_key_is_deterministic_hkdf_of_the_master(tmp_path: Path) -> None:
    def load(master: bytes) -> KeyMaterial:
        return load_key_material(
            master_key_b64=base64.b64encode(master).decode(),
            index_key_b64=None,
            key_file=tmp_path / "keys.json",
            create_if_missing=False,
        )

    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"qianbao blind index v1").derive(
        KEY_A
    )
    assert load(KEY_A).index_key == expected == load(KEY_A).index_key
    assert expected != KEY_A
    assert load(KEY_B).index_key != expected


BAD_KEYS = [
    "",
    "not base64 at all!",
    base64.b64encode(bytes(16)).decode(),
    base64.b64encode(bytes(33)).decode(),
    "A",
    base64.b64encode(bytes(32)).decode() + "#",
]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_environment_keys_are_refused(tmp_path: Path, bad: str) -> None:
    good = base64.b64encode(KEY_A).decode()
    for master, index in ((bad, None), (good, bad)):
        with pytest.raises(CryptoError):
            load_key_material(
                master_key_b64=master, index_key_b64=index, key_file=tmp_path / "k", create_if_missing=True
            )


def test_bad_key_message_does_not_echo_the_value(tmp_path: Path) -> None:
    almost = base64.b64encode(b"SECRETSECRETSECRETSECRET").decode()
    with pytest.raises(CryptoError) as excinfo:
        load_key_material(
            master_key_b64=almost, index_key_b64=None, key_file=tmp_path / "k", create_if_missing=True
        )
    assert almost not in str(excinfo.value)
    assert "SECRET" not in str(excinfo.value)


def test_index_key_without_master_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="QIANBAO_MASTER_KEY"):
        load_key_material(
            master_key_b64=None,
            index_key_b64=base64.b64encode(KEY_B).decode(),
            key_file=tmp_path / "keys.json",
            create_if_missing=True,
        )


def test_missing_key_file_without_create_says_what_to_do(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    with pytest.raises(CryptoError, match="QIANBAO_MASTER_KEY") as excinfo:
        load_key_material(master_key_b64=None, index_key_b64=None, key_file=key_file, create_if_missing=False)
    assert str(key_file) in str(excinfo.value)
    assert not key_file.exists()


def load_file(key_file: Path, *, create: bool = True) -> KeyMaterial:
    return load_key_material(
        master_key_b64=None, index_key_b64=None, key_file=key_file, create_if_missing=create
    )


# A permissive umask must not widen the mode; one that strips the owner's write bit must not narrow it.
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], ids=oct)
def test_key_file_is_created_with_mode_0600_and_reused(tmp_path: Path, umask: int) -> None:
    key_file = tmp_path / "keys.json"
    previous_umask = os.umask(umask)
    try:
        created = load_file(key_file)
    finally:
        os.umask(previous_umask)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(created.master_key) == len(created.index_key) == 32
    assert created.master_key != created.index_key
    document = json.loads(key_file.read_text())
    assert set(document) == {"master_key", "index_key", "created_at"}
    assert base64.b64decode(document["master_key"]) == created.master_key
    assert base64.b64decode(document["index_key"]) == created.index_key
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", document["created_at"])
    assert load_file(key_file, create=False) == created
    assert load_file(key_file) == created
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["keys.json"]  # no temporary left behind


def test_key_file_parent_directories_are_created(tmp_path: Path) -> None:
    key_file = tmp_path / "deep" / "er" / "keys.json"
    created = load_file(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) & 0o077 == 0  # the new key directory is private
    assert load_file(key_file, create=False) == created


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "keys.json"
    load_file(key_file)
    key_file.chmod(mode)
    with pytest.raises(CryptoError, match="chmod 600"):
        load_file(key_file)


def test_key_file_with_owner_only_read_is_accepted(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    created = load_file(key_file)
    key_file.chmod(0o400)
    assert load_file(key_file) == created


def write_key_file(path: Path, content: str) -> None:
    path.write_text(content)
    path.chmod(0o600)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json SECRETVALUE",
        "[1, 2]",
        json.dumps({"master_key": base64.b64encode(KEY_A).decode()}),
        json.dumps({"master_key": base64.b64encode(KEY_A).decode(), "index_key": 5}),
        json.dumps({"master_key": "SECRETVALUE", "index_key": base64.b64encode(KEY_B).decode()}),
    ],
)
def test_malformed_key_file_is_refused_without_echoing_it(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "keys.json"
    write_key_file(key_file, content)
    with pytest.raises(CryptoError) as excinfo:
        load_file(key_file)
    assert "SECRETVALUE" not in str(excinfo.value)
    assert base64.b64encode(KEY_A).decode() not in str(excinfo.value)


def test_existing_key_file_is_read_not_replaced(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    document = {
        "master_key": base64.b64encode(KEY_A).decode(),
        "index_key": base64.urlsafe_b64encode(KEY_B).decode().rstrip("="),
        "created_at": "2026-01-01T00:00:00Z",
    }
    write_key_file(key_file, json.dumps(document))
    assert load_file(key_file) == KeyMaterial(KEY_A, KEY_B)
    assert json.loads(key_file.read_text()) == document


def test_losing_the_creation_race_uses_the_winners_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "keys.json"
    winner = {"master_key": base64.b64encode(KEY_A).decode(), "index_key": base64.b64encode(KEY_B).decode()}
    real_link = os.link

    def link_after_another_process_won(source: str | Path, destination: str | Path) -> None:
        write_key_file(Path(destination), json.dumps(winner))
        real_link(source, destination)

    monkeypatch.setattr(os, "link", link_after_another_process_won)
    assert load_file(key_file) == KeyMaterial(KEY_A, KEY_B)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


def test_concurrent_creation_by_threads_yields_one_key(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    barrier = threading.Barrier(8)
    results: list[KeyMaterial] = []
    errors: list[BaseException] = []

    def create() -> None:
        barrier.wait()
        try:
            results.append(load_file(key_file))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 8
    assert len(set(results)) == 1
    assert load_file(key_file, create=False) == results[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


CREATE_IN_CHILD = """
import base64, sys, time
from pathlib import Path
from qianbao.security.crypto import load_key_material
key_file, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():  # start together, after every child has paid its import cost
    time.sleep(0.001)
material = load_key_material(
    master_key_b64=None, index_key_b64=None, key_file=key_file, create_if_missing=True
)
sys.stdout.write(base64.b64encode(material.master_key + material.index_key).decode())
"""


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_concurrent_creation_by_processes_yields_one_key(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_file = key_dir / "keys.json"
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE_IN_CHILD, str(key_file), str(tmp_path / f"ready-{n}"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"ready-{n}").exists() for n in range(4)):
            assert all(child.poll() is None for child in children), "a child exited before the start signal"
            assert time.monotonic() < deadline, "children did not get ready"
            time.sleep(0.005)
        go.touch()
        outputs = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [child.returncode for child in children] == [0] * 4, [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1
    material = load_file(key_file, create=False)
    assert outputs[0][0] == base64.b64encode(material.master_key + material.index_key).decode()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in key_dir.iterdir()] == ["keys.json"]


# --- blind index ----------------------------------------------------------------------------------------


def test_blind_index_known_answer_and_stability() -> None:
    index = BlindIndex(KEY_A)
    digest = index.digest("phone", "+8613800138000")
    assert digest == hmac.new(KEY_A, b"phone\x00+8613800138000", hashlib.sha256).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert BlindIndex(KEY_A).digest("phone", "+8613800138000") == digest


def test_blind_index_separates_kinds_values_and_keys() -> None:
    index = BlindIndex(KEY_A)
    digests = {
        index.digest("phone", "13800138000"),
        index.digest("id_number", "13800138000"),
        index.digest("email", "13800138000"),
        index.digest("phone", "13800138001"),
        index.digest("ab", "c"),
        index.digest("a", "bc"),
        index.digest("phone", ""),
        BlindIndex(KEY_B).digest("phone", "13800138000"),
    }
    assert len(digests) == 8


def test_blind_index_is_not_the_plain_hash() -> None:
    digest = BlindIndex(KEY_A).digest("email", "alice@example.com")
    assert digest != hashlib.sha256(b"email\x00alice@example.com").hexdigest()
    assert digest != hashlib.sha256(b"alice@example.com").hexdigest()


@pytest.mark.parametrize("key", [b"", KEY_A[:16], KEY_A + b"\x00"])
def test_blind_index_refuses_wrong_key_length(key: bytes) -> None:
    with pytest.raises(CryptoError):
        BlindIndex(key)


@pytest.mark.parametrize("kind", ["", "pho\x00ne"])
def test_blind_index_refuses_ambiguous_kinds(kind: str) -> None:
    with pytest.raises(CryptoError):
        BlindIndex(KEY_A).digest(kind, "value")

"""No personal data or secret at rest in clear: drive the API, then search the raw database for it.

SQLite: the database file's bytes and its -wal (and -shm). PostgreSQL: every table of the schema as text
(`SELECT t::text FROM <table> t`). Each value is searched as written, JSON-escaped (JSON columns store
non-ASCII as \\uXXXX) and, for phone numbers, by their national digits (which E.164 contains). A positive
control (masked values and ids, which *are* stored in clear) shows that the search sees the data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import String, Text, inspect, select, text

from qianbao.config import Settings
from qianbao.identity.context import IdentityContext
from qianbao.identity.phones import national_digits
from qianbao.identity.tables import users
from qianbao.identity.totp import TOTP_PERIOD_S, normalize_recovery_code, totp_code
from qianbao.security.fields import ENCRYPTED
from qianbao.security.masking import mask_phone
from qianbao.store.database import Database, sqlite_path
from qianbao.store.schema import metadata
from tests.support.api import (
    STRONG_PASSWORD,
    SignedUp,
    api_client,
    latest_code,
    make_settings,
    reset_limits,
    with_step_up,
)
from tests.support.operators import create_operator

NAME = "欧阳娜娜"
SECOND_NAME = "司马相如"
PHONE = "+8613912345678"
SECOND_PHONE = "+8618687654321"
NEW_PHONE = "+8615011223344"
RECOVERY_PHONE = "+8613700001111"
UNKNOWN_PHONE = "+8617755443322"
ID_NUMBER = "11010519491231002X"
SECOND_ID_NUMBER = "440304198511220030"
ACCOUNT_NUMBER = "6222021234567890128"
NEW_PASSWORD = "Quiet-Orchard-Meadow-77"  # noqa: S105 - a test password
THIRD_PASSWORD = "Copper-Lantern-Valley-31"  # noqa: S105 - a test password
PIN = "582917"
# A transfer memo is free text: people write names and phone numbers into it.
MEMO = "给欧阳娜娜的房租 13912345678"
MEMO_WORDS = "的房租"


@pytest.fixture
def settings(fresh_database_url: str, tmp_path: Path) -> Settings:
    return make_settings(fresh_database_url, tmp_path / "var")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from api_client(settings)


def identity(client: TestClient) -> IdentityContext:
    ctx: IdentityContext = client.app.state.container.identity  # type: ignore[attr-defined]
    return ctx


# --- driving the API ------------------------------------------------------------------------------------


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return response.json() if response.content else None


def sign_up(client: TestClient, phone: str, name: str, device: str) -> SignedUp:
    reset_limits(client)
    ok(client.post("/v1/verifications", json={"phone": phone}), 202)
    body = {"phone": phone, "code": latest_code(client, phone), "password": STRONG_PASSWORD, "name": name}
    created = ok(
        client.post(
            "/v1/users", json={**body, "device_id": device}, headers={"Idempotency-Key": f"signup-{device}"}
        ),
        201,
    )
    session = ok(
        client.post("/v1/sessions", json={"phone": phone, "password": STRONG_PASSWORD, "device_id": device}),
        201,
    )
    return SignedUp(created["id"], phone, session["token"], created["main_wallet_id"], device)


def fresh_totp(ctx: IdentityContext, user_id: str, secret: str) -> str:
    """A TOTP code the server accepts now (the current step, or the next if the current one was used)."""
    with ctx.db.read() as conn:
        last = conn.execute(select(users.c.totp_last_step).where(users.c.id == user_id)).scalar()
    now_step = int(time.time()) // TOTP_PERIOD_S
    step = now_step if last is None or last < now_step else last + 1
    return totp_code(secret, step * TOTP_PERIOD_S)


def step_up_with_pin(client: TestClient, auth: dict[str, str], method: str, path: str, body: Any) -> Any:
    first = client.request(method, path, json=body, headers=auth)
    if first.status_code != 401 or first.json().get("code") != "step_up_required":
        return first
    challenge = first.json()["challenge_id"]
    ok(client.post(f"/v1/challenges/{challenge}/verify", json={"method": "pin", "pin": PIN}, headers=auth))
    return client.request(method, path, json=body, headers={**auth, "Step-Up": challenge})


def exercise_everything(client: TestClient) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Every flow that writes personal data or secrets; returns (secrets it used, values stored in clear)."""
    ctx = identity(client)
    ouyang = sign_up(client, PHONE, NAME, "phone-ouyang")
    sima = sign_up(client, SECOND_PHONE, SECOND_NAME, "phone-sima")

    # Sign-in failures (audit log) and a new device (message log).
    assert (
        client.post("/v1/sessions", json={"phone": PHONE, "password": "Wrong-Password-99"}).status_code == 401
    )
    assert (
        client.post(
            "/v1/sessions", json={"phone": UNKNOWN_PHONE, "password": "Wrong-Password-99"}
        ).status_code
        == 401
    )
    ok(
        client.post(
            "/v1/sessions", json={"phone": PHONE, "password": STRONG_PASSWORD, "device_id": "tablet"}
        ),
        201,
    )

    # KYC: a verified identity and bank account; a rejected identity (kept encrypted with the application).
    ok(
        client.post(
            "/v1/me/kyc/identity",
            json={"name": NAME, "id_number": ID_NUMBER.lower()},
            headers={**ouyang.auth, "Idempotency-Key": "kyc-1"},
        )
    )
    ok(
        with_step_up(
            client,
            ouyang,
            "POST",
            "/v1/me/kyc/bank-account",
            json={"account_number": ACCOUNT_NUMBER, "account_name": NAME},
        )
    )
    rejected = client.post(
        "/v1/me/kyc/identity",
        json={"name": SECOND_NAME + "不符", "id_number": SECOND_ID_NUMBER},
        headers=sima.auth,
    )
    assert rejected.status_code == 422 and rejected.json()["code"] == "kyc_rejected"

    # PIN, TOTP and recovery codes.
    ok(client.put("/v1/me/pin", json={"pin": PIN}, headers=ouyang.auth), 204)
    secret = ok(client.post("/v1/me/totp", headers=ouyang.auth), 201)["secret"]
    codes = ok(
        client.post(
            "/v1/me/totp/confirm", json={"code": fresh_totp(ctx, ouyang.user_id, secret)}, headers=ouyang.auth
        )
    )["recovery_codes"]

    # Money to a phone number.
    ok(
        client.post(
            "/v1/sandbox/fund",
            json={"wallet_id": ouyang.wallet_id, "amount": {"amount": 50_000, "currency": "CNY"}},
            headers={**ouyang.auth, "Idempotency-Key": "fund-1"},
        ),
        201,
    )
    transfer = {
        "from_wallet_id": ouyang.wallet_id,
        "to": {"phone": SECOND_PHONE},
        "amount": {"amount": 1_000, "currency": "CNY"},
        "memo": MEMO,
    }
    paid = step_up_with_pin(
        client, {**ouyang.auth, "Idempotency-Key": "pay-1"}, "POST", "/v1/transfers", transfer
    )
    assert paid.status_code == 201, paid.text
    # The API still shows the memo: in the answer, its replay, the transfer and both histories.
    assert paid.json()["memo"] == MEMO
    replayed = client.post(
        "/v1/transfers", json=transfer, headers={**ouyang.auth, "Idempotency-Key": "pay-1"}
    )
    assert replayed.status_code == 201 and replayed.json() == paid.json()
    for payer_or_payee in (ouyang, sima):
        shown = ok(client.get(f"/v1/transfers/{paid.json()['id']}", headers=payer_or_payee.auth))
        assert shown["memo"] == MEMO
        history = ok(
            client.get(f"/v1/wallets/{payer_or_payee.wallet_id}/transactions", headers=payer_or_payee.auth)
        )
        assert history["data"][0]["memo"] == MEMO

    # Staff: look at the customer, reveal their data (audited), freeze and unfreeze.
    staff = create_operator(client, roles=("risk_analyst", "admin"))
    ok(client.get(f"/v1/operator/users/{ouyang.user_id}", headers=staff.auth))
    shown = ok(
        client.post(
            f"/v1/operator/users/{ouyang.user_id}/reveal", json={"reason": "case 42"}, headers=staff.auth
        )
    )
    assert shown["id_number"] == ID_NUMBER
    ok(
        client.post(
            f"/v1/operator/users/{sima.user_id}/freeze", json={"reason": "case 43"}, headers=staff.auth
        )
    )
    ok(
        client.post(
            f"/v1/operator/users/{sima.user_id}/unfreeze",
            json={"reason": "case 43 closed"},
            headers=staff.auth,
        )
    )

    # Change of number (both numbers get codes and notices).
    reset_limits(client)
    change = step_up_with_pin(client, ouyang.auth, "POST", "/v1/me/phone-change", {"new_phone": NEW_PHONE})
    assert change.status_code == 202, change.text
    ok(
        client.post(
            "/v1/me/phone-change/confirm",
            json={
                "new_phone": NEW_PHONE,
                "old_code": latest_code(client, PHONE),
                "new_code": latest_code(client, NEW_PHONE),
            },
            headers=ouyang.auth,
        )
    )

    # Password reset by SMS code.
    reset_limits(client)
    ok(client.post("/v1/verifications", json={"phone": SECOND_PHONE, "purpose": "password_reset"}), 202)
    ok(
        client.post(
            "/v1/recovery/password",
            json={
                "phone": SECOND_PHONE,
                "code": latest_code(client, SECOND_PHONE),
                "new_password": NEW_PASSWORD,
            },
        )
    )

    # Recovery of a lost number: one failure (audited), then success with a recovery code.
    reset_limits(client)
    ok(client.post("/v1/recovery/phone", json={"new_phone": RECOVERY_PHONE}), 202)
    body = {
        "id_number": ID_NUMBER,
        "new_phone": RECOVERY_PHONE,
        "new_code": latest_code(client, RECOVERY_PHONE),
        "pin": PIN,
        "second_factor": {"method": "totp", "code": "000000"},
    }
    assert client.post("/v1/recovery/phone/confirm", json=body).status_code == 422
    ok(
        client.post(
            "/v1/recovery/phone/confirm",
            json={**body, "second_factor": {"method": "recovery_code", "code": codes[0]}},
        )
    )
    # Another password reset, now with the second factor TOTP requires.
    reset_limits(client)
    ok(client.post("/v1/verifications", json={"phone": RECOVERY_PHONE, "purpose": "password_reset"}), 202)
    ok(
        client.post(
            "/v1/recovery/password",
            json={
                "phone": RECOVERY_PHONE,
                "code": latest_code(client, RECOVERY_PHONE),
                "new_password": THIRD_PASSWORD,
                "second_factor": {"method": "totp", "code": fresh_totp(ctx, ouyang.user_id, secret)},
            },
        )
    )
    ok(client.post("/v1/sessions", json={"phone": SECOND_PHONE, "password": NEW_PASSWORD}), 201)

    secrets_at_rest = {
        "totp secret": {secret},
        "operator totp secret": {staff.totp_secret},
        "recovery codes": {v for c in codes for v in (c, normalize_recovery_code(c))},
        "passwords": {STRONG_PASSWORD, NEW_PASSWORD, THIRD_PASSWORD, staff.password},
    }
    stored_in_clear = {
        "masked phone": {mask_phone(RECOVERY_PHONE)},
        "user ids": {ouyang.user_id, sima.user_id},
    }
    return secrets_at_rest, stored_in_clear


# --- searching ----------------------------------------------------------------------------------------


def forms(value: str) -> set[str]:
    """How a value could look at rest in clear: as is, lower-case, and JSON-escaped (both hex cases)."""
    escaped = json.dumps(value)[1:-1]
    found = {value, value.lower(), escaped}
    found.add("".join(f"\\u{ord(c):04X}" if ord(c) > 127 else c for c in value))
    return found


def personal_data() -> dict[str, set[str]]:
    phones = (PHONE, SECOND_PHONE, NEW_PHONE, RECOVERY_PHONE, UNKNOWN_PHONE)
    return {
        **{f"phone {p}": {national_digits(p), p} for p in phones},
        **{f"name {n}": forms(n) for n in (NAME, SECOND_NAME)},
        **{f"ID number {i}": forms(i) for i in (ID_NUMBER, SECOND_ID_NUMBER)},
        "bank account": {ACCOUNT_NUMBER},
        "transfer memo": forms(MEMO) | forms(MEMO_WORDS),
    }


def locate(db: Database, needles: set[str]) -> list[str]:
    """Where (table.column) any of `needles` appears, reading every table the database has."""
    places: list[str] = []
    with db.read() as conn:
        for table_name in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table_name}"')).mappings():  # noqa: S608 - our names
                for column, value in row.items():
                    shown = value if isinstance(value, str) else json.dumps(value, default=str)
                    if any(n in shown or n in json.dumps(value, default=str) for n in needles):
                        places.append(f"{table_name}.{column}")
    return sorted(set(places))


def raw_dump(db: Database) -> str:
    """The database as its raw bytes (SQLite file, -wal, -shm) or every table as text (PostgreSQL)."""
    if db.is_postgresql:
        parts: list[str] = []
        with db.read() as conn:
            names = conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
            ).scalars()
            for name in list(names):
                for row_text in conn.execute(text(f'SELECT t::text FROM "{name}" t')).scalars():  # noqa: S608
                    parts.append(row_text)
        # Row literals double the backslashes of quoted fields; undo it so JSON escapes read as stored.
        return "\n".join(parts).replace("\\\\", "\\")
    path = sqlite_path(db.url)
    assert path is not None
    blobs = [path.read_bytes()]
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            blobs.append(extra.read_bytes())
    return b"\n".join(blobs).decode("utf-8", errors="replace")


def test_no_personal_data_or_secret_is_stored_in_clear(client: TestClient, settings: Settings) -> None:
    secrets_used, controls = exercise_everything(client)
    db = Database(settings.database_url)
    try:
        dump = raw_dump(db)
        for label, values in controls.items():
            assert all(v in dump for v in values), f"positive control {label} not found: the search is blind"
        leaks = {
            label: locate(db, needles) or ["(only in the raw bytes: a deleted row, the WAL, or an index)"]
            for label, needles in (personal_data() | secrets_used).items()
            if any(n in dump for n in needles)
        }
    finally:
        db.dispose()
    assert not leaks, f"personal data or secrets stored in clear: {leaks}"


def test_every_cipher_column_is_listed_for_rotation() -> None:
    listed = {(spec.table, column) for spec in ENCRYPTED for column in spec.columns}
    in_schema = {
        (table.name, column.name)
        for table in metadata.tables.values()
        for column in table.columns
        if column.name.endswith("_cipher")
    }
    assert in_schema == listed, (
        f"not in security.fields.ENCRYPTED: {in_schema - listed}; gone: {listed - in_schema}"
    )
    for table, column in listed:
        assert isinstance(metadata.tables[table].c[column].type, Text | String)
    for spec in ENCRYPTED:
        assert all(key in metadata.tables[spec.table].c for key in spec.key_columns)

"""Data-key rotation (`qianbao keys rotate`): every value moves to the new key, online, losing nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from qianbao.api.app import create_app
from qianbao.bootstrap import key_material
from qianbao.cli.main import app as cli
from qianbao.clock import SystemClock
from qianbao.events.tables import webhook_endpoints
from qianbao.identity.context import IdentityContext
from qianbao.identity.tables import api_keys, kyc_applications, operators, users
from qianbao.payments.code_tables import payment_code_devices
from qianbao.payments.merchant_tables import merchant_payments, refunds
from qianbao.payments.request_tables import money_requests
from qianbao.payments.tables import transfers
from qianbao.security.crypto import generate_key_b64, token_key_id
from qianbao.security.fields import ENCRYPTED, context
from qianbao.security.keyring import KeyRing
from qianbao.security.rotation import key_status, rotate_data_keys
from qianbao.security.tables import data_keys
from qianbao.store import migrate
from qianbao.store.database import Database
from qianbao.store.schema import metadata
from tests.support.api import STRONG_PASSWORD, SignedUp, api_client, make_settings, sign_up

runner = CliRunner()
Values = dict[tuple[str, str, str], str]


@pytest.fixture
def client(fresh_database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    yield from api_client(make_settings(fresh_database_url, tmp_path / "var"))


def identity(client: TestClient) -> IdentityContext:
    ctx: IdentityContext = client.app.state.container.identity  # type: ignore[attr-defined]
    return ctx


def fill_every_encrypted_column(ctx: IdentityContext, user_id: str) -> None:
    """Values in the encrypted columns that sign-up leaves empty (their features are built elsewhere)."""
    now = ctx.now()

    def enc(table: str, column: str, value: str) -> str:
        return ctx.keys.encrypt(value, context=context(table, column))

    with ctx.db.write() as conn:
        conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(
                email_cipher=enc("users", "email_cipher", "ouyang@example.com"),
                totp_secret_cipher=enc("users", "totp_secret_cipher", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
                totp_enabled_at=now,
                id_number_cipher=enc("users", "id_number_cipher", "11010519491231002X"),
                id_number_index=ctx.keys.digest("id_number", "11010519491231002X"),
            )
        )
        conn.execute(
            insert(kyc_applications).values(
                id=f"kyc_{user_id}",
                user_id=user_id,
                target_tier=3,
                status="pending",
                name_cipher=enc("kyc_applications", "name_cipher", "欧阳娜娜"),
                id_number_cipher=enc("kyc_applications", "id_number_cipher", "11010519491231002X"),
                account_number_cipher=enc("kyc_applications", "account_number_cipher", "6222021234561234"),
                created_at=now,
            )
        )
        conn.execute(
            insert(api_keys).values(
                id=f"key_{user_id}",
                owner_user_id=user_id,
                name="shop",
                scopes=[],
                secret_hash=f"hash-{user_id}",
                secret_cipher=enc("api_keys", "secret_cipher", "sk_live_secret"),
                created_at=now,
            )
        )
        conn.execute(
            insert(transfers).values(
                id=f"trf_{user_id}",
                ledger_transfer_id=f"p2p:{user_id}",
                from_wallet_id=f"wal_{user_id}",
                to_wallet_id=f"wal_other_{user_id}",
                from_user_id=user_id,
                to_user_id=user_id,
                amount=100,
                currency="CNY",
                memo_cipher=enc("transfers", "memo_cipher", "给欧阳娜娜的房租"),
                status="succeeded",
                created_at=now,
            )
        )
        conn.execute(
            insert(operators).values(
                id=f"opr_{user_id}",
                username=f"op-{user_id}",
                display_name="Operator",
                password_hash="not-a-hash",  # noqa: S106 - never used to sign in
                totp_secret_cipher=enc("operators", "totp_secret_cipher", "JBSWY3DPEHPK3PXP"),
                roles=[],
                status="active",
                created_at=now,
            )
        )
        conn.execute(
            insert(money_requests).values(
                id=f"mrq_{user_id}",
                requester_user_id=user_id,
                to_wallet_id=f"wal_{user_id}",
                payer_user_id=f"usr_other_{user_id}",
                amount=100,
                currency="CNY",
                memo_cipher=enc("money_requests", "memo_cipher", "欧阳娜娜的饭钱"),
                status="declined",
                decline_reason_cipher=enc("money_requests", "decline_reason_cipher", "不认识你"),
                created_at=now,
                expires_at=now + 1,
                resolved_at=now,
            )
        )
        payment = {
            "id": f"pay_{user_id}",
            "ledger_transfer_id": f"pay:{user_id}",
            "method": "qr_static",
            "merchant_id": f"mch_{user_id}",
            "merchant_user_id": user_id,
            "merchant_wallet_id": f"mwl_{user_id}",
            "payer_user_id": user_id,
            "payer_wallet_id": f"wal_{user_id}",
            "amount": 100,
            "currency": "CNY",
            "fee": 0,
            "refunded_amount": 100,
            "fee_refunded": 0,
            "status": "succeeded",
            "memo_cipher": enc("merchant_payments", "memo_cipher", "欧阳娜娜的午饭"),
            "created_at": now,
        }
        conn.execute(insert(merchant_payments).values(**payment))
        conn.execute(
            insert(refunds).values(
                id=f"rfd_{user_id}",
                payment_id=payment["id"],
                ledger_transfer_id=f"rfd:{user_id}",
                amount=100,
                fee_refunded=0,
                currency="CNY",
                to_wallet_id=f"wal_{user_id}",
                status="succeeded",
                reason_cipher=enc("refunds", "reason_cipher", "欧阳娜娜退货"),
                created_at=now,
            )
        )
        conn.execute(
            insert(webhook_endpoints).values(
                id=f"whe_{user_id}",
                owner_user_id=user_id,
                url="https://hooks.example.com/qianbao",
                description=None,
                events=["*"],
                enabled=True,
                secret_cipher=enc("webhook_endpoints", "secret_cipher", "whsec_current"),
                previous_secret_cipher=enc("webhook_endpoints", "previous_secret_cipher", "whsec_previous"),
                previous_secret_expires_at=now + 1,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            insert(payment_code_devices).values(
                id=f"pcd_{user_id}",
                user_id=user_id,
                device_id=f"device-{user_id}",
                wallet_id=f"wal_{user_id}",
                number=user_id[-7:],
                secret_cipher=enc(
                    "payment_code_devices", "secret_cipher", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
                ),
                status="active",
                created_at=now,
            )
        )


def all_tokens(db: Database) -> dict[tuple[str, str, str], str]:
    """(table, column, row id) → token, for every encrypted value in the database."""
    tokens: dict[tuple[str, str, str], str] = {}
    with db.read() as conn:
        for spec in ENCRYPTED:
            table = metadata.tables[spec.table]
            for name in spec.columns:
                for row_id, token in conn.execute(
                    select(table.c.id, table.c[name]).where(table.c[name].is_not(None))
                ):
                    tokens[(spec.table, name, row_id)] = token
    return tokens


def plaintexts(keys: KeyRing, tokens: dict[tuple[str, str, str], str]) -> Values:
    return {
        where: keys.decrypt(token, context=context(where[0], where[1])) for where, token in tokens.items()
    }


def test_rotation_reencrypts_every_value_and_everything_still_decrypts(client: TestClient) -> None:
    ctx = identity(client)
    people = [sign_up(client, name=name) for name in ("欧阳娜娜", "王丽", "Alice Wang")]
    fill_every_encrypted_column(ctx, people[0].user_id)
    before = all_tokens(ctx.db)
    assert {(t, c) for t, c, _ in before} == {(s.table, c) for s in ENCRYPTED for c in s.columns}
    old_key = ctx.keys.active_key_id
    assert {token_key_id(t) for t in before.values()} == {old_key}
    clear_before = plaintexts(ctx.keys, before)

    seen: list[tuple[int, int]] = []
    report = rotate_data_keys(
        ctx.db, ctx.keys, batch_size=2, wait_s=0, progress=lambda d, t: seen.append((d, t))
    )

    assert report.new_key_id != old_key and report.retired_key_ids == [old_key]
    assert report.reencrypted == len(before) and report.conflicts == 0 and report.unreadable == 0
    assert seen[0] == (0, len(before)) and seen[-1] == (len(before), len(before))
    after = all_tokens(ctx.db)
    assert after.keys() == before.keys()
    assert {token_key_id(t) for t in after.values()} == {report.new_key_id}
    # Another process (a fresh key ring) reads every value, and reads the same plaintext as before.
    other = KeyRing(ctx.db, SystemClock(), key_material(ctx.settings))
    assert plaintexts(other, after) == clear_before

    # The retired key is kept (backups need it) and holds nothing any more.
    status = {k.id: k for k in key_status(ctx.db)}
    assert status[old_key].state == "retired" and status[old_key].values == 0
    assert status[report.new_key_id].state == "active" and status[report.new_key_id].values == len(before)

    # Users still sign in and see their (masked) names.
    for person, masked in zip(people[1:], ("王*", "A**** W***"), strict=True):
        session = client.post("/v1/sessions", json={"phone": person.phone, "password": STRONG_PASSWORD})
        assert session.status_code == 201, session.text
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {session.json()['token']}"}).json()
        assert me["name_masked"] == masked
    assert client.get("/v1/me", headers=people[0].auth).json()["name_masked"] == "欧***"

    # A second rotation moves everything again (the sign-ins above logged new-device alerts meanwhile).
    current = all_tokens(ctx.db)
    again = rotate_data_keys(ctx.db, ctx.keys, wait_s=0)
    assert again.reencrypted == len(current) and sorted(again.retired_key_ids) == sorted(
        [old_key, report.new_key_id]
    )
    assert {token_key_id(t) for t in all_tokens(ctx.db).values()} == {again.new_key_id}


class InterruptingKeyRing(KeyRing):
    """Simulates the running service: while rotation is between reading a value and writing it back, a
    process whose key ring has not refreshed yet writes a new value under the *old* key."""

    def __init__(self, ctx: IdentityContext, user_id: str, new_name: str) -> None:
        super().__init__(ctx.db, ctx.clock, key_material(ctx.settings))
        self.stale = self.cipher()
        self.ctx = ctx
        self.user_id = user_id
        self.new_name = new_name
        self.fired = 0

    def decrypt(self, token: str, *, context: str) -> str:
        plain = super().decrypt(token, context=context)
        if context == "users.name_cipher" and not self.fired:
            with self.ctx.db.read() as conn:
                current = conn.execute(
                    select(users.c.name_cipher).where(users.c.id == self.user_id)
                ).scalar_one()
            if current == token:
                self.fired += 1
                with self.ctx.db.write() as conn:
                    conn.execute(
                        update(users)
                        .where(users.c.id == self.user_id)
                        .values(name_cipher=self.stale.encrypt(self.new_name, context=context))
                    )
        return plain


def test_a_value_changed_during_rotation_is_not_overwritten(client: TestClient) -> None:
    ctx = identity(client)
    person = sign_up(client, name="张三")
    keyring = InterruptingKeyRing(ctx, person.user_id, "张三丰")
    report = rotate_data_keys(ctx.db, keyring, batch_size=1, wait_s=0)
    assert keyring.fired == 1
    assert report.columns["users.name_cipher"].conflicts == 1
    assert report.passes >= 2  # the changed value was read again in a later pass
    with ctx.db.read() as conn:
        token = conn.execute(select(users.c.name_cipher).where(users.c.id == person.user_id)).scalar_one()
    assert token_key_id(token) == report.new_key_id
    assert keyring.decrypt(token, context="users.name_cipher") == "张三丰"  # the service's write won
    assert {token_key_id(t) for t in all_tokens(ctx.db).values()} == {report.new_key_id}


def test_rotation_while_the_service_signs_up_and_renames(client: TestClient) -> None:
    ctx = identity(client)
    people = [sign_up(client, name=f"用户{i}") for i in range(8)]
    names: dict[str, str] = {}
    signed_up: list[SignedUp] = []
    stop = threading.Event()
    errors: list[BaseException] = []
    writes = threading.Semaphore(0)

    def service() -> None:
        try:
            i = 0
            while not stop.is_set():
                i += 1
                if i % 5 == 0 and len(signed_up) < 4:
                    signed_up.append(sign_up(client, name=f"新用户{i}"))
                person = people[i % len(people)]
                name = f"改名{i}"
                with ctx.db.write() as conn:
                    conn.execute(
                        update(users)
                        .where(users.c.id == person.user_id)
                        .values(name_cipher=ctx.keys.encrypt(name, context=context("users", "name_cipher")))
                    )
                names[person.user_id] = name
                writes.release()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread below
            errors.append(exc)
            writes.release()

    thread = threading.Thread(target=service)
    thread.start()
    try:
        for _ in range(5):
            assert writes.acquire(timeout=30)  # the service is writing before the rotation starts
        report = rotate_data_keys(ctx.db, ctx.keys, batch_size=3, wait_s=0.3)
        for _ in range(5):
            assert writes.acquire(timeout=30)  # and goes on writing after it
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    assert signed_up, "the service signed nobody up during the test"

    tokens = all_tokens(ctx.db)
    assert {token_key_id(t) for t in tokens.values()} == {report.new_key_id}
    clear = plaintexts(KeyRing(ctx.db, SystemClock(), key_material(ctx.settings)), tokens)
    for user_id, name in names.items():
        assert clear[("users", "name_cipher", user_id)] == name  # no concurrent rename was lost
    for person in signed_up + people[:2]:
        r = client.post("/v1/sessions", json={"phone": person.phone, "password": STRONG_PASSWORD})
        assert r.status_code == 201, r.text


def test_an_unreadable_value_is_reported_and_does_not_stop_the_rotation(client: TestClient) -> None:
    ctx = identity(client)
    person = sign_up(client)
    with ctx.db.write() as conn:
        conn.execute(
            update(users)
            .where(users.c.id == person.user_id)
            .values(email_cipher="v1.dk_gone.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        )
    report = rotate_data_keys(ctx.db, ctx.keys, wait_s=0)
    assert report.columns["users.email_cipher"].unreadable == [person.user_id]
    tokens = all_tokens(ctx.db)
    del tokens[("users", "email_cipher", person.user_id)]
    assert {token_key_id(t) for t in tokens.values()} == {report.new_key_id}


# --- the command --------------------------------------------------------------------------------------


def test_keys_rotate_and_status_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    var = tmp_path / "var"
    settings = make_settings(url, var)
    fresh = Database(url)
    migrate.upgrade(fresh)
    fresh.dispose()
    with TestClient(create_app(settings)) as service:  # the service migrates, two people sign up
        sign_up(service, name="欧阳娜娜")
        sign_up(service, name="王丽")
    env = {"QIANBAO_VAR_DIR": str(var)}
    db = Database(url)
    try:
        with db.read() as conn:
            ((old_key, wrapped),) = conn.execute(select(data_keys.c.id, data_keys.c.wrapped_key)).all()
        values = len(all_tokens(db))

        status = runner.invoke(cli, ["keys", "status", "--database-url", url], env=env)
        assert status.exit_code == 0, status.output
        assert old_key[:10] in status.output and "active" in status.output
        assert wrapped[:12] not in status.output  # key material is never shown, not even wrapped

        rotated = runner.invoke(cli, ["keys", "rotate", "--database-url", url, "--wait", "0"], env=env)
        assert rotated.exit_code == 0, rotated.output
        assert f"{values} value(s) re-encrypted" in rotated.output
        assert "backups need them" in rotated.output
        keys = {k.id: k for k in key_status(db)}
        (new_key,) = [k for k in keys if k != old_key]
        assert keys[old_key].state == "retired" and keys[old_key].values == 0
        assert keys[new_key].state == "active" and keys[new_key].values == values
        assert {token_key_id(t) for t in all_tokens(db).values()} == {new_key}

        status = runner.invoke(cli, ["keys", "status", "--database-url", url], env=env)
        assert status.exit_code == 0 and "retired" in status.output

        # Another master key, or none: refused, nothing created, nothing changed.
        wrong = runner.invoke(
            cli,
            ["keys", "rotate", "--database-url", url, "--wait", "0"],
            env={"QIANBAO_MASTER_KEY": generate_key_b64()},
        )
        assert wrong.exit_code == 2 and "another master key" in wrong.output
        empty = tmp_path / "empty"
        missing = runner.invoke(
            cli, ["keys", "rotate", "--database-url", url, "--wait", "0"], env={"QIANBAO_VAR_DIR": str(empty)}
        )
        assert missing.exit_code == 2 and "no key material" in missing.output
        assert not empty.exists()
        assert len(key_status(db)) == 2
    finally:
        db.dispose()

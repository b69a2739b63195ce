"""Where webhooks may go, through the API, in sandbox and production mode: registration refuses every
non-public destination in every spelling; delivery refuses them too (an endpoint stored earlier, a host
whose DNS changed); loopback receivers only in sandbox mode with QIANBAO_WEBHOOKS_ALLOW_LOOPBACK=true."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from qianbao.clock import FixedClock, SystemClock
from qianbao.config import Settings
from qianbao.events.dispatcher import dispatch_once
from qianbao.events.tables import webhook_attempts, webhook_deliveries
from qianbao.events.webhooks import insert_endpoint
from tests.api.test_webhook_endpoints import HOOK, ctx_of, fund, new_endpoint, ok, pay
from tests.support.api import SignedUp, api_client, make_settings, sign_up
from tests.support.receiver import running_receiver

BAD_URLS = [
    "https://10.0.0.1/hooks",
    "https://192.168.1.1/hooks",
    "https://169.254.169.254/latest/meta-data/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://metadata/computeMetadata/v1/",
    "https://instance-data/latest/meta-data/",
    "https://100.100.100.200/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://[::ffff:10.0.0.1]/hooks",
    "https://[::ffff:a9fe:a9fe]/hooks",
    "https://[64:ff9b::a00:1]/hooks",
    "https://[2002:a9fe:a9fe::1]/hooks",
    "https://[fe80::1]/hooks",
    "https://0.0.0.0/hooks",  # noqa: S104 - a destination under test, nothing binds here
    "https://2130706433/hooks",
    "https://0x7f.1/hooks",
    "https://127.1/hooks",
    "https://3232235777/hooks",  # 192.168.1.1
    "https://db.internal/hooks",
    "https://ＭＥＴＡＤＡＴＡ。ＧＯＯＧＬＥ。ＩＮＴＥＲＮＡＬ/hooks",
]
LOOPBACK_URLS = ["http://127.0.0.1:8080/hooks", "http://localhost:3000/webhooks", "https://[::1]:8443/"]


@pytest.fixture
def loopback_client(settings: Settings) -> Iterator[TestClient]:
    """The same sandbox, with QIANBAO_WEBHOOKS_ALLOW_LOOPBACK=true."""
    allowing = make_settings(settings.database_url, settings.var_dir, webhooks_allow_loopback=True)
    yield from api_client(allowing)


@pytest.fixture
def production_client(client: TestClient, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    """A production server on the same database and keys (users sign up in the sandbox one). It is even
    told to allow loopback: production ignores that."""
    del client  # started first: it creates the key file whose master key production is given
    master = json.loads(settings.resolved_key_file.read_text())["master_key"]
    production = make_settings(
        settings.database_url,
        tmp_path / "production",
        env="production",
        master_key=master,
        webhooks_allow_loopback=True,
    )
    yield from api_client(production)


def refused(client: TestClient, user: SignedUp, url: str) -> str:
    response = client.post("/v1/webhook-endpoints", json={"url": url, "events": ["*"]}, headers=user.auth)
    assert response.status_code == 422, f"{url}: {response.text}"
    assert response.json()["code"] == "validation_error" and response.json()["field"] == "url"
    return str(response.json()["detail"])


@pytest.mark.parametrize("url", BAD_URLS)
def test_registration_refuses_each_bad_destination_in_both_modes(
    client: TestClient,
    loopback_client: TestClient,
    production_client: TestClient,
    alice: SignedUp,
    url: str,
) -> None:
    endpoint = new_endpoint(client, alice)
    for server in (client, loopback_client, production_client):
        refused(server, alice, url)
        changed = server.patch(
            f"/v1/webhook-endpoints/{endpoint['id']}", json={"url": url}, headers=alice.auth
        )
        assert changed.status_code == 422 and changed.json()["code"] == "validation_error"
    assert [e["url"] for e in ok(client.get("/v1/webhook-endpoints", headers=alice.auth))["data"]] == [HOOK]


def test_loopback_receivers_only_in_sandbox_and_only_with_the_setting(
    client: TestClient, loopback_client: TestClient, production_client: TestClient, alice: SignedUp
) -> None:
    for url in LOOPBACK_URLS:
        assert "QIANBAO_WEBHOOKS_ALLOW_LOOPBACK" in refused(client, alice, url)
        refused(production_client, alice, url)
        assert new_endpoint(loopback_client, alice, url=url)["url"] == url


def test_delivery_refuses_non_public_destinations_in_every_spelling_in_both_modes(
    client: TestClient, production_client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    """Endpoints stored before these rules (or whose host now resolves elsewhere) are checked again at
    every attempt, against the addresses the host resolves to now: a receiver listening on loopback hears
    nothing, whatever the spelling."""
    with running_receiver([200]) as (local, url):
        port = url.split(":")[2].split("/")[0]
        spellings = [
            f"http://127.0.0.1:{port}/h",
            f"http://2130706433:{port}/h",
            f"http://127.1:{port}/h",
            f"http://0x7f.1:{port}/h",
            f"http://017700000001:{port}/h",
            f"http://[::ffff:127.0.0.1]:{port}/h",
            f"http://localhost:{port}/h",
            f"https://127.0.0.1:{port}/h",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/hooks",
            "https://[64:ff9b::a9fe:a9fe]/hooks",
            "https://[2002:a00:1::1]/hooks",
        ]
        ctx = ctx_of(client)
        with ctx.db.write() as conn:
            for spelling in spellings:
                insert_endpoint(
                    conn,
                    ctx.keys,
                    owner=alice.user_id,
                    url=spelling,
                    events=("*",),
                    description=None,
                    now=ctx.now(),
                )
        fund(client, alice)
        pay(client, alice, bob)
        later = FixedClock(SystemClock().now_us() + 3600 * 1_000_000)  # when the retries are due
        for server, clock in ((client, None), (production_client, later)):
            report = dispatch_once(ctx_of(server), clock=clock)
            assert (report.attempts, report.delivered) == (len(spellings), 0)
        assert local.received == []
    with ctx.db.read() as conn:
        errors = conn.execute(
            select(
                webhook_attempts.c.error, webhook_attempts.c.status_code, webhook_attempts.c.latency_ms
            ).join(webhook_deliveries, webhook_deliveries.c.id == webhook_attempts.c.delivery_id)
        ).all()
    assert sorted(errors) == [("destination_not_allowed", None, None)] * (2 * len(spellings))


def test_with_the_setting_a_sandbox_delivers_to_a_receiver_on_loopback(
    loopback_client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    with running_receiver([200]) as (local, url):
        new_endpoint(loopback_client, alice, url=url)
        fund(loopback_client, alice)
        pay(loopback_client, alice, bob)
        report = dispatch_once(ctx_of(loopback_client))
        assert report.delivered == 1 and len(local.received) == 1
    refused(loopback_client, sign_up(loopback_client), "https://10.0.0.1/hooks")  # still not the LAN

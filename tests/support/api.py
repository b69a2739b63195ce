"""Driving the HTTP API in tests: a sandbox app on a fresh database, and sign-up/sign-in shortcuts."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from qianbao.config import Settings

STRONG_PASSWORD = "Lantern-Harbour-42"  # noqa: S105 - a test password
_phones = itertools.count(int.from_bytes(os.urandom(2), "big") * 1000)


def make_settings(database_url: str, var_dir: Path, **overrides: Any) -> Settings:
    """Sandbox settings with cheap password hashing (the argon2 parameters are not under test here)."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "seed_demo_data": False,
        "var_dir": var_dir,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8,
        "argon2_parallelism": 1,
        "cookie_secure": False,
        "dispatcher": "off",  # tests run the event dispatcher themselves (events.dispatcher.dispatch_once)
    }
    values.update(overrides)
    return Settings(**values)


def new_phone() -> str:
    """A valid, unused Chinese mobile number (+86 139 xxxx xxxx)."""
    return f"+86139{next(_phones) % 10**8:08d}"


@dataclass
class SignedUp:
    user_id: str
    phone: str
    token: str
    wallet_id: str
    device: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Device-Id": self.device}


def latest_code(client: TestClient, phone: str) -> str:
    messages = client.get("/v1/sandbox/messages", params={"to": phone}).json()["data"]
    codes = [m["code"] for m in messages if m["code"]]
    assert codes, f"no code was sent to {phone}"
    return str(codes[0])


def sign_up(
    client: TestClient, *, name: str = "李四", phone: str | None = None, device: str | None = None
) -> SignedUp:
    phone = phone or new_phone()
    device = device or f"device-{phone[-6:]}"
    assert client.post("/v1/verifications", json={"phone": phone}).status_code == 202
    code = latest_code(client, phone)
    created = client.post(
        "/v1/users",
        json={"phone": phone, "code": code, "password": STRONG_PASSWORD, "name": name, "device_id": device},
    )
    assert created.status_code == 201, created.text
    session = client.post(
        "/v1/sessions", json={"phone": phone, "password": STRONG_PASSWORD, "device_id": device}
    )
    assert session.status_code == 201, session.text
    body = created.json()
    return SignedUp(body["id"], phone, session.json()["token"], body["main_wallet_id"], device)


def reset_limits(client: TestClient) -> None:
    """Forget every rate-limit counter of the app (tests that are not about rate limits)."""
    limiter = client.app.state.container.identity.limiter  # type: ignore[attr-defined]
    limiter._storage.reset()


def api_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def with_step_up(client: TestClient, user: SignedUp, method: str, url: str, **kwargs: Any) -> Any:
    """Make a request; if it asks for step-up, prove it by SMS code and repeat it with `Step-Up`."""
    headers = {**user.auth, **kwargs.pop("headers", {})}
    first = client.request(method, url, headers=headers, **kwargs)
    if first.status_code != 401 or first.json().get("code") != "step_up_required":
        return first
    challenge = first.json()["challenge_id"]
    reset_limits(client)
    assert client.post(f"/v1/challenges/{challenge}/sms", headers=user.auth).status_code == 202
    proved = client.post(
        f"/v1/challenges/{challenge}/verify",
        json={"method": "sms", "code": latest_code(client, user.phone)},
        headers=user.auth,
    )
    assert proved.status_code == 200, proved.text
    return client.request(method, url, headers={**headers, "Step-Up": challenge}, **kwargs)

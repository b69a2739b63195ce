"""Behind a configured reverse proxy, the client it names is the one recorded and rate-limited per IP."""

from __future__ import annotations

from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from qianbao.config import Settings
from tests.support.api import STRONG_PASSWORD, sign_up

PROXY = ("10.0.0.2", 40000)


def test_the_client_named_by_a_trusted_proxy_is_recorded_and_limited(settings: Settings) -> None:
    behind_proxy = settings.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})
    with TestClient(create_app(behind_proxy), client=PROXY) as client:
        user = sign_up(client)
        signed_in = client.post(
            "/v1/sessions", json={"phone": user.phone, "password": STRONG_PASSWORD},
            headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"},
        )  # fmt: skip
        auth = {"Authorization": f"Bearer {signed_in.json()['token']}"}
        sessions = client.get("/v1/me/sessions", headers=auth).json()["data"]
        assert [s["ip"] for s in sessions if s["current"]] == ["198.51.100.7"]
        # SMS codes, 20 an hour per IP: one client's 21st is refused; another client behind the same proxy
        # is not (sign_up sent one code from the proxy's own address, with no header).
        answers = [
            client.post(
                "/v1/verifications", json={"phone": f"+861390001{n:04d}"},
                headers={"X-Forwarded-For": "198.51.100.7"},
            ).status_code
            for n in range(21)
        ]  # fmt: skip
        assert answers == [202] * 20 + [429]
        other = client.post(
            "/v1/verifications", json={"phone": "+8613900029999"}, headers={"X-Forwarded-For": "198.51.100.8"}
        )
        assert other.status_code == 202

"""Web-app sessions: an HttpOnly cookie, CSRF protection on changes, and no mixing with bearer tokens."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.api import STRONG_PASSWORD, SignedUp


def cookie_sign_in(client: TestClient, user: SignedUp) -> tuple[str, str]:
    r = client.post(
        "/v1/sessions",
        json={"phone": user.phone, "password": STRONG_PASSWORD, "device_id": user.device, "cookie": True},
    )
    assert r.status_code == 201, r.text
    set_cookie = r.headers["set-cookie"]
    assert "qb_session=" in set_cookie and "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
    assert r.json()["token"] is None  # the token lives only in the HttpOnly cookie
    return r.cookies["qb_session"], r.json()["csrf_token"]


def test_cookie_sessions_need_the_csrf_token_for_changes(client: TestClient, alice: SignedUp) -> None:
    token, csrf = cookie_sign_in(client, alice)
    client.cookies.clear()
    client.cookies.set("qb_session", token)
    # Reading works with the cookie alone.
    me = client.get("/v1/me")
    assert me.status_code == 200
    # A change without the CSRF token (as a forged cross-site form sends it) is refused; nothing changes.
    forged = client.put("/v1/me/pin", json={"pin": "384729"})
    assert forged.status_code == 403 and forged.json()["code"] == "forbidden"
    wrong = client.put("/v1/me/pin", json={"pin": "384729"}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    assert client.get("/v1/me").json()["has_pin"] is False
    ok = client.put("/v1/me/pin", json={"pin": "384729"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 204
    assert client.get("/v1/me").json()["has_pin"] is True


def test_cookie_and_bearer_tokens_do_not_mix(client: TestClient, alice: SignedUp) -> None:
    token, _csrf = cookie_sign_in(client, alice)
    client.cookies.clear()
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    client.cookies.set("qb_session", alice.token)
    assert client.get("/v1/me").status_code == 401


def test_signing_out_clears_the_cookie_session(client: TestClient, alice: SignedUp) -> None:
    token, csrf = cookie_sign_in(client, alice)
    client.cookies.clear()
    client.cookies.set("qb_session", token)
    out = client.delete("/v1/sessions/current", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    assert client.get("/v1/me").status_code == 401

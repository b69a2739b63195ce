"""Helpers every walkthrough uses: problems as exceptions, Idempotency-Key, step-up, signed API-key requests.

Each function takes an `httpx.Client` whose base_url is the qianbao server, for example
`httpx.Client(base_url="http://127.0.0.1:8000", timeout=10)`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx


class ApiProblem(Exception):
    """An error answer (application/problem+json). Match on `code`; show `user_message` to people. Its
    message is the request and the whole answer, for logs and tracebacks."""

    def __init__(self, response: httpx.Response) -> None:
        is_problem = response.headers.get("content-type", "").startswith("application/problem+json")
        self.status = response.status_code
        self.problem: dict[str, Any] = response.json() if is_problem else {}
        self.code: str = self.problem.get("code", "")
        request = response.request
        super().__init__(f"{request.method} {request.url} answered {self.status}: {response.text}")


def expect(response: httpx.Response, *statuses: int) -> Any:
    """The JSON body of an answer with one of `statuses` (None if it has no body); anything else raises
    ApiProblem, so that a walkthrough stops at the first unexpected answer."""
    if response.status_code not in statuses:
        raise ApiProblem(response)
    return response.json() if response.content else None


def cny(fen: int) -> dict[str, Any]:
    """Money: an integer number of minor units (fen) and the currency. cny(1234) is ¥12.34."""
    return {"amount": fen, "currency": "CNY"}


def new_idempotency_key() -> str:
    """One key per operation the user means to do once; keep it and reuse it when retrying."""
    return str(uuid.uuid4())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- step-up --------------------------------------------------------------------------------------------

Send = Callable[[dict[str, str]], httpx.Response]
Prove = Callable[[str], None]


def with_step_up(send: Send, prove: Prove) -> httpx.Response:
    """Send a request; if it is answered 401 `step_up_required`, prove the challenge and send the very
    same request again (same body, same Idempotency-Key) with `Step-Up: <challenge_id>`.

    `send` makes the request with the extra headers it is given."""
    response = send({})
    if response.status_code == 401 and response.json().get("code") == "step_up_required":
        challenge_id = response.json()["challenge_id"]
        prove(challenge_id)
        response = send({"Step-Up": challenge_id})
    return response


def prove_with_pin(client: httpx.Client, token: str, pin: str) -> Prove:
    """A prover that answers a challenge with the user's 6-digit payment PIN (method `pin`)."""

    def prove(challenge_id: str) -> None:
        proof = {"method": "pin", "pin": pin}
        expect(client.post(f"/v1/challenges/{challenge_id}/verify", json=proof, headers=bearer(token)), 200)

    return prove


# --- API keys: signed requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    id: str  # key_…
    secret: str  # qbk_…, shown once when the key is created


def signature_headers(key: ApiKey, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
    """The four headers that sign one request: HMAC-SHA256 over method, path, raw query string,
    timestamp, nonce and the SHA-256 of the body, one per line."""
    timestamp = str(int(time.time()))
    nonce = secrets.token_urlsafe(24)
    canonical = "\n".join(
        [method.upper(), path, query, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    ).encode()
    mac = hmac.new(key.secret.encode(), canonical, hashlib.sha256).hexdigest()
    return {
        "Qianbao-Key": key.id,
        "Qianbao-Timestamp": timestamp,
        "Qianbao-Nonce": nonce,
        "Qianbao-Signature": f"v1={mac}",
    }


def signed(
    client: httpx.Client,
    key: ApiKey,
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A request made with an API key. The body is serialised here, once, so that the bytes signed are
    the bytes sent; the query string likewise."""
    query = urlencode(params or {}, doseq=True)
    body = b"" if json_body is None else json.dumps(json_body, ensure_ascii=False).encode()
    sent = {**signature_headers(key, method, path, query, body), **(headers or {})}
    if json_body is not None:
        sent["Content-Type"] = "application/json"
    url = f"{path}?{query}" if query else path
    return client.request(method, url, content=body, headers=sent)


# --- sandbox --------------------------------------------------------------------------------------------


def sandbox_code(client: httpx.Client, phone: str) -> str:
    """Sandbox only: the latest one-time code "sent" to a phone number. In production the user types
    the code they received by SMS."""
    messages = expect(client.get("/v1/sandbox/messages", params={"to": phone}), 200)["data"]
    return str(next(m["code"] for m in messages if m["code"]))

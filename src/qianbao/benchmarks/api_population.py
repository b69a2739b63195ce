"""The bench's population, created over HTTP like real users (sign-up by SMS code, sign-in, funding,
merchants and their static QR codes), and the request mix wrk replays (see `qianbao.benchmarks.api`)."""

from __future__ import annotations

import http.client
import json
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from qianbao.benchmarks.api_params import (
    FUNDING,
    PASSWORD_WORDS,
    SIGNUPS_PER_ADDRESS,
    ApiBenchParams,
    BenchError,
)

Progress = Callable[[int], None]

# -- HTTP for the population ------------------------------------------------------------------------


class Http(Protocol):
    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body) of one request; `source` is the client's address, if it matters."""
        ...


class LoopbackHttp:
    """Plain `http.client` against a loopback server, one keep-alive connection per thread and source
    address (the stdlib can bind the client side to any 127.x.y.z address)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise BenchError(f"the bench drives http:// servers on this machine, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._local = threading.local()

    def _connection(self, source: str | None) -> http.client.HTTPConnection:
        pool: dict[str | None, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.get(source)
        if conn is None:
            conn = http.client.HTTPConnection(
                self.host, self.port, timeout=60, source_address=None if source is None else (source, 0)
            )
            pool[source] = conn
        return conn

    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> tuple[int, Any]:
        sent: dict[str, str] = {"Content-Type": "application/json", **(headers or {})}
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            conn = self._connection(source)
            try:
                conn.request(method, path, body=payload, headers=sent)
                response = conn.getresponse()
                raw = response.read()
            except (ConnectionError, http.client.HTTPException):
                conn.close()  # a keep-alive connection the server closed: reconnect once
                self._local.pool.pop(source, None)
                if attempt == 2:
                    raise
                continue
            return response.status, json.loads(raw) if raw else None
        raise AssertionError("unreachable")  # pragma: no cover


def _expect(status: int, body: Any, wanted: int, what: str) -> Any:
    if status != wanted:
        raise BenchError(f"{what}: HTTP {status} (expected {wanted}): {json.dumps(body)[:400]}")
    return body


# -- the population ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchUser:
    user_id: str
    phone: str
    token: str
    wallet_id: str
    device: str


@dataclass(frozen=True)
class BenchMerchant:
    merchant_id: str
    wallet_id: str
    qr: str


@dataclass
class Population:
    payers: list[BenchUser]
    merchants: list[BenchMerchant]
    seconds: float = 0.0


def source_addresses(
    count: int, per_address: int = SIGNUPS_PER_ADDRESS, seed: int | None = None
) -> list[str]:
    """`count` loopback client addresses, each used for at most `per_address` sign-ups. The second octet
    is random per run, so a rerun against the same server (`--url`) starts with fresh per-IP windows."""
    second = (seed if seed is not None else secrets.randbelow(200)) % 200 + 20
    out = []
    for i in range(count):
        slot = i // per_address
        out.append(f"127.{second}.{slot // 250 % 250 + 1}.{slot % 250 + 2}")
    return out


def new_phones(count: int, rng: random.Random) -> list[str]:
    """Distinct valid Chinese mobile numbers (+86 139 …), random so reruns do not collide."""
    numbers = rng.sample(range(10**8), count)
    return [f"+86139{n:08d}" for n in numbers]


def bench_password(rng: random.Random) -> str:
    words = rng.sample(PASSWORD_WORDS, 3)
    return "-".join(words) + f"-{rng.randrange(10, 100)}"


def sign_up(http: Http, phone: str, device: str, password: str, source: str | None) -> BenchUser:
    """The whole consumer sign-up over HTTP: SMS code (read from the sandbox), account, session."""
    _expect(
        *http.call("POST", "/v1/verifications", body={"phone": phone}, source=source), 202, "verification"
    )
    status, messages = http.call("GET", f"/v1/sandbox/messages?to={phone.replace('+', '%2B')}", source=source)
    codes = [m["code"] for m in _expect(status, messages, 200, "sandbox messages")["data"] if m["code"]]
    if not codes:
        raise BenchError(f"no sign-up code was sent to {phone}")
    body = {"phone": phone, "code": codes[0], "password": password, "name": "压测用户", "device_id": device}
    created = _expect(*http.call("POST", "/v1/users", body=body, source=source), 201, "sign-up")
    session_body = {"phone": phone, "password": password, "device_id": device}
    session = _expect(*http.call("POST", "/v1/sessions", body=session_body, source=source), 201, "sign-in")
    return BenchUser(created["id"], phone, session["token"], created["main_wallet_id"], device)


def _auth(user: BenchUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}", "Device-Id": user.device}


def fund(http: Http, user: BenchUser, amount: int) -> None:
    body = {"wallet_id": user.wallet_id, "amount": {"amount": amount, "currency": "CNY"}}
    headers = {**_auth(user), "Idempotency-Key": f"bench-fund-{user.wallet_id}"}
    _expect(*http.call("POST", "/v1/sandbox/fund", body=body, headers=headers), 201, "sandbox funding")


def open_merchant(http: Http, owner: BenchUser, number: int) -> BenchMerchant:
    body = {"name": f"Bench Shop {number}", "mcc": "5812", "city": "Shanghai"}
    headers = {**_auth(owner), "Idempotency-Key": f"bench-merchant-{owner.user_id}"}
    merchant = _expect(*http.call("POST", "/v1/merchants", body=body, headers=headers), 201, "merchant")
    status, qr = http.call("GET", f"/v1/merchants/{merchant['id']}/qr", headers=_auth(owner))
    payload = _expect(status, qr, 200, "merchant QR code")["payload"]
    return BenchMerchant(merchant["id"], merchant["wallet"]["id"], payload)


def create_population(
    http: Http, params: ApiBenchParams, progress: Progress, *, rng: random.Random | None = None
) -> Population:
    """Payers (signed up, signed in, funded) and merchants (owners signed up, merchant, static QR)."""
    rng = rng or random.Random()  # noqa: S311 - phone numbers for a benchmark, not secrets
    started = time.perf_counter()
    total = params.payers + params.merchants
    phones = new_phones(total, rng)
    sources = source_addresses(total, seed=rng.randrange(10**6))
    password = bench_password(rng)
    done = 0
    lock = threading.Lock()

    def one(i: int) -> BenchUser | BenchMerchant:
        nonlocal done
        user = sign_up(http, phones[i], f"bench-device-{i}", password, sources[i])
        result: BenchUser | BenchMerchant
        if i < params.payers:
            fund(http, user, FUNDING)
            result = user
        else:
            result = open_merchant(http, user, i - params.payers + 1)
        with lock:
            done += 1
            progress(done)
        return result

    with ThreadPoolExecutor(max_workers=params.setup_concurrency) as pool:
        made = list(pool.map(one, range(total)))
    payers = [m for m in made if isinstance(m, BenchUser)]
    merchants = [m for m in made if isinstance(m, BenchMerchant)]
    return Population(payers, merchants, time.perf_counter() - started)


# -- the request mix -----------------------------------------------------------------------------------


def request_lines(population: Population, params: ApiBenchParams, rng: random.Random) -> list[str]:
    """wrk's request templates (bench/api_payments.lua): kind, path, token, device, body up to the amount.

    Four templates per payer, each P2P or QR by `qr_share`, shuffled so that consecutive requests come
    from different payers. P2P goes to another payer's main wallet id (a phone number would spend the
    caller's recipient look-up allowance), QR to a merchant's static code with the amount entered."""
    payers, merchants = population.payers, population.merchants
    if len(payers) < 2 and params.qr_share < 1:
        raise BenchError("P2P transfers need at least two payers")
    if not merchants and params.qr_share > 0:
        raise BenchError("QR payments need at least one merchant")
    lines = []
    for index, payer in enumerate(payers):
        for _ in range(4):
            body: dict[str, Any]
            if rng.random() < params.qr_share:
                merchant = rng.choice(merchants)
                kind, path = "qr", "/v1/payments"
                body = {"from_wallet_id": payer.wallet_id, "qr": merchant.qr}
            else:
                other = rng.randrange(len(payers) - 1)
                payee = payers[other if other < index else other + 1]
                kind, path = "p2p", "/v1/transfers"
                body = {"from_wallet_id": payer.wallet_id, "to": {"wallet_id": payee.wallet_id}}
            # The amount goes last; the script appends its digits and "}}".
            opened = json.dumps({**body, "amount": {"currency": "CNY", "amount": 0}}, separators=(",", ":"))
            prefix = opened.removesuffix("0}}")
            lines.append("\t".join((kind, path, payer.token, payer.device, prefix)))
    rng.shuffle(lines)
    return lines


def close_body(prefix: str, amount: int) -> str:
    """What the script sends: the template's body with the amount and the closing braces."""
    return f"{prefix}{amount}}}}}"

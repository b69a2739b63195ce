"""`qianbao bench api`: payments per second through the HTTP API, against the ledger engine alone.

One run:
  1. starts `qianbao serve` (N uvicorn workers) on a fresh scratch database, or targets `--url`;
  2. creates the population over HTTP, as clients would: payers (sign-up by SMS code, sign-in, sandbox
     funding) and merchants (owner sign-up, merchant, its static QR code);
  3. drives it with `wrk` and bench/api_payments.lua: P2P transfers (`POST /v1/transfers`, to another
     payer's wallet id) and QR payments (`POST /v1/payments`, a merchant's static code), each with a
     unique Idempotency-Key, over C connections, first a short warm-up, then the measured run;
  4. checks the books: every request the server answered 201 (its idempotency records) is exactly one new
     ledger transfer, wrk saw all of them but those in flight when it stopped, and `verify` agrees;
  5. stops the server and measures the ledger engine alone (the group-commit batcher of `qianbao bench
     ledger`, same database server, as many clients as the HTTP run has connections): the API's rate over
     the ledger's is the overhead ratio.

What the bench changes from a default sandbox server, and why (docs/benchmarks.md):
  - argon2 parameters lowered (sign-up and sign-in of the population only: payments below the step-up
    thresholds hash nothing), demo data off, log level `warning` (no access log);
  - each sign-up comes from its own loopback source address (127.x.y.z), at most `SIGNUPS_PER_ADDRESS`
    per address, because the server allows 20 SMS codes per IP and hour; the payments all come from one.
Limits, step-up and rate limits are the defaults: amounts are small (¥1-¥10 by default) and go to payees
the payer has paid before or to merchants (never a "new payee"), under every tier-4 limit.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from qianbao.ledger.tables import transfers as ledger_transfers
from qianbao.ledger.verify import verify_ledger
from qianbao.store.database import Database
from qianbao.store.idempotency_tables import idempotency_keys

Progress = Callable[[int], None]
Log = Callable[[str], None]

P2P_CODE = "p2p"
PAYMENT_CODE = "merchant.payment"
RESULT_MARKER = "QIANBAO_WRK_RESULT "
SIGNUPS_PER_ADDRESS = 10  # the server allows 20 SMS codes per IP and hour (otp_send_ip)
FUNDING = 200_000  # fen each payer starts with (¥2,000: the tier-4 balance cap is ¥10,000)
PASSWORD_WORDS = ("Lantern", "Harbour", "Quartz", "Meadow", "Copper", "Falcon", "Juniper", "Saffron")
DEFAULT_SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "api_payments.lua"
# The environment of a server the bench starts (see the module docstring).
SERVER_ENV = {
    "QIANBAO_ENV": "sandbox",
    "QIANBAO_SEED_DEMO_DATA": "false",
    "QIANBAO_LOG_LEVEL": "warning",
    "QIANBAO_ARGON2_TIME_COST": "1",
    "QIANBAO_ARGON2_MEMORY_KIB": "8",
    "QIANBAO_ARGON2_PARALLELISM": "1",
}


class BenchError(Exception):
    """The benchmark cannot run or its books do not balance (a message for the operator)."""


@dataclass(frozen=True)
class ApiBenchParams:
    workers: int = 2
    connections: int = 64
    threads: int = 1  # wrk threads: one is plenty at these rates and leaves the cores to the server
    duration_s: int = 30
    warmup_s: int = 5
    payers: int = 400
    merchants: int = 20
    qr_share: float = 0.5
    amount_min: int = 100
    amount_max: int = 1000
    setup_concurrency: int = 16
    ledger_transfers: int = 60_000
    ledger_clients: int = 0  # 0: as many as the HTTP run has connections
    timeout_s: int = 10
    seed: int = 1


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


# -- wrk ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    seconds: float
    requests: int
    statuses: dict[int, int]
    kinds: dict[str, int]
    latency_ms: dict[str, float]
    socket_errors: dict[str, int]
    samples: dict[int, str] = field(default_factory=dict)
    requests_per_s_reported: float | None = None

    @property
    def succeeded(self) -> int:
        return self.statuses.get(201, 0)

    @property
    def failed(self) -> int:
        return self.requests - self.succeeded

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def payments_per_s(self) -> float:
        return self.succeeded / self.seconds if self.seconds else 0.0


_REPORTED_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)


def parse_wrk_output(text: str) -> WrkResult:
    """The script's result line (and wrk's own Requests/sec, kept for cross-checking)."""
    line = next((ln for ln in text.splitlines() if ln.startswith(RESULT_MARKER)), None)
    if line is None:
        raise BenchError("wrk printed no result line: is bench/api_payments.lua the script it ran?")
    data = json.loads(line.removeprefix(RESULT_MARKER))
    reported = _REPORTED_RATE.search(text)
    return WrkResult(
        seconds=data["duration_us"] / 1e6,
        requests=int(data["requests"]),
        statuses={int(k): int(v) for k, v in data["statuses"].items()},
        kinds={str(k): int(v) for k, v in data["kinds"].items()},
        latency_ms={k: round(float(v) / 1000, 2) for k, v in data["latency_us"].items()},
        socket_errors={k: int(v) for k, v in data["errors"].items()},
        samples={int(k): str(v) for k, v in data["samples"].items()},
        requests_per_s_reported=float(reported.group(1)) if reported else None,
    )


def find_wrk(explicit: str | None = None) -> str:
    found = shutil.which(explicit or "wrk")
    if found is None:
        raise BenchError(
            "wrk is not installed: `apt-get install -y wrk` (Debian's package), or give --wrk PATH"
        )
    return found


def wrk_command(
    wrk: str,
    script: Path,
    url: str,
    population_file: Path,
    key_prefix: str,
    params: ApiBenchParams,
    seconds: int,
) -> list[str]:
    options = [
        f"-t{params.threads}",
        f"-c{params.connections}",
        f"-d{seconds}s",
        f"--timeout={params.timeout_s}s",
    ]
    script_args = [str(population_file), key_prefix, str(params.amount_min), str(params.amount_max)]
    return [wrk, *options, "-s", str(script), url, "--", *script_args]


def run_wrk(command: Sequence[str]) -> tuple[WrkResult, str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our argv
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk_output(done.stdout), done.stdout


# -- CPU accounting (Linux /proc; best effort) ---------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stats() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command, CPU ticks) of every process we can read."""
    out = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return out


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    values = [int(v) for v in first[:8]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class CpuSample:
    server: int
    postgres: int
    children: float
    machine_busy: int
    machine_total: int


def _descendants(stats: dict[int, tuple[int, str, int]], root: int) -> set[int]:
    found = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _name, _ticks) in stats.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def cpu_sample(server_pid: int | None) -> CpuSample:
    stats = _proc_stats()
    server = 0
    if server_pid is not None and server_pid in stats:
        server = sum(stats[p][2] for p in _descendants(stats, server_pid))
    postgres = sum(t for (_pp, name, t) in stats.values() if name.startswith("postgres"))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, total = _machine_ticks()
    return CpuSample(server, postgres, usage.ru_utime + usage.ru_stime, busy, total)


def cpu_cores(before: CpuSample, after: CpuSample, seconds: float, *, server: bool) -> dict[str, float]:
    """Average cores used during the window by the server processes, PostgreSQL, wrk, and everything."""
    if not seconds:
        return {}
    shares = {
        "postgres": (after.postgres - before.postgres) / _TICKS / seconds,
        "wrk": (after.children - before.children) / seconds,
    }
    if server:
        shares["server"] = (after.server - before.server) / _TICKS / seconds
    if after.machine_total > before.machine_total:
        cores = os.cpu_count() or 1
        busy = (after.machine_busy - before.machine_busy) / (after.machine_total - before.machine_total)
        shares["machine"] = busy * cores
    return {k: round(v, 2) for k, v in shares.items()}


# -- the server --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    pid: int | None
    log_path: Path | None


def wait_healthy(http: Http, deadline_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not alive():
            raise BenchError("the server exited during start-up")
        try:
            status, _ = http.call("GET", "/healthz")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise BenchError(f"the server did not answer /healthz within {deadline_s:.0f} s")


@contextmanager
def started_server(database_url: str, workers: int, work_dir: Path) -> Iterator[Server]:
    """`qianbao serve` on a free loopback port with the bench's environment; stopped afterwards."""
    port = free_port()
    log_path = work_dir / "server.log"
    env = {**os.environ, **SERVER_ENV, "QIANBAO_VAR_DIR": str(work_dir / "var")}
    command = [
        sys.executable, "-m", "qianbao.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--database-url", database_url,
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}", process.pid, log_path)
    try:
        try:
            wait_healthy(LoopbackHttp(server.url), 120, alive=lambda: process.poll() is None)
        except BenchError as exc:
            raise BenchError(f"{exc}; its log:\n{tail(log_path)}") from None
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # uvicorn's supervisor stops its workers and exits
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the process group we started, nothing else
                process.wait(10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BenchError(
            f"--url must be a server on this machine (127.0.0.1, localhost, [::1]), not {host!r}"
        )


# -- the books ------------------------------------------------------------------------------------------


def payment_transfers(db: Database) -> int:
    """Ledger transfers that are payments (P2P and merchant payments; merchant fees are their own legs)."""
    with db.read() as conn:
        found = conn.execute(
            select(func.count()).where(ledger_transfers.c.code.in_((P2P_CODE, PAYMENT_CODE)))
        ).scalar_one()
    return int(found)


def answered(db: Database, key_prefix: str) -> dict[int, int]:
    """How the server answered the requests whose Idempotency-Key starts with `key_prefix`, by status
    (0: still in progress)."""
    with db.read() as conn:
        rows = conn.execute(
            select(idempotency_keys.c.status_code, func.count())
            .where(idempotency_keys.c.key.startswith(key_prefix, autoescape=True))
            .group_by(idempotency_keys.c.status_code)
        ).all()
    return {int(status): int(count) for status, count in rows}


def settle(db: Database, key_prefix: str, seconds: float = 30) -> dict[int, int]:
    """Wait until the server has finished the requests wrk left in flight when it stopped."""
    deadline = time.monotonic() + seconds
    while True:
        outcome = answered(db, key_prefix)
        if not outcome.get(0) or time.monotonic() > deadline:
            return outcome
        time.sleep(0.2)


@dataclass
class Books:
    server_succeeded: int
    server_outcomes: dict[int, int]
    new_payment_transfers: int
    wrk_unseen: int
    verified: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_books(db: Database, key_prefix: str, before: int, wrk: WrkResult, connections: int) -> Books:
    outcomes = settle(db, key_prefix)
    new = payment_transfers(db) - before
    succeeded = outcomes.get(201, 0)
    problems = []
    if new != succeeded:
        problems.append(f"{succeeded} payments answered 201 but {new} new ledger payment transfers")
    unseen = succeeded - wrk.succeeded
    if not 0 <= unseen <= connections:
        problems.append(f"wrk counted {wrk.succeeded} successes, the server {succeeded}")
    if outcomes.get(0):
        problems.append(f"{outcomes[0]} requests were still in progress")
    report = verify_ledger(db)
    if not report.ok:
        problems.append(f"ledger verify failed: {report}")
    return Books(succeeded, outcomes, new, unseen, report.ok, problems)


# -- the ledger alone ------------------------------------------------------------------------------------


@dataclass
class LedgerOnly:
    transfers: int
    seconds: float
    clients: int
    p50_ms: float
    p99_ms: float
    failed: int

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds else 0.0


def ledger_only(database_url: str, transfers: int, clients: int, progress: Progress) -> LedgerOnly:
    """The group-commit engine of `qianbao bench ledger` (its own scratch database, same server)."""
    from qianbao.benchmarks.ledger import LedgerBenchParams, run_engine, setup_engine_accounts
    from qianbao.benchmarks.scratch import scratch_database
    from qianbao.ledger.engine import LedgerEngine
    from qianbao.store import migrate

    params = LedgerBenchParams(transfers=transfers, clients=clients, accounts=max(2, min(10_000, transfers)))
    with scratch_database(database_url, prefix="qianbao_bench_ledger") as url:
        db = Database(url, pool_size=4)
        try:
            migrate.upgrade(db)
            engine = LedgerEngine(db)
            setup_engine_accounts(engine, params)
            stats, _batches = run_engine(engine, params, progress)
        finally:
            db.dispose()
    return LedgerOnly(
        stats.transfers,
        stats.seconds,
        clients,
        stats.percentile_ms(0.5),
        stats.percentile_ms(0.99),
        stats.failed,
    )


# -- the whole run ----------------------------------------------------------------------------------------


@dataclass
class ApiBenchResult:
    database: str
    params: ApiBenchParams
    server: str
    population_seconds: float
    wrk: WrkResult
    books: Books | None
    ledger: LedgerOnly | None
    cpu_cores: dict[str, float]
    synchronous_commit: str | None

    @property
    def server_cpu_ms_per_payment(self) -> float | None:
        """CPU time of the server processes per successful payment: unlike the rate, it does not depend
        on how much of the machine other processes take."""
        cores = self.cpu_cores.get("server")
        if cores is None or not self.wrk.payments_per_s:
            return None
        return round(cores / self.wrk.payments_per_s * 1000, 2)

    def summary(self) -> dict[str, Any]:
        w = self.wrk
        ratio = None
        if self.ledger is not None and self.ledger.per_second:
            ratio = round(w.payments_per_s / self.ledger.per_second, 3)
        return {
            "benchmark": "api",
            "database": self.database,
            "server": self.server,
            "requests_per_s": round(w.requests_per_s, 1),
            "payments_per_s": round(w.payments_per_s, 1),
            "p50_ms": w.latency_ms.get("p50"),
            "p99_ms": w.latency_ms.get("p99"),
            "p999_ms": w.latency_ms.get("p999"),
            "max_ms": w.latency_ms.get("max"),
            "requests": w.requests,
            "succeeded": w.succeeded,
            "failed": w.failed,
            "statuses": {str(k): v for k, v in sorted(w.statuses.items())},
            "kinds": w.kinds,
            "socket_errors": w.socket_errors,
            "seconds": round(w.seconds, 2),
            "ledger_transfers_per_s": None if self.ledger is None else round(self.ledger.per_second, 1),
            "ledger_p50_ms": None if self.ledger is None else round(self.ledger.p50_ms, 2),
            "ledger_p99_ms": None if self.ledger is None else round(self.ledger.p99_ms, 2),
            "ledger_clients": None if self.ledger is None else self.ledger.clients,
            "api_over_ledger": ratio,
            "books_ok": None if self.books is None else self.books.ok,
            "ledger_verified": None if self.books is None else self.books.verified,
            "server_succeeded": None if self.books is None else self.books.server_succeeded,
            "new_payment_transfers": None if self.books is None else self.books.new_payment_transfers,
            "in_flight_at_stop": None if self.books is None else self.books.wrk_unseen,
            "cpu_cores": self.cpu_cores,
            "server_cpu_ms_per_payment": self.server_cpu_ms_per_payment,
            "population_seconds": round(self.population_seconds, 1),
            "synchronous_commit": self.synchronous_commit,
            **{k: v for k, v in asdict(self.params).items() if k != "ledger_clients"},
        }


def _synchronous_commit(db: Database) -> str | None:
    if not db.is_postgresql:
        return None
    with db.read() as conn:
        return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def run_api_bench(
    params: ApiBenchParams,
    *,
    database_url: str | None,
    url: str | None,
    script: Path,
    wrk: str,
    progress_factory: Callable[[str, int], Progress],
    log: Log,
    keep: bool = False,
) -> ApiBenchResult:
    """Start a server on a scratch database (or use `url`), populate, drive, check; then the ledger alone.

    With `url`, `database_url` is the database that server uses (for the books; without it they are not
    checked) and no scratch database is made."""
    if not script.is_file():
        raise BenchError(f"the wrk script {script} is missing (run from a source checkout or give --script)")
    if url is not None:
        check_loopback(url)
    with tempfile.TemporaryDirectory(prefix="qianbao-bench-api-") as tmp:
        work_dir = Path(tmp)
        if url is not None:
            server = Server(url.rstrip("/"), None, None)
            result = _drive(params, server, database_url, script, wrk, work_dir, progress_factory, log)
        else:
            from qianbao.benchmarks.scratch import scratch_database

            if database_url is None:
                raise BenchError("give --database-url (the database server to make a scratch database on)")
            with scratch_database(database_url, keep=keep, prefix="qianbao_bench_api") as scratch:
                log(f"scratch database {make_url(scratch).database}; starting the server")
                with started_server(scratch, params.workers, work_dir) as server:
                    try:
                        result = _drive(params, server, scratch, script, wrk, work_dir, progress_factory, log)
                    except BenchError as exc:
                        assert server.log_path is not None  # noqa: S101 - a started server has a log
                        raise BenchError(
                            f"{exc}\nthe server's log ends with:\n{tail(server.log_path)}"
                        ) from None
        if params.ledger_transfers and database_url is not None:
            clients = params.ledger_clients or params.connections
            log(f"ledger engine alone: {params.ledger_transfers:,} transfers, {clients} clients")
            progress = progress_factory("ledger engine alone", params.ledger_transfers)
            result.ledger = ledger_only(database_url, params.ledger_transfers, clients, progress)
        return result


def _drive(
    params: ApiBenchParams,
    server: Server,
    database_url: str | None,
    script: Path,
    wrk: str,
    work_dir: Path,
    progress_factory: Callable[[str, int], Progress],
    log: Log,
) -> ApiBenchResult:
    http = LoopbackHttp(server.url)
    wait_healthy(http, 30)
    rng = random.Random(params.seed)  # noqa: S311 - a benchmark's request mix
    label = "population (sign-up, funding, merchants)"
    population = create_population(http, params, progress_factory(label, params.payers + params.merchants))
    log(
        f"population: {len(population.payers)} payers, {len(population.merchants)} merchants"
        f" in {population.seconds:.0f} s"
    )
    population_file = work_dir / "population.tsv"
    population_file.write_text("\n".join(request_lines(population, params, rng)) + "\n")
    run_id = secrets.token_hex(4)
    db = None if database_url is None else Database(database_url, pool_size=2)
    try:
        sync_commit = None if db is None else _synchronous_commit(db)
        if params.warmup_s:
            log(f"warm-up: {params.warmup_s} s")
            warm_prefix = f"bench-{run_id}-warm"
            run_wrk(
                wrk_command(wrk, script, server.url, population_file, warm_prefix, params, params.warmup_s)
            )
            if db is not None:
                settle(db, warm_prefix)
        before = 0 if db is None else payment_transfers(db)
        prefix = f"bench-{run_id}-run"
        log(f"measured run: {params.duration_s} s, {params.connections} connections")
        cpu_before = cpu_sample(server.pid)
        started = time.perf_counter()
        measured, _raw = run_wrk(
            wrk_command(wrk, script, server.url, population_file, prefix, params, params.duration_s)
        )
        window = time.perf_counter() - started
        cores = cpu_cores(cpu_before, cpu_sample(server.pid), window, server=server.pid is not None)
        books = None if db is None else check_books(db, prefix, before, measured, params.connections)
        return ApiBenchResult(
            database="unknown" if db is None else db.dialect,
            params=params,
            server=server.url if server.pid is None else f"started, {params.workers} worker(s)",
            population_seconds=population.seconds,
            wrk=measured,
            books=books,
            ledger=None,
            cpu_cores=cores,
            synchronous_commit=sync_commit,
        )
    finally:
        if db is not None:
            db.dispose()

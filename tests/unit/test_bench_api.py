"""`qianbao bench api` machinery without a server: wrk output parsing, the request templates, addresses."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from qianbao.benchmarks.api import ApiBenchResult
from qianbao.benchmarks.api_floor_app import floor_metadata, floor_writes
from qianbao.benchmarks.api_floors import _rows_settled
from qianbao.benchmarks.api_params import DEFAULT_SCRIPT, RESULT_MARKER, ApiBenchParams, BenchError
from qianbao.benchmarks.api_population import (
    BenchMerchant,
    BenchUser,
    Population,
    close_body,
    request_lines,
    source_addresses,
)
from qianbao.benchmarks.api_server import check_loopback
from qianbao.benchmarks.api_wrk import parse_wrk_output, wrk_command
from qianbao.store.database import Database

# The tail of a real `wrk … -s bench/api_payments.lua` run (one thread, 64 connections, 5 s).
WRK_SAMPLE = """Running 5s test @ http://127.0.0.1:40123
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   861.40ms  402.10ms   2.94s    71.20%
    Req/Sec    52.10     20.33    101.00     66.00%
  238 requests in 5.02s, 119.63KB read
  Non-2xx or 3xx responses: 3
Requests/sec:     47.41
Transfer/sec:     23.83KB
QIANBAO_WRK_RESULT {"duration_us":5020114,"requests":238,"bytes":122501,"errors":{"timeout":0,\
"connect":0,"status":3,"read":0,"write":0},"latency_us":{"p90":1500000,"p99":2714930,"p999":2941160,\
"mean":861400,"p50":1199970,"max":2941160},"statuses":{"201":235,"409":3},"kinds":{"qr":129,"p2p":106},\
"samples":{"409":"{\\"code\\":\\"idempotency_key_in_use\\"}"}}
"""


def _population(payers: int = 5, merchants: int = 2) -> Population:
    users = [
        BenchUser(f"usr_{i}", f"+8613900000{i:03d}", f"qbs_token{i}", f"wal_{i}", f"bench-device-{i}")
        for i in range(payers)
    ]
    # A payload with a tab and quotes: the template format must survive any EMVCo text.
    shops = [BenchMerchant(f"mer_{i}", f"wal_m{i}", f'000201\t"shop {i}"6304ABCD') for i in range(merchants)]
    return Population(users, shops)


def test_the_result_line_is_parsed_with_latency_in_ms_and_counts_by_status() -> None:
    result = parse_wrk_output(WRK_SAMPLE)
    assert result.requests == 238
    assert result.seconds == pytest.approx(5.020114)
    assert result.statuses == {201: 235, 409: 3}
    assert (result.succeeded, result.failed) == (235, 3)
    assert result.kinds == {"qr": 129, "p2p": 106}
    assert result.latency_ms["p50"] == pytest.approx(1199.97)
    assert result.latency_ms["p999"] == pytest.approx(2941.16)
    assert result.socket_errors["status"] == 3
    assert result.samples[409] == '{"code":"idempotency_key_in_use"}'
    assert result.requests_per_s_reported == pytest.approx(47.41)
    assert result.payments_per_s == pytest.approx(235 / 5.020114)


def test_output_without_the_result_line_is_an_error() -> None:
    with pytest.raises(BenchError, match="no result line"):
        parse_wrk_output(WRK_SAMPLE.split(RESULT_MARKER)[0])


def test_templates_close_into_valid_request_bodies_from_every_payer() -> None:
    population = _population()
    lines = request_lines(population, ApiBenchParams(qr_share=0.5), random.Random(3))
    assert len(lines) == 4 * len(population.payers)
    tokens = {u.token: u for u in population.payers}
    wallets = {u.wallet_id for u in population.payers}
    kinds = set()
    for line in lines:
        kind, path, token, device, prefix = line.split("\t")
        kinds.add(kind)
        payer = tokens[token]
        assert device == payer.device
        body = json.loads(close_body(prefix, 1234))
        assert body["from_wallet_id"] == payer.wallet_id
        assert body["amount"] == {"currency": "CNY", "amount": 1234}
        if kind == "p2p":
            assert path == "/v1/transfers"
            assert body["to"]["wallet_id"] in wallets - {payer.wallet_id}
        else:
            assert path == "/v1/payments"
            assert body["qr"] in {m.qr for m in population.merchants}
    assert kinds == {"p2p", "qr"}


@pytest.mark.parametrize(("share", "kind"), [(0.0, "p2p"), (1.0, "qr")])
def test_the_mix_follows_the_qr_share(share: float, kind: str) -> None:
    lines = request_lines(_population(), ApiBenchParams(qr_share=share), random.Random(1))
    assert {line.split("\t")[0] for line in lines} == {kind}


def test_a_mix_that_cannot_be_made_is_refused() -> None:
    with pytest.raises(BenchError):
        request_lines(_population(merchants=0), ApiBenchParams(qr_share=0.5), random.Random(1))
    with pytest.raises(BenchError):
        request_lines(_population(payers=1), ApiBenchParams(qr_share=0.5), random.Random(1))


def test_sign_ups_spread_over_loopback_addresses_within_the_per_ip_limit() -> None:
    addresses = source_addresses(2000, per_address=10, seed=7)
    assert len(addresses) == 2000
    assert all(ip_address(a).is_loopback for a in addresses)
    counts: dict[str, int] = {}
    for a in addresses:
        counts[a] = counts.get(a, 0) + 1
    assert max(counts.values()) == 10
    assert len(counts) == 200
    assert source_addresses(30, seed=7) == addresses[:30]  # same seed, same addresses


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://example.com", "http://192.168.1.2"])
def test_only_servers_on_this_machine_are_driven(url: str) -> None:
    with pytest.raises(BenchError, match="this machine"):
        check_loopback(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_loopback_servers_are_accepted(url: str) -> None:
    check_loopback(url)


def test_the_wrk_command_passes_the_script_its_arguments_after_the_url() -> None:
    params = ApiBenchParams(connections=64, threads=1, amount_min=100, amount_max=1000)
    command = wrk_command("wrk", Path("s.lua"), "http://127.0.0.1:1", Path("p.tsv"), "bench-x", params, 30)
    assert command[:5] == ["wrk", "-t1", "-c64", "-d30s", "--timeout=10s"]
    separator = command.index("--")
    assert command[separator - 1] == "http://127.0.0.1:1"
    assert command[separator + 1 :] == ["p.tsv", "bench-x", "100", "1000"]


def test_the_summary_gives_the_ratio_to_the_ledger_and_cpu_per_payment() -> None:
    from qianbao.benchmarks.api import LedgerOnly

    result = ApiBenchResult(
        database="postgresql",
        params=ApiBenchParams(),
        server="started, 2 worker(s)",
        population_seconds=1.0,
        wrk=parse_wrk_output(WRK_SAMPLE),
        books=None,
        ledger=LedgerOnly(transfers=6000, seconds=1.0, clients=64, p50_ms=9.0, p99_ms=20.0, failed=0),
        cpu_cores={"server": 0.9366, "postgres": 0.3},
        synchronous_commit="on",
    )
    summary = result.summary()
    assert summary["payments_per_s"] == pytest.approx(46.8, abs=0.1)
    assert summary["api_over_ledger"] == pytest.approx(46.81 / 6000, abs=0.001)
    assert summary["ledger_clients"] == 64
    assert summary["server_cpu_ms_per_payment"] == pytest.approx(0.9366 / (235 / 5.020114) * 1000, abs=0.01)
    json.dumps(summary)  # the last output line must be JSON


def test_the_wrk_script_prints_the_line_the_parser_reads() -> None:
    script = DEFAULT_SCRIPT.read_text()
    assert RESULT_MARKER.strip() in script
    assert "Idempotency-Key" in script


def test_floor_requests_are_the_bench_requests_sent_to_the_floor_endpoint() -> None:
    from qianbao.benchmarks.api_floors import floor_lines

    lines = request_lines(_population(), ApiBenchParams(payers=5, merchants=2), random.Random(3))
    rewritten = floor_lines(lines, "group")
    assert len(rewritten) == len(lines)
    for before, after in zip(lines, rewritten, strict=True):
        kind, _path, rest = before.split("\t", 2)
        assert after == "\t".join((kind, "/floor/group", rest))  # same token, device and body


def test_the_summary_gives_each_floor_and_the_ratio_to_it() -> None:
    from qianbao.benchmarks.api_floors import Floor

    wrk = parse_wrk_output(WRK_SAMPLE)
    floor = Floor("transaction", wrk, server_cores=0.5, rows_written=235)
    assert floor.cpu_ms_per_request == pytest.approx(0.5 / (235 / 5.020114) * 1000, abs=0.001)
    result = ApiBenchResult(
        database="postgresql",
        params=ApiBenchParams(),
        server="started, 2 worker(s)",
        population_seconds=1.0,
        wrk=wrk,
        books=None,
        ledger=None,
        cpu_cores={},
        synchronous_commit="on",
        floors=[floor],
    )
    summary = result.summary()
    assert summary["floors"]["transaction"]["per_s"] == pytest.approx(46.8, abs=0.1)
    assert summary["floors"]["transaction"]["p99_ms"] == pytest.approx(2714.93)
    assert summary["api_over_floor"] == {"transaction": 1.0}
    assert summary["floor_error"] is None
    json.dumps(summary)
    result.floors, result.floor_error = [], "the floor server exited during start-up"
    assert result.summary()["floor_error"] == "the floor server exited during start-up"
    assert result.summary()["floors"] == {}


@pytest.fixture
def floor_db(tmp_path: Path) -> Iterator[Database]:
    """A SQLite database with the floors' table (the row check does not care which database)."""
    db = Database(f"sqlite:///{tmp_path / 'floor.db'}")
    floor_metadata.create_all(db.engine)
    try:
        yield db
    finally:
        db.dispose()


def _write_rows(db: Database, prefix: str, count: int, start: int = 0) -> None:
    with db.write() as conn:
        conn.execute(
            floor_writes.insert(), [{"key": f"{prefix}-1-{i}", "amount": 1} for i in range(start, count)]
        )


def test_a_floor_that_answered_201_without_writing_fails_the_bench(floor_db: Database) -> None:
    _write_rows(floor_db, "floor-x-", 200)
    wrk = parse_wrk_output(WRK_SAMPLE)  # 235 answers of 201
    with pytest.raises(BenchError, match="235 times 201 but wrote 200 rows, not 235"):
        _rows_settled(floor_db, "floor-x-", wrk, seconds=0)
    _write_rows(floor_db, "floor-x-", 235, start=200)
    assert _rows_settled(floor_db, "floor-x-", wrk, seconds=0) == 235


def test_with_several_statements_per_request_every_201_must_be_that_many_rows(floor_db: Database) -> None:
    _write_rows(floor_db, "floor-y-", 235)
    with pytest.raises(BenchError, match="wrote 235 rows, not 470"):
        _rows_settled(floor_db, "floor-y-", parse_wrk_output(WRK_SAMPLE), seconds=0, per_request=2)

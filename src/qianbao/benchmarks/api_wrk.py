"""Driving wrk and reading its results; how much CPU each process used during the run (Linux /proc)."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qianbao.benchmarks.api_params import RESULT_MARKER, ApiBenchParams, BenchError

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

#!/usr/bin/env bash
# `qianbao bench api` as recorded in BENCHMARKS.md: a started server (2 workers) on a scratch PostgreSQL
# database, driven by wrk. Extra arguments go to the command (e.g. --duration 60). Needs wrk (Debian:
# `apt-get install -y wrk`). The JSON summary line of each run is appended to results/api-<time>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_URL="${QIANBAO_BENCH_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
if ! command -v wrk >/dev/null; then
  echo "wrk is not installed: apt-get install -y wrk" >&2
  exit 1
fi
mkdir -p bench/results
out="bench/results/api-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
.venv/bin/qianbao bench api --database-url "$PG_URL" "$@" | tee /dev/stderr | tail -n 1 >> "$out"
echo "results: $out"

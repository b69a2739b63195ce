#!/usr/bin/env bash
# The standard benchmark set recorded in BENCHMARKS.md: the ledger runs, then the API run (bench/api.sh).
# Each line of results/ is the JSON summary of a run.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_URL="${QIANBAO_BENCH_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
QB=.venv/bin/qianbao
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench/results/ledger-$stamp.jsonl"
run() { "$QB" bench ledger "$@" | tee /dev/stderr | tail -n 1 >> "$out"; }
run --database-url "$PG_URL"
run --database-url "$PG_URL" --hot-share 0.5
run --database-url sqlite:///./var/bench.db
run --database-url sqlite:///./var/bench.db --hot-share 0.5
echo "results: $out"
# The API benchmark (needs wrk); its results go to their own file.
bash bench/api.sh

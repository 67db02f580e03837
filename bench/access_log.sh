#!/usr/bin/env bash
# What TALLY_ACCESS_LOG costs: one `tally serve` (SQLite, one worker, rate limits
# off) under wrk on GET /v1/accounts/{id}, with the access log off and on, in
# alternating rounds so that a busy machine hurts both alike; the server's stderr
# (where the lines go) is a file, as in production. About 90 s; needs wrk.
#   bench/access_log.sh [rounds] [seconds per run]
set -euo pipefail
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-8}
PORT=${TALLY_BENCH_PORT:-18765}
cd "$(dirname "$0")/.."
DIR=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
if curl -s "127.0.0.1:$PORT/" >/dev/null; then echo "port $PORT is taken" >&2; exit 1; fi
export TALLY_DATABASE_URL="sqlite:///$DIR/bench.db" TALLY_RATE_LIMIT_ENABLED=false
KEY=$(.venv/bin/tally tenants create bench --json \
  | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')

run() {  # $1: TALLY_ACCESS_LOG (false | true)
  TALLY_ACCESS_LOG=$1 .venv/bin/tally serve --port "$PORT" --no-migrate 2>"$DIR/serve.log" &
  PID=$!
  for _ in $(seq 50); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
  kill -0 "$PID"  # still ours, serving
  curl -sf "127.0.0.1:$PORT/v1/accounts" -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' -d '{"id": "cash", "currency": "USD"}' >/dev/null || true
  wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" --latency -H "Authorization: Bearer $KEY" \
    "http://127.0.0.1:$PORT/v1/accounts/cash" | awk -v mode="$1" '
      /Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF}
      END {print "access_log=" mode, "req/s=" rps, "p50=" p50, "p99=" p99, "non-2xx=" (bad ? bad : 0)}'
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=""
}

for round in $(seq "$ROUNDS"); do
  run false
  run true
done

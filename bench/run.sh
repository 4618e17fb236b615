#!/usr/bin/env bash
# Benchmarks: durable submits per second with 1, 16 and 64 keep-alive
# clients, and p50/p99 latency. Starts its own server on a free loopback
# port with a fresh data directory; the load generator is wrk (C, epoll),
# which needs far less CPU per request than the server does.
#
#   bench/run.sh [SECONDS]      (default 10 per run)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
bin=${DROVER_BIN:-./drover}
command -v wrk >/dev/null || { echo "wrk is missing: scripts/install-deps.sh installs it" >&2; exit 1; }
[ -x "$bin" ] || make -j2 drover >/dev/null

. bench/server.sh

auth="Authorization: Bearer $DROVER_TOKEN"
# The keys run goes to a queue whose concurrency limit never refuses.
curl -fsS -X PUT "http://127.0.0.1:$port/v1/queues/bench-keys" -H "$auth" \
    -H 'Content-Type: application/json' -d '{"concurrency_limit": 100000}' >/dev/null

run() { # SCRIPT CLIENTS LABEL
    local t=$(( $2 < 2 ? 1 : 2 ))
    out=$(wrk -t"$t" -c"$2" -d"${secs}s" --latency -s "$1" "http://127.0.0.1:$port")
    line=$(grep '^RESULT' <<<"$out")
    eval "$(sed 's/^RESULT //' <<<"$line")"
    printf '%-14s %-8s %10s %10s %10s %10s %8s\n' "$3" "$2" "$rps" "$p50_ms" "$p99_ms" "$max_ms" "$errors"
}

printf '%-14s %-8s %10s %10s %10s %10s %8s\n' submit clients "submits/s" "p50 ms" "p99 ms" "max ms" errors
for c in 1 16 64; do
    run bench/submit.lua "$c" plain
done
run bench/submit-keys.lua 64 "dedup+ckey"
jobs_total=$(sqlite3 "$work/data/drover.db" 'select count(*) from jobs' 2>/dev/null || echo "?")
echo "jobs stored: $jobs_total"

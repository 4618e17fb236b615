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

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
export DROVER_TOKEN=bench-token-0123456789abcdef
DROVER_ADMIN_TOKEN=$DROVER_TOKEN "$bin" serve --listen 127.0.0.1:0 --data "$work/data" \
    --log-level warn --log-file "$work/server.log" 2>"$work/stderr" &
pid=$!
# --log-level warn keeps per-request lines out of the measurement; the
# "listening" line is info, so find the port from the socket instead.
for _ in $(seq 100); do
    port=$(ss -Htlnp 2>/dev/null | awk -v p="pid=$pid," '$0 ~ p {split($4,a,":"); print a[length(a)]}' | head -1)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "${port:-}" ] || { echo "server did not start" >&2; cat "$work/stderr" "$work/server.log" >&2; exit 1; }

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

#!/usr/bin/env bash
# Webhooks: signed deliveries per second to a local receiver
# (bench/receiver.c) with 1, 10 and 100 subscriptions, and the submit rate
# beside them (the job path's throughput with and without subscribers).
#
# Each case: a fresh server and data directory, K subscriptions to
# job.created, `wrk` submitting for SECONDS with 64 clients; the deliverer
# works meanwhile and after. Deliveries/s = deliveries the receiver got /
# the time from the first submit until the last delivery.
#
#   bench/run-webhooks.sh [SECONDS]      (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
bin=${DROVER_BIN:-./drover}
recv=build/release/bench/receiver
command -v wrk >/dev/null || { echo "wrk is missing: scripts/install-deps.sh installs it" >&2; exit 1; }
[ -x "$bin" ] || make -j2 drover >/dev/null
[ -x "$recv" ] || make -j2 "$recv" >/dev/null
export DROVER_ALLOW_TARGET=127.0.0.0/8

now_ms() { date +%s%3N; }

one_case() { # K
    k=$1
    rdir=$(mktemp -d)
    "$recv" 0 "$rdir/count" & rpid=$!
    rport=""
    for _ in $(seq 100); do
        rport=$(cut -d' ' -f3 "$rdir/count" 2>/dev/null || true)
        [ -n "$rport" ] && break
        sleep 0.05
    done
    [ -n "$rport" ] || { echo "the receiver did not start" >&2; exit 1; }
    . bench/server.sh
    trap 'kill "$pid" "$rpid" 2>/dev/null; wait "$pid" "$rpid" 2>/dev/null; rm -rf "$work" "$rdir"' EXIT
    auth="Authorization: Bearer $DROVER_TOKEN"
    for _ in $(seq "$k"); do
        curl -fsS -X POST "http://127.0.0.1:$port/v1/subscriptions" -H "$auth" \
            -H 'Content-Type: application/json' \
            -d "{\"url\": \"http://127.0.0.1:$rport/hook\", \"events\": [\"job.created\"]}" >/dev/null
    done
    local t0 out line rps jobs want got last stall t1
    t0=$(now_ms)
    out=$(wrk -t2 -c64 -d"${secs}s" -s bench/submit.lua "http://127.0.0.1:$port")
    line=$(grep '^RESULT' <<<"$out")
    eval "$(sed 's/^RESULT //' <<<"$line")"
    jobs=$(sqlite3 "$work/data/drover.db" 'select count(*) from jobs')
    want=$((jobs * k))
    got=0 last=-1 stall=0
    while [ "$k" -gt 0 ]; do
        got=$(cut -d' ' -f2 "$rdir/count" 2>/dev/null || true)
        got=${got:-0} # the receiver rewrites the file every 100 ms
        [ "$got" -ge "$want" ] && break
        if [ "$got" = "$last" ]; then stall=$((stall + 1)); else stall=0; fi
        [ "$stall" -ge 100 ] && break # 10 s without progress
        last=$got
        sleep 0.1
    done
    t1=$(now_ms)
    if [ "$got" -lt "$want" ]; then # say why it stopped
        echo "stalled at $got of $want deliveries; the server's warnings:" >&2
        grep -v '"level":"info"' "$work/server.log" | tail -3 >&2 || true
    fi
    if [ "$k" -gt 0 ]; then
        printf '%-6s %12s %10s %12s %12s %14s\n' "$k" "$rps" "$jobs" "$want" "$got" \
            "$(( got * 1000 / (t1 - t0) ))"
    else
        printf '%-6s %12s %10s %12s %12s %14s\n' 0 "$rps" "$jobs" - - -
    fi
}

printf '%-6s %12s %10s %12s %12s %14s\n' subs "submits/s" jobs "deliveries" received "deliveries/s"
for k in ${CASES:-0 1 10 100}; do
    ( one_case "$k" )
done

#!/usr/bin/env bash
# Admission keys: plain submits vs submits with a dedup_key and a
# concurrency_key (bench/submit-keys.lua), in pairs back to back, each run
# on a fresh server and data directory, 64 clients. Prints each run's rate
# and the server's CPU per request (all threads, and the writer thread).
#
#   bench/run-keys.sh [SECONDS] [PAIRS]      (default 10 s, 3 pairs)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
pairs=${2:-3}
bin=${DROVER_BIN:-./drover}
command -v wrk >/dev/null || { echo "wrk is missing: scripts/install-deps.sh installs it" >&2; exit 1; }
[ -x "$bin" ] || make -j2 drover >/dev/null

one_run() { # SCRIPT
    . bench/server.sh
    curl -fsS -X PUT "http://127.0.0.1:$port/v1/queues/bench-keys" \
        -H "Authorization: Bearer $DROVER_TOKEN" -H 'Content-Type: application/json' \
        -d '{"concurrency_limit": 100000}' >/dev/null
    out=$(wrk -t2 -c64 -d"${secs}s" -s "$1" "http://127.0.0.1:$port")
    eval "$(grep '^RESULT' <<<"$out" | sed 's/^RESULT //')"
    local tot=0 wr=0 name ticks
    for t in /proc/"$pid"/task/*; do
        read -r name <"$t/comm"
        ticks=$(awk '{print $14 + $15}' "$t/stat")
        tot=$((tot + ticks))
        if [ "$name" = drover-writer ]; then wr=$ticks; fi
    done
    local hz
    hz=$(getconf CLK_TCK)
    printf '%-10s %10s %16s %18s\n' "$(basename "$1" .lua)" "$rps" \
        "$((tot * 1000000 / hz / requests))" "$((wr * 1000000 / hz / requests))"
}

printf '%-10s %10s %16s %18s\n' run "submits/s" "cpu us/request" "writer us/request"
for _ in $(seq "$pairs"); do
    (one_run bench/submit.lua)
    (one_run bench/submit-keys.lua)
done

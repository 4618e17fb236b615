#!/usr/bin/env bash
# Benchmarks, end to end: how fast a claim wakes up after a submit (wake),
# then jobs per second through submit -> claim -> complete with submitter
# and worker threads (e2e). Every step is a durable write. Starts its own
# server on a free loopback port with a fresh data directory; the load
# generator is bench/e2e.c (keep-alive connections on one epoll loop).
#
#   bench/run-e2e.sh [SECONDS] [WAKE_ROUNDS]    (defaults 10 and 1000)
#
# SUBMITTERS, WORKERS, CONCURRENCY (jobs a worker holds at once, each
# completed on a connection of its own) and MAX (jobs per claim) override
# 96, 16, 16 and 16.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-1000}
bin=${DROVER_BIN:-./drover}
e2e=${E2E_BIN:-build/release/bench/e2e}
[ -x "$bin" ] || make -j2 drover >/dev/null
[ -n "${E2E_BIN:-}" ] || make -j2 build/release/bench/e2e >/dev/null

. bench/server.sh
url="http://127.0.0.1:$port"

# Each run is bounded: wake rounds take a few ms each, e2e its seconds plus
# a warm-up and the last long-polls (wait_s 1).
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
status=0

# Wake first, on an idle server with an empty database.
out=$(timeout $((60 + rounds / 20)) "$e2e" -n "$rounds" wake "$url") || status=1
echo "$out" | grep -v '^RESULT'
wake=$(grep '^RESULT' <<<"$out" || true)

out=$(timeout $((secs + 60)) "$e2e" -s "${SUBMITTERS:-96}" -w "${WORKERS:-16}" \
    -c "${CONCURRENCY:-16}" -m "${MAX:-16}" -d "$secs" e2e "$url") || status=1
echo "$out" | grep -v '^RESULT'
e2e_line=$(grep '^RESULT' <<<"$out" || true)
queued_db=$(sqlite3 "$work/data/drover.db" \
    "select count(*) from jobs where queue = 'e2e' and state = 'queued'" 2>/dev/null || echo "?")

echo
if [ -n "$wake" ]; then
    printf '%-34s %8s %8s %8s %8s\n' "wake (ms, $(field rounds "$wake") rounds)" p50 p90 p99 max
    printf '%-34s %8s %8s %8s %8s\n' "claim reply - submit 202" "$(field p50_ms "$wake")" \
        "$(field p90_ms "$wake")" "$(field p99_ms "$wake")" "$(field max_ms "$wake")"
    printf '%-34s %8s %8s %8s %8s\n' "claim reply - submit sent" "$(field send_p50_ms "$wake")" \
        "$(field send_p90_ms "$wake")" "$(field send_p99_ms "$wake")" "$(field send_max_ms "$wake")"
fi
if [ -n "$e2e_line" ]; then
    f() { field "$1" "$e2e_line"; }
    printf '\n%-4s %-4s %-4s %-4s %12s %10s %9s %10s %10s %12s %10s %6s\n' S W C max \
        "completed/s" "submits/s" "claims/s" "jobs/claim" "submit ms" "complete ms" "queued end" \
        errors
    printf '%-4s %-4s %-4s %-4s %12s %10s %9s %10s %10s %12s %10s %6s\n' "$(f submitters)" \
        "$(f workers)" "$(f concurrency)" "$(f max)" "$(f completes_s)" "$(f submits_s)" "$(f claims_s)" "$(f jobs_per_claim)" \
        "$(f submit_ms)" "$(f complete_ms)" "$(f queued_end)" "$(f errors)"
    echo "queued in the store (sqlite3): $queued_db"
fi
exit $status

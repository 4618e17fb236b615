#!/usr/bin/env bash
# Webhooks: signed deliveries per second to a local receiver
# (bench/receiver.c) with 1, 10 and 100 subscriptions, and the submit rate
# beside them (the job path's throughput with and without subscribers).
#
# Each case: a fresh server and data directory, K subscriptions to
# job.created, `wrk` submitting for SECONDS with 64 clients while the
# deliverer works. Reported: submits/s; deliveries/s during the load (what
# the receiver got while wrk ran / SECONDS); and deliveries/s in the DRAIN
# seconds after it (default 5), the job path idle. The backlog left after
# that is not waited for (at 100 subscriptions it is minutes of work);
# tests/integration checks that everything arrives. Cases with K = 0 run
# between the others (CASES, default "0 1 0 10 0 100 0") so each ratio can
# use the baselines beside it: the VM's speed drifts over minutes. ROUNDS
# (default 1) repeats the whole sequence; the summary at the end gives, per
# subscription count, the job path's share against the mean of the two
# baselines beside each case, every round's and their median. CONNS
# (default 64) sets wrk's clients: 64 leave the job path bound by the
# writer's cycle, 256 saturate the CPU (bench/README.md shows both).
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
    local out line rps jobs during drained
    out=$(wrk -t2 -c"${CONNS:-64}" -d"${secs}s" -s bench/submit.lua "http://127.0.0.1:$port")
    during=$(cut -d' ' -f2 "$rdir/count" 2>/dev/null || echo 0) # rewritten every 100 ms
    line=$(grep '^RESULT' <<<"$out")
    eval "$(sed 's/^RESULT //' <<<"$line")"
    jobs=$(sqlite3 "$work/data/drover.db" 'select count(*) from jobs')
    if [ "$k" -gt 0 ]; then
        # The drain: until the backlog is gone or DRAIN seconds have passed.
        local t0 t1 got=$during
        t0=$(date +%s%3N)
        t1=$t0
        while [ "$got" -lt $((jobs * k)) ] && [ $((t1 - t0)) -lt $((drain * 1000)) ]; do
            sleep 0.1
            local now
            now=$(cut -d' ' -f2 "$rdir/count" 2>/dev/null || true)
            got=${now:-$got} # the receiver rewrites the file every 100 ms
            t1=$(date +%s%3N)
        done
        printf '%-6s %12s %10s %12s %14s %14s\n' "$k" "$rps" "$jobs" "$((jobs * k))" \
            "$((during / secs))" "$(((got - during) * 1000 / (t1 - t0 + 1)))"
    else
        printf '%-6s %12s %10s %12s %14s %14s\n' 0 "$rps" "$jobs" - - -
    fi
}

drain=${DRAIN:-5}
printf '%-6s %12s %10s %12s %14s %14s\n' subs "submits/s" jobs "to deliver" "deliv/s (load)" \
    "deliv/s (drain)"
results=$(mktemp)
for _ in $(seq "${ROUNDS:-1}"); do
    for k in ${CASES:-0 1 0 10 0 100 0}; do
        ( one_case "$k" ) | tee -a "$results"
    done
done

# Each case against the mean of the baselines (K = 0) before and after it.
echo
echo "job path with subscribers, as a share of the baselines beside each case:"
awk '
    { k[NR] = $1; rps[NR] = $2 }
    END {
        for (i = 1; i <= NR; i++) {
            if (k[i] == 0) continue
            b = 0; n = 0
            for (j = i - 1; j >= 1; j--) if (k[j] == 0) { b += rps[j]; n++; break }
            for (j = i + 1; j <= NR; j++) if (k[j] == 0) { b += rps[j]; n++; break }
            if (n) share[k[i]] = share[k[i]] " " int(100 * rps[i] / (b / n) + 0.5)
        }
        for (s in share) {
            m = split(substr(share[s], 2), v, " ")
            for (a = 1; a <= m; a++) for (c = a + 1; c <= m; c++) if (v[c] < v[a]) { t = v[a]; v[a] = v[c]; v[c] = t }
            med = m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
            printf "  %4s subscriptions: %s (median %s), in %%\n", s, substr(share[s], 2), med
        }
    }' "$results"
rm -f "$results"

# Sourced by the bench scripts: start `drover serve` ($bin) on a free
# loopback port with a fresh data directory, set $port, $pid, $work and
# DROVER_TOKEN, and stop it and clean up on exit.
#
# --log-level warn keeps per-request lines out of the measurement; the
# "listening" line is info, so the port is read from the socket instead.
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
export DROVER_TOKEN=bench-token-0123456789abcdef
DROVER_ADMIN_TOKEN=$DROVER_TOKEN "$bin" serve --listen 127.0.0.1:0 --data "$work/data" \
    --log-level warn --log-file "$work/server.log" 2>"$work/stderr" &
pid=$!
for _ in $(seq 100); do
    port=$(ss -Htlnp 2>/dev/null | awk -v p="pid=$pid," '$0 ~ p {split($4,a,":"); print a[length(a)]}' | head -1)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "${port:-}" ] || { echo "server did not start" >&2; cat "$work/stderr" "$work/server.log" >&2; exit 1; }

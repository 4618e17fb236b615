#!/usr/bin/env bash
# The provisioning example's whole loop on this machine, unattended:
# start drover (temp data dir, free port), start fake-runner.py, PUT the queue
# policy with a fresh secret, submit a job that succeeds and one that fails at
# ansible_complete, follow both with `drover watch`, check the outcome, clean
# up. Exit 0 only if
#   - the good job succeeded with vm_created, ansible_started and
#     ansible_complete all reported, and
#   - the failing job failed at ansible_complete, kind "error", with the fake
#     runner's run id (local-N), after its 2 attempts (max_attempts 2).
#
# Needs bash, python3, curl. The drover binary comes from $DROVER_BIN
# (default: ./drover at the repository's root).
#   DROVER_BIN=/path/to/drover examples/provisioning/run-demo.sh
# KEEP=1 keeps the temp directory (data, logs) even when all went well.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
drover=${DROVER_BIN:-$root/drover}
case $drover in /*) ;; *) drover=$PWD/$drover ;; esac
[ -x "$drover" ] || { echo "run-demo: no drover binary at $drover (build it with make, or set DROVER_BIN)" >&2; exit 2; }
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "run-demo: $tool is needed" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/drover-example.XXXXXX")
drover_pid="" runner_pid="" ok=0

cleanup() {
    local rc=$?
    set +e
    # Only the processes this script started, by their pid.
    [ -n "$runner_pid" ] && kill "$runner_pid" 2>/dev/null && wait "$runner_pid" 2>/dev/null
    [ -n "$drover_pid" ] && kill "$drover_pid" 2>/dev/null && wait "$drover_pid" 2>/dev/null
    if [ "$ok" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$tmp"
    else
        if [ "$ok" != 1 ]; then
            echo
            echo "--- last lines of drover's log ($tmp/drover.log) ---"
            tail -n 40 "$tmp/drover.log" 2>/dev/null
        fi
        echo "run-demo: logs and data kept in $tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
die() { echo "run-demo: $*" >&2; exit 1; }

# Two free loopback ports: drover's and the runner's.
read -r port runner_port < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

export DROVER_URL="http://127.0.0.1:$port"
DROVER_TOKEN="demo-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export DROVER_TOKEN
secret="whsec_$(head -c32 /dev/urandom | base64)"

say "starting drover on $DROVER_URL (data in $tmp/data)"
DROVER_ADMIN_TOKEN=$DROVER_TOKEN "$drover" serve --listen "127.0.0.1:$port" --data "$tmp/data" \
    --allow-target 127.0.0.0/8 >"$tmp/drover.log" 2>&1 &
drover_pid=$!
for _ in $(seq 100); do
    curl -fsS "$DROVER_URL/readyz" >/dev/null 2>&1 && break
    kill -0 "$drover_pid" 2>/dev/null || die "drover exited at start"
    sleep 0.1
done
curl -fsS "$DROVER_URL/readyz" >/dev/null || die "drover is not ready after 10 s"

say "starting the fake runner on http://127.0.0.1:$runner_port/dispatch"
FAKE_RUNNER_SECRET=$secret DROVER_BIN=$drover \
    python3 -u "$here/fake-runner.py" --listen "127.0.0.1:$runner_port" --ansible-seconds 2 \
    > >(sed -u 's/^/    runner | /') 2>&1 &
runner_pid=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$runner_port/healthz" >/dev/null 2>&1 && break
    kill -0 "$runner_pid" 2>/dev/null || die "the fake runner exited at start"
    sleep 0.1
done

# PUT a policy file with the secret (and the runner's port) filled in.
put_policy() {  # QUEUE FILE
    local status
    sed -e "s|whsec_REPLACE_WITH_YOUR_SECRET|$secret|" \
        -e "s|http://127.0.0.1:9090/|http://127.0.0.1:$runner_port/|" "$2" >"$tmp/$1.policy.json"
    status=$(curl -sS -o "$tmp/$1.put.json" -w '%{http_code}' -X PUT \
        -H "Authorization: Bearer $DROVER_TOKEN" -H 'Content-Type: application/json' \
        --data-binary @"$tmp/$1.policy.json" "$DROVER_URL/v1/queues/$1")
    [ "$status" = 200 ] || die "PUT /v1/queues/$1 ($2) answered $status: $(cat "$tmp/$1.put.json")"
    echo "PUT /v1/queues/$1 <- $(basename "$2"): 200"
}
say "queue policies"
put_policy provision "$here/policy-local.json"
# policy-github.json is only checked (drover validates its templates); no job goes there.
put_policy provision-github "$here/policy-github.json"

watch_job() {  # ID: follow it live; returns watch's exit status
    local rc=0
    timeout 120 "$drover" watch "$1" --interval 0.2 2>&1 | sed -u 's/^/    watch  | /' || rc=$?
    return "$rc"
}

say "a job that succeeds"
good=$("$drover" submit provision --payload '{"customer": 42, "vm": {"name": "web-42", "plan": "small"}}')
echo "submitted $good"
good_rc=0; watch_job "$good" || good_rc=$?

say "a job that fails at ansible_complete (max_attempts 2: the retry fails too)"
bad=$("$drover" submit provision \
    --payload '{"customer": 43, "vm": {"name": "web-43", "plan": "small"}, "fail_at": "ansible_complete"}')
echo "submitted $bad"
bad_rc=0; watch_job "$bad" || bad_rc=$?

for id in "$good" "$bad"; do
    "$drover" get "$id" --json >"$tmp/$id.json"
    curl -fsS -H "Authorization: Bearer $DROVER_TOKEN" "$DROVER_URL/v1/jobs/$id/events?limit=1000" >"$tmp/$id.events.json"
done

say "outcome"
echo "drover watch exited $good_rc for the good job (0 = succeeded), $bad_rc for the failing one (1 = failed)"
python3 - "$tmp" "$good" "$bad" <<'EOF'
import json, sys
tmp, good, bad = sys.argv[1:]
STEPS = ["vm_created", "ansible_started", "ansible_complete"]

def load(id):
    job = json.load(open(f"{tmp}/{id}.json"))
    events = json.load(open(f"{tmp}/{id}.events.json"))["events"]
    return job, events

problems = []
def check(cond, what):
    print(f"  [{'ok' if cond else 'FAIL'}] {what}")
    if not cond:
        problems.append(what)

for name, id in (("good", good), ("failing", bad)):
    job, events = load(id)
    err = job.get("error") or {}
    print(f"{name} job {id}: state {job['state']}, step {job['step']}, attempt {job['attempt']}, "
          f"run_id {job.get('run_id', '(no field)')}")
    print(f"  checkpoints {json.dumps(job.get('checkpoints'))}")
    if job.get("result") is not None:
        print(f"  result {json.dumps(job['result'])}")
    if err:
        print(f"  error {json.dumps(err)}")
    print(f"  events {' '.join(e['type'] for e in events)}")
    dispatched = [e for e in events if e["type"] == "job.dispatched"]
    if name == "good":
        check(job["state"] == "succeeded", "the good job succeeded")
        check(all(s in (job.get("checkpoints") or {}) for s in STEPS), "all 3 steps were reported")
        check(job["step"] == "ansible_complete", "its step is ansible_complete")
        check(isinstance(job.get("result"), dict) and job["result"].get("vm_id"), "its result names the VM")
        check(len(dispatched) == 1, "it was dispatched once (job.dispatched)")
    else:
        check(job["state"] == "failed", "the failing job failed")
        check(err.get("step") == "ansible_complete", "at ansible_complete")
        check(err.get("kind") == "error", "with error.kind 'error' (reported by the runner)")
        check(str(err.get("run_id", "")).startswith("local-"), "with the runner's run id (local-N)")
        check(job["attempt"] == 2, "after 2 attempts (max_attempts 2)")
        check(len(dispatched) == 2, "each attempt was dispatched (2 job.dispatched)")
        check("vm_created" in (job.get("checkpoints") or {}), "attempt 2 kept attempt 1's vm_created checkpoint")

sys.exit(1 if problems else 0)
EOF
ok=1
say "the loop ran end to end"

"""The client commands (submit, get, list, cancel) against the real server.

Every test runs the real `drover` binary as a subprocess, pointed at the
`server` fixture through DROVER_URL/DROVER_TOKEN or --url/--token, and checks
stdout, the single stderr line and the exit code scripts rely on.
"""

import json
import os
import re
import subprocess
import time

import pytest

from conftest import DROVER_BIN, TOKENS, closed_port

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
COMMANDS = ["submit", "get", "list", "cancel"]

# Exit codes (src/cli/cli.h).
OK, USAGE, NOT_FOUND, CONFLICT, AUTH, REFUSED, SERVER = 0, 2, 3, 4, 5, 6, 7


def clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("DROVER_") or k.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del env[k]
    return env


def drover(*args, url=None, token="submit", input=None, env=None, timeout=30):
    """Run the binary; url/token go in through the environment (None = unset)."""
    e = clean_env()
    if url is not None:
        e["DROVER_URL"] = url
    if token is not None:
        e["DROVER_TOKEN"] = TOKENS.get(token, token)
    if env:
        e.update(env)
    return subprocess.run([DROVER_BIN, *args], input=input, capture_output=True,
                          text=True, env=e, timeout=timeout)


def one_error_line(p):
    """stderr is exactly one `drover: ...` line; returns it."""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("drover: "), p.stderr
    return lines[0]


def submit(server, *args, **kw):
    p = drover("submit", *args, url=server.url, **kw)
    assert p.returncode == OK, p.stderr
    job_id = p.stdout.strip()
    assert ULID.match(job_id), p.stdout
    return job_id


# --- help and usage (no server needed) ---------------------------------------

@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_lists_options_env_and_exit_codes(cmd):
    for flag in ("--help", "-h"):
        p = drover(cmd, flag, token=None)
        assert p.returncode == OK, p.stderr
        assert p.stderr == ""
        out = p.stdout
        assert out.startswith(f"usage: drover {cmd}")
        for word in ("--url", "--token", "--json", "--help", "DROVER_URL", "DROVER_TOKEN"):
            assert word in out, (word, out)
        for code in range(8):
            assert re.search(rf"^\s+{code}\s+\S", out, re.M), (code, out)


def test_help_names_each_command_option():
    expect = {
        "submit": ["--payload", "--payload-file", "--dedup-key", "--concurrency-key", "--lock",
                   "--run-at", "--webhook-url"],
        "list": ["--queue", "--state", "--key", "--limit", "--after", "--all"],
        "cancel": ["--reason"],
    }
    for cmd, opts in expect.items():
        out = drover(cmd, "--help").stdout
        for o in opts:
            assert o in out, (cmd, o)


def test_help_wins_over_missing_arguments():
    p = drover("get", "--help")
    assert p.returncode == OK and "usage: drover get ID" in p.stdout


def test_top_level_usage_lists_commands():
    p = drover("--help", token=None)
    assert p.returncode == OK, p.stderr
    for cmd in ["serve", *COMMANDS]:
        assert re.search(rf"^\s+{cmd}\s", p.stdout, re.M), (cmd, p.stdout)


@pytest.mark.parametrize("args, needle", [
    (["submit"], "missing QUEUE"),
    (["submit", "q", "extra"], "unexpected argument 'extra'"),
    (["submit", "q", "--bogus"], "unknown option '--bogus'"),
    (["submit", "q", "-x"], "unknown option '-x'"),
    (["submit", "q", "--payload"], "needs a value"),
    (["submit", "q", "--json=yes"], "takes no value"),
    (["submit", "q", "--payload", "{not json"], "not valid JSON"),
    (["submit", "q", "--payload", "[1, 2]"], "must be a JSON object"),
    (["submit", "q", "--payload", "{}", "--payload-file", "-"], "not both"),
    (["submit", "q", "--payload-file", "/nonexistent/payload.json"], "cannot open"),
    (["submit", ""], "empty QUEUE"),
    (["get"], "missing ID"),
    (["get", "a", "b"], "unexpected argument"),
    (["cancel"], "missing ID"),
    (["cancel", "x", "--reason"], "needs a value"),
    (["list", "positional"], "unexpected argument"),
    (["list", "--limit", "0"], "--limit"),
    (["list", "--limit", "ten"], "--limit"),
    (["list", "--url", "ftp://127.0.0.1/"], "http://"),
    (["get", UNKNOWN_ID, "--token", "has space"], "token"),
])
def test_usage_errors_exit_2_with_message_on_stderr(args, needle):
    p = drover(*args, url=f"http://127.0.0.1:{closed_port()}")
    assert p.returncode == USAGE, (p.returncode, p.stderr)
    assert p.stdout == ""
    assert needle in p.stderr, p.stderr
    assert p.stderr.startswith("drover")


# --- submit and get ----------------------------------------------------------

def test_submit_prints_id_and_get_json_matches_api(server):
    job_id = submit(server, "provision", "--payload", '{"customer": 42, "tags": ["a", "b"]}')
    api_job = server.get_job(job_id)
    assert api_job["queue"] == "provision"
    assert api_job["payload"] == {"customer": 42, "tags": ["a", "b"]}

    p = drover("get", job_id, "--json", url=server.url, token="read")
    assert p.returncode == OK, p.stderr
    assert p.stderr == ""
    assert json.loads(p.stdout) == server.get_job(job_id)


def test_submit_json_prints_the_whole_job(server):
    p = drover("submit", "q1", "--json", url=server.url)
    assert p.returncode == OK, p.stderr
    job = json.loads(p.stdout)
    assert ULID.match(job["id"])
    assert job["queue"] == "q1" and job["state"] == "queued" and job["payload"] == {}
    assert job == server.get_job(job["id"])


def test_submit_sends_every_field(server):
    run_at = int(time.time()) + 3600
    job_id = submit(server, "q2", "--dedup-key", "d-1", "--concurrency-key", "user:42",
                    "--lock", "server:1", "--lock", "server:2", "--run-at", str(run_at),
                    "--webhook-url", "http://127.0.0.1:9/hook")
    job = server.get_job(job_id)
    assert job["dedup_key"] == "d-1"
    assert job["concurrency_key"] == "user:42"
    assert job["lock_keys"] == ["server:1", "server:2"]
    assert job["webhook_url"] == "http://127.0.0.1:9/hook"
    assert job["state"] == "scheduled"
    assert job["run_at"] is not None


def test_submit_run_at_rfc3339(server):
    job_id = submit(server, "q", "--run-at", "2099-01-02T03:04:05.000Z")
    job = server.get_job(job_id)
    assert job["state"] == "scheduled"
    assert job["run_at"].startswith("2099-01-02T03:04:05")


def test_submit_payload_file_stdin(server):
    job_id = submit(server, "q", "--payload-file", "-", input='{"from": "stdin", "n": [1, 2]}\n')
    assert server.get_job(job_id)["payload"] == {"from": "stdin", "n": [1, 2]}


def test_submit_payload_file_path(server, tmp_path):
    f = tmp_path / "payload.json"
    f.write_text(json.dumps({"big": "x" * 100000}))
    job_id = submit(server, "q", "--payload-file", str(f))
    assert server.get_job(job_id)["payload"] == {"big": "x" * 100000}


def test_id_usable_in_a_script(server):
    """`id=$(drover submit q)`: stdout is the id and one newline, nothing else."""
    p = drover("submit", "q", url=server.url)
    assert p.returncode == OK
    assert re.fullmatch(r"[0-9A-Z]{26}\n", p.stdout), repr(p.stdout)


def test_get_readable_view(server):
    job_id = submit(server, "view", "--concurrency-key", "ck")
    p = drover("get", job_id, url=server.url, token="read")
    assert p.returncode == OK, p.stderr
    fields = {}
    for line in p.stdout.splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    assert fields["id"] == job_id
    assert fields["queue"] == "view"
    assert fields["state"] == "queued"
    assert fields["concurrency_key"] == "ck"
    assert fields["step"] == "-"  # null
    assert fields["payload"] == "{}"
    # Values line up in one column.
    starts = {len(line) - len(line.split(None, 1)[1]) for line in p.stdout.splitlines()
              if len(line.split(None, 1)) == 2}
    assert len(starts) == 1, p.stdout


def test_server_field_error_is_refused(server):
    p = drover("submit", "not a queue!", url=server.url)
    assert p.returncode == REFUSED, p.stderr
    assert p.stdout == ""
    assert one_error_line(p).startswith("drover: invalid_field: ")


def test_malformed_id_is_refused(server):
    p = drover("get", "not-a-ulid", url=server.url)
    assert p.returncode == REFUSED, p.stderr
    assert one_error_line(p).startswith("drover: bad_request: ")


def test_id_cannot_escape_its_path_segment(server):
    """An id with slashes is percent-encoded, not a path to another route."""
    for job_id in ("../jobs", "..", "."):
        p = drover("get", job_id, url=server.url)
        assert p.returncode in (NOT_FOUND, REFUSED), (job_id, p.returncode, p.stdout, p.stderr)
        assert p.stdout == ""


# --- errors and exit codes ---------------------------------------------------

@pytest.mark.parametrize("args", [["get", UNKNOWN_ID], ["cancel", UNKNOWN_ID],
                                  ["get", UNKNOWN_ID, "--json"]])
def test_unknown_job_exits_3(server, args):
    p = drover(*args, url=server.url)
    assert p.returncode == NOT_FOUND, p.stderr
    assert p.stdout == ""
    line = one_error_line(p)
    assert line.startswith("drover: not_found: "), line


def test_bad_token_exits_5_and_is_never_printed(server):
    bad = "wrong-token-do-not-print"
    for args in (["submit", "q"], ["get", UNKNOWN_ID], ["list"], ["cancel", UNKNOWN_ID]):
        p = drover(*args, url=server.url, token=bad)
        assert p.returncode == AUTH, (args, p.stderr)
        assert one_error_line(p).startswith("drover: unauthorized")
        assert bad not in p.stdout + p.stderr
    # The flag works like the variable, and wins over it.
    p = drover("list", "--token", bad, url=server.url, token="read")
    assert p.returncode == AUTH
    assert bad not in p.stdout + p.stderr


def test_missing_token_exits_5(server):
    p = drover("list", url=server.url, token=None)
    assert p.returncode == AUTH, p.stderr


def test_forbidden_role_exits_5(server):
    p = drover("submit", "q", url=server.url, token="read")
    assert p.returncode == AUTH, p.stderr
    assert one_error_line(p).startswith("drover: forbidden")


def test_unreachable_server_exits_7():
    url = f"http://127.0.0.1:{closed_port()}"
    for args in (["submit", "q"], ["get", UNKNOWN_ID], ["list"], ["cancel", UNKNOWN_ID]):
        p = drover(*args, url=url)
        assert p.returncode == SERVER, (args, p.returncode, p.stderr)
        assert p.stdout == ""
        assert "cannot reach" in one_error_line(p)


def test_url_flag_wins_over_environment(server):
    dead = f"http://127.0.0.1:{closed_port()}"
    p = drover("list", "--url", server.url + "/", url=dead, token="read")
    assert p.returncode == OK, p.stderr
    p = drover("list", "--url", dead, url=server.url, token="read")
    assert p.returncode == SERVER


def test_url_credentials_are_not_printed():
    p = drover("list", "--url", f"http://user:hunter2@127.0.0.1:{closed_port()}")
    assert p.returncode == SERVER
    assert "hunter2" not in p.stderr and "cannot reach" in p.stderr


# --- cancel ------------------------------------------------------------------

def test_cancel_then_cancel_again_conflicts(server):
    job_id = submit(server, "q")
    p = drover("cancel", job_id, url=server.url)
    assert p.returncode == OK, p.stderr
    assert p.stdout == f"{job_id} canceled\n"
    assert server.get_job(job_id)["state"] == "canceled"

    p = drover("cancel", job_id, url=server.url)
    assert p.returncode == CONFLICT, p.stderr
    assert p.stdout == ""
    assert one_error_line(p).startswith("drover: illegal_transition: ")


def test_cancel_with_reason_json(server):
    job_id = submit(server, "q")
    p = drover("cancel", job_id, "--reason", "no longer needed", "--json", url=server.url)
    assert p.returncode == OK, p.stderr
    job = json.loads(p.stdout)
    assert job["id"] == job_id and job["state"] == "canceled"
    assert job == server.get_job(job_id)


# --- list --------------------------------------------------------------------

def parse_table(out):
    lines = out.splitlines()
    header = lines[0].split()
    assert header == ["ID", "QUEUE", "STATE", "STEP", "ATTEMPT", "CREATED"], lines[0]
    return lines[0], [line.split() for line in lines[1:]], lines


def test_list_table(server):
    ids = [submit(server, q) for q in ("alpha", "b", "a-much-longer-queue-name")]
    canceled = submit(server, "alpha")
    assert drover("cancel", canceled, url=server.url).returncode == OK

    p = drover("list", url=server.url, token="read")
    assert p.returncode == OK, p.stderr
    header, rows, lines = parse_table(p.stdout)
    assert [r[0] for r in rows] == [canceled, *reversed(ids)]  # newest first
    by_id = {r[0]: r for r in rows}
    assert by_id[canceled][1:5] == ["alpha", "canceled", "-", "0"]
    assert by_id[ids[2]][1] == "a-much-longer-queue-name"
    assert by_id[ids[0]][5] == server.get_job(ids[0])["created_at"]
    # Columns are aligned: each header word starts where its column starts.
    for col in ("QUEUE", "STATE", "STEP", "ATTEMPT", "CREATED"):
        at = header.index(col)
        for line in lines[1:]:
            assert line[at - 2:at] == "  " and line[at] != " ", (col, line)


def test_list_filters(server):
    a = submit(server, "fa")
    b = submit(server, "fb")
    drover("cancel", b, url=server.url)
    p = drover("list", "--queue", "fa", "--json", url=server.url)
    assert p.returncode == OK, p.stderr
    assert [j["id"] for j in json.loads(p.stdout)["jobs"]] == [a]
    p = drover("list", "--state", "canceled", "--json", url=server.url)
    assert [j["id"] for j in json.loads(p.stdout)["jobs"]] == [b]


def test_list_json_matches_api(server):
    submit(server, "q")
    submit(server, "q")
    p = drover("list", "--json", url=server.url, token="read")
    assert p.returncode == OK, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == server.request("GET", "/v1/jobs", token="read").json


def test_list_pages_with_limit_and_all(server):
    ids = [submit(server, "pages") for _ in range(5)]
    newest_first = list(reversed(ids))

    # One page: two rows, and the cursor for the next page on stderr.
    p = drover("list", "--limit", "2", url=server.url)
    assert p.returncode == OK, p.stderr
    _, rows, _ = parse_table(p.stdout)
    assert [r[0] for r in rows] == newest_first[:2]
    m = re.search(r"--after (\S+)", p.stderr)
    assert m, p.stderr

    p = drover("list", "--limit", "2", "--after", m.group(1), url=server.url)
    _, rows, _ = parse_table(p.stdout)
    assert [r[0] for r in rows] == newest_first[2:4]

    # --all: every page, one header.
    p = drover("list", "--limit", "2", "--all", url=server.url)
    assert p.returncode == OK, p.stderr
    assert p.stdout.count("CREATED") == 1
    _, rows, _ = parse_table(p.stdout)
    assert [r[0] for r in rows] == newest_first

    # --all --json: one response object per line, 2 + 2 + 1 jobs.
    p = drover("list", "--limit", "2", "--all", "--json", url=server.url)
    assert p.returncode == OK, p.stderr
    pages = [json.loads(line) for line in p.stdout.splitlines()]
    assert [len(pg["jobs"]) for pg in pages] == [2, 2, 1]
    assert [j["id"] for pg in pages for j in pg["jobs"]] == newest_first
    assert all(pg["next"] for pg in pages[:-1]) and pages[-1]["next"] is None


def test_list_empty(server):
    p = drover("list", url=server.url)
    assert p.returncode == OK, p.stderr
    assert p.stdout.split() == ["ID", "QUEUE", "STATE", "STEP", "ATTEMPT", "CREATED"]
    p = drover("list", "--json", url=server.url)
    assert json.loads(p.stdout) == {"jobs": [], "next": None}


def test_list_bad_state_is_refused(server):
    p = drover("list", "--state", "sleeping", url=server.url)
    assert p.returncode == REFUSED, p.stderr
    one_error_line(p)

"""Nothing acknowledged is ever lost (DESIGN.md §4-5): SIGKILL under load, and
SIGTERM under load, then a restart on the same data directory."""

import http.client
import json
import random
import threading
import time

from conftest import Server, list_all_jobs

N_THREADS = 8
LOAD_S = 1.5


class Load:
    """N threads submitting as fast as they can over keep-alive connections,
    recording every id that got a 202 (and every job they canceled with 200)."""

    def __init__(self, server, cancel_every=0):
        self.port = server.port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}  # id -> payload
        self.canceled = set()  # cancels answered 200
        self.cancel_tried = set()  # cancels sent (the answer may have been lost)
        self.statuses = {}
        self.bad = []  # unexpected answers
        self.cancel_every = cancel_every
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(N_THREADS)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "load threads hung"

    def run(self, i):
        from conftest import TOKENS
        hdrs = {"Authorization": "Bearer " + TOKENS["submit"],
                "Content-Type": "application/json"}
        conn = None
        n = 0
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                payload = {"thread": i, "n": n, "big": 9007199254740993 + n}
                conn.request("POST", "/v1/jobs", body=json.dumps(
                    {"queue": f"load{i % 2}", "payload": payload}), headers=hdrs)
                r = conn.getresponse()
                body = r.read()
                with self.lock:
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                if r.status == 202:
                    job = json.loads(body)
                    with self.lock:
                        self.acked[job["id"]] = payload
                    n += 1
                    if self.cancel_every and n % self.cancel_every == 0:
                        with self.lock:
                            self.cancel_tried.add(job["id"])
                        conn.request("POST", f"/v1/jobs/{job['id']}/cancel", headers=hdrs)
                        r2 = conn.getresponse()
                        r2.read()
                        if r2.status == 200:
                            with self.lock:
                                self.canceled.add(job["id"])
                        elif r2.status != 503:
                            with self.lock:
                                self.bad.append((r2.status, "cancel"))
                elif r.status == 503:
                    try:
                        err = json.loads(body)
                    except ValueError:
                        err = None
                    if not (isinstance(err, dict) and err.get("error") == "shutting_down"):
                        with self.lock:
                            self.bad.append((503, body[:200]))
                    time.sleep(0.01)
                else:
                    with self.lock:
                        self.bad.append((r.status, body[:200]))
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                # the server went away (killed or draining): reconnect, bounded
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()


def check_survivors(server, acked, canceled, maybe_canceled=(), sample=300):
    """Every acked job is there with its payload and job.created event; acked
    cancels are canceled with 2 events; a cancel whose answer was lost in the
    kill may or may not have happened, but then consistently."""
    jobs = {j["id"]: j for j in list_all_jobs(server, token="admin")}
    missing = [i for i in acked if i not in jobs]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged jobs lost, e.g. {missing[:3]}"
    for jid, payload in acked.items():
        j = jobs[jid]
        if jid in canceled:
            assert j["state"] == "canceled", (jid, j["state"])
        elif jid in maybe_canceled:
            assert j["state"] in ("queued", "canceled"), (jid, j["state"])
        else:
            assert j["state"] == "queued", (jid, j["state"])
        assert j["payload"] == payload, (jid, j["payload"], payload)
    for j in jobs.values():
        assert j["state"] in ("queued", "canceled"), j
    ids = list(acked)
    random.shuffle(ids)
    check = set(ids[:sample]) | set(canceled) | set(maybe_canceled)
    for jid in check:
        r = server.request("GET", f"/v1/jobs/{jid}/events", token="read")
        assert r.status == 200, r
        evs = r.json["events"]
        assert evs[0]["seq"] == 1 and evs[0]["type"] == "job.created", evs
        assert evs[0]["prev_state"] is None
        if jobs[jid]["state"] == "canceled":
            assert [e["type"] for e in evs] == ["job.created", "job.canceled"], evs
            assert evs[1]["seq"] == 2
        else:
            assert len(evs) == 1, evs
    return jobs


def test_sigkill_under_load_loses_nothing(tmp_path):
    s = Server(tmp_path).start()
    try:
        # some canceled jobs before the load
        pre = [s.submit("pre", payload={"i": i}) for i in range(10)]
        pre_canceled = set()
        for j in pre[::2]:
            r = s.request("POST", f"/v1/jobs/{j['id']}/cancel", token="submit")
            assert r.status == 200, r
            pre_canceled.add(j["id"])
        pol = {"max_attempts": 3, "retry_cap": 6, "steps": ["a", "b"]}
        assert s.request("PUT", "/v1/queues/load0", pol, token="admin").status == 200

        load = Load(s, cancel_every=10).start()
        time.sleep(LOAD_S)
        s.kill()  # SIGKILL mid-load
        load.join()
        assert not load.bad, f"unexpected answers under load: {load.bad[:5]}"
        assert len(load.acked) >= 50, f"only {len(load.acked)} submits acknowledged"

        s.start()  # same data dir, a fresh port
        acked = dict(load.acked)
        for j in pre:
            acked[j["id"]] = j["payload"]
        canceled = load.canceled | pre_canceled
        check_survivors(s, acked, canceled, load.cancel_tried - load.canceled)
        g = s.request("GET", "/v1/queues/load0", token="admin")
        assert g.status == 200 and g.json["max_attempts"] == 3 and g.json["steps"] == ["a", "b"]

        # the restarted server works, and new ids do not collide with old ones
        new = s.submit("after")
        assert new["id"] not in acked
        assert new["id"] > max(acked), "ids must keep increasing across a restart"
    finally:
        if s.proc is not None:
            s.stop()


def test_sigterm_under_load_exits_0_and_keeps_every_202(tmp_path):
    s = Server(tmp_path).start()
    try:
        load = Load(s).start()
        time.sleep(1.0)
        t0 = time.monotonic()
        rc = s.stop(timeout=30)  # SIGTERM while the clients keep submitting
        drain_s = time.monotonic() - t0
        load.join()
        assert rc == 0, f"drover exited {rc} on SIGTERM:\n{s.log()[-3000:]}"
        assert not load.bad, f"unexpected answers while draining: {load.bad[:5]}"
        assert len(load.acked) >= 50, f"only {len(load.acked)} submits acknowledged"
        assert set(load.statuses) <= {202, 503}, load.statuses
        assert drain_s < 15, f"draining took {drain_s:.1f}s"

        s.start()
        check_survivors(s, dict(load.acked), set(), sample=200)
    finally:
        if s.proc is not None:
            s.stop()


def test_restart_keeps_jobs_and_policies(tmp_path):
    s = Server(tmp_path).start()
    try:
        a = s.submit("r", payload={"x": "ü", "n": 9007199254740993})
        b = s.submit("r", run_at=int(time.time()) + 3600)
        c = s.submit("r")
        assert s.request("POST", f"/v1/jobs/{c['id']}/cancel", token="submit").status == 200
        assert s.request("PUT", "/v1/queues/r", {"timeout_s": 99}, token="admin").status == 200
        before = list_all_jobs(s)
        s.kill()
        s.start()
        assert list_all_jobs(s) == before
        assert s.get_job(a["id"])["payload"] == {"x": "ü", "n": 9007199254740993}
        assert s.get_job(b["id"])["state"] == "scheduled"
        assert s.get_job(c["id"])["state"] == "canceled"
        assert s.request("GET", "/v1/queues/r", token="read").json["timeout_s"] == 99
    finally:
        if s.proc is not None:
            s.stop()


def test_wal_stays_bounded_under_continuous_load(tmp_path):
    """The WAL is checkpointed and starts over while writes never pause
    (store.checkpoint_pages, here 100 pages): without it a busy server's WAL
    grows without end. Nothing acknowledged is lost across a kill -9 after."""
    s = Server(tmp_path, config_extra="[store]\ncheckpoint_pages = 100\n").start()
    wal = s.data_dir / "drover.db-wal"
    db = s.data_dir / "drover.db"
    try:
        load = Load(s).start()
        deadline = time.monotonic() + 20
        largest = 0
        while time.monotonic() < deadline:
            with load.lock:
                n = len(load.acked)
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            if n >= 3000:
                break
            time.sleep(0.02)
        s.kill()  # SIGKILL mid-load
        load.join()
        assert not load.bad, f"unexpected answers under load: {load.bad[:5]}"
        # 3,000 jobs wrote well over 3,000 pages (12 MB) of WAL frames.
        assert len(load.acked) >= 3000, f"only {len(load.acked)} submits in 20 s"
        assert largest < 4 * 1024 * 1024, f"the WAL grew to {largest} bytes"
        assert db.stat().st_size > 1024 * 1024, "nothing was checkpointed into the database"
        s.start()
        check_survivors(s, dict(load.acked), set(), set())
    finally:
        if s.proc is not None:
            s.stop()

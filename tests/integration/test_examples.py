"""The examples keep working: examples/provisioning/run-demo.sh runs the
whole external-runner loop (drover, the fake runner, a queue in http mode,
a job that succeeds and one that fails at ansible_complete) with the binary
under test, and exits 0 only when both end as its README says."""

import os
import pathlib
import subprocess

from conftest import DROVER_BIN

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_provisioning_demo_runs_end_to_end(tmp_path):
    env = dict(os.environ, DROVER_BIN=DROVER_BIN, TMPDIR=str(tmp_path))
    env.pop("DROVER_TOKEN", None)
    env.pop("DROVER_URL", None)
    r = subprocess.run([str(ROOT / "examples/provisioning/run-demo.sh")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "the loop ran end to end" in r.stdout

"""The ingest job submitted with `ray job submit` to a two-node Ray cluster on this machine
(scripts/ray_two_node.py starts it, submits, and stops only its own processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from brainomni.ingest import read_ledger
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.multinode]


def test_two_node_ray_job_submit(tuh_v1_corpus, tuh_v2_corpus, tmp_path):
    pytest.importorskip("ray.dashboard")
    dest = tmp_path / "out"
    srcs = []
    for c in (tuh_v1_corpus, tuh_v2_corpus):
        srcs += ["--source", f"{c.root} kind=tuh name={c.name} version={c.version} line_freq=60"]
    cmd = [sys.executable, str(ROOT / "scripts" / "ray_two_node.py"), "--dest", str(dest),
           "--", *srcs, "--progress-every", "1"]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    log = out.stdout[-4000:] + out.stderr[-4000:]
    assert out.returncode == 0, log
    assert '"job_status": "SUCCEEDED"' in out.stdout and "rec/s" in out.stdout, log
    assert "stopped" in out.stderr
    rows = read_ledger(str(dest))
    n = len(tuh_v1_corpus.recordings) + len(tuh_v2_corpus.recordings)
    assert len(rows) == n and all(r.outcome == "ok" for r in rows)
    nodes = {r.worker.split(":")[1] for r in rows}
    assert len(nodes) == 2, f"tasks ran on {nodes}"
    assert (dest / "summary.json").exists()

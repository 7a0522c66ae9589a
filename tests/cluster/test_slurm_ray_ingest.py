"""cluster/slurm/ray-ingest.sbatch on a 2-node allocation emulated on this machine: a real
two-node Ray cluster (head + worker, each a `ray start --block` job step), `ray job submit`
of pipelines/ingest.py over a small TUH corpus, and a teardown that leaves no process of
this cluster behind (without `ray stop`, which would stop other Ray clusters here)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from brainomni.ingest import read_ledger
from tests.cluster.conftest import free_port, free_port_block
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.multinode]
SCRIPT = ROOT / "cluster" / "slurm" / "ray-ingest.sbatch"


def _pids_with(marker: str) -> list[int]:
    found = []
    for e in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{e}/cmdline").read_bytes()
        except OSError:
            continue
        if e.isdigit() and int(e) != os.getpid() and marker.encode() in cmd:
            found.append(int(e))
    return found


def test_two_node_ray_cluster_runs_ingest(slurm_env, tuh_v1_corpus, tmp_path):
    pytest.importorskip("ray.dashboard")
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's socket paths
    block = 40
    env = slurm_env(
        RAY_TMP=ray_tmp, RAY_GCS_PORT=str(free_port()), RAY_DASHBOARD_PORT=str(free_port()),
        RAY_CLIENT_PORT=str(free_port()), RAY_DASHBOARD_HOST="127.0.0.1",
        RAY_NODE_PORT_BASE=str(free_port_block(block, 2)), RAY_NODE_PORT_BLOCK=str(block),
        JOIN_TIMEOUT="120",
    )  # fmt: skip
    c, dest = tuh_v1_corpus, tmp_path / "corpus"
    source = f"{c.root} kind=tuh name={c.name} version={c.version} line_freq=60"
    try:
        r = subprocess.run(
            ["bash", str(SCRIPT), "--source", source, "--dest", str(dest), "--progress-every", "1"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        log = r.stdout[-6000:] + r.stderr[-4000:]
        assert r.returncode == 0, log
        assert "ray-ingest: 2 nodes alive" in r.stdout, log
        assert "SUCCEEDED" in r.stdout and "rec/s" in r.stdout, log
        rows = read_ledger(str(dest))
        assert len(rows) == len(c.recordings) and all(x.outcome == "ok" for x in rows)
        assert len({x.worker.split(":")[1] for x in rows}) == 2, "tasks ran on one node only"
        assert "stopped" in r.stdout and not _pids_with(ray_tmp)
    finally:  # a failed run must not leave this cluster behind either
        for pid in _pids_with(ray_tmp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)

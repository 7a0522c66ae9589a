"""``brainomni finetune`` on 2 ranks (torchrun, gloo): each rank trains its share of every
global batch and evaluates a slice; the gathered predictions cover every test window once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainomni.evaluation.windows import save_labelled_set
from tests.evaluation.synthetic import planted_set, tiny_export

pytest.importorskip("deepspeed", reason="fine-tuning runs on DeepSpeed")
pytestmark = [pytest.mark.multinode, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_two_ranks_cover_every_window_once(tmp_path):
    ws = planted_set()
    exp = tiny_export(tmp_path / "exp", ws)
    path = tmp_path / "set"
    save_labelled_set(ws, str(path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "brainomni"]
    cmd += ["finetune", "--set", str(path), "--checkpoint", str(exp), "--out", str(tmp_path / "o")]
    cmd += ["--protocol", "cpu-test-finetune", "epochs=1", "global_batch=16", "--no-plots"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    runs = res["models"]["brainomni"]["runs"]
    assert len(runs) == 3
    subjects = ws.subjects
    for unit in (tmp_path / "o" / "units").rglob("result.json"):
        rec = json.loads(unit.read_text())
        with np.load(unit.parent / "predictions.npz", allow_pickle=False) as z:
            want = ws.labels[np.isin(subjects, rec["subjects"]["test"])]
            np.testing.assert_array_equal(z["test_labels"], want)
            assert z["test_prob"].shape == (len(want), 2)
            np.testing.assert_allclose(z["test_prob"].sum(1), 1.0, atol=1e-5)
        assert rec["windows"]["test"] == len(want)

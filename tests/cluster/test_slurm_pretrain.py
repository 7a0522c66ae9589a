"""cluster/slurm/pretrain.sbatch on a 2-node allocation emulated on this machine (srun and
scontrol shims): a real 2-node x 1-process CPU pretraining run (gloo) through torchrun's
rendezvous, then a requeued start that resumes from the last checkpoint."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import ROOT
from tests.train.pretrain_run import CHEAP_STEPS

pytestmark = [pytest.mark.slow, pytest.mark.multinode]
SCRIPT = ROOT / "cluster" / "slurm" / "pretrain.sbatch"


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=400)  # fmt: skip


def _calls(env: dict) -> list[dict]:
    with open(env["SLURM_SHIM_LOG"]) as f:
        return [json.loads(line) for line in f]


def test_two_nodes_then_requeue_resumes(slurm_env, pretrain_manifest, tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "run"
    env = slurm_env(MANIFEST=str(pretrain_manifest), OUT=str(out), STAGE="tokenizer",
                    RECIPE="cpu-test-tokenizer", GPUS_PER_NODE="1", GLOO_SOCKET_IFNAME="lo")  # fmt: skip
    # 4 cheap steps, then 2 more after the requeue; no plots (what is checked is the launch)
    first = _run(env, "max_steps=4", "plots=false", *CHEAP_STEPS)
    logs = sorted((out / "logs" / "slurm-4242.0").glob("node-*.log"))
    tails = "\n".join(p.name + ":\n" + p.read_text()[-3000:] for p in logs)
    assert first.returncode == 0, first.stdout + first.stderr + tails
    assert "--resume" not in first.stdout  # nothing to resume from

    # One launcher per node, node ranks 0 and 1, one rendezvous endpoint on the first node.
    assert [p.name for p in logs] == ["node-00.log", "node-01.log"]
    launches = [re.search(r"torch\.distributed\.run (.*)", p.read_text()).group(1) for p in logs]
    ranks = [re.search(r"--node-rank=(\d+)", c).group(1) for c in launches]
    endpoints = {
        re.search(r"--master-addr=(\S+) --master-port=(\d+)", c).groups() for c in launches
    }
    assert ranks == ["0", "1"] and len(endpoints) == 1, launches
    assert all("--nnodes=2 --nproc-per-node=1" in c for c in launches)
    (addr, _port), first_node = endpoints.pop(), env["SLURM_JOB_NODELIST"].split(",")[0]
    assert addr == first_node
    calls = _calls(env)
    assert {"prog": "scontrol", "args": ["show", "hostnames", env["SLURM_JOB_NODELIST"]]} in calls
    (srun,) = [c for c in calls if c["prog"] == "srun"]
    assert srun["nodes"] == env["SLURM_JOB_NODELIST"].split(",") and srun["opts"]["ntasks"] == "2"

    # The run itself: a world of 2 ranks, both ranks' loader state in every checkpoint.
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step-00000002", "step-00000004"]
    last = out / "checkpoints" / steps[-1]
    meta = json.loads((last / "meta.json").read_text())
    assert meta["world"] == 2 and meta["step"] == 4
    assert (last / "loader-00000.json").exists() and (last / "loader-00001.json").exists()

    # Requeued (same job id, restart 1): --resume is passed and training continues at step 5.
    env["SLURM_RESTART_COUNT"] = "1"
    again = _run(env, "max_steps=6", "plots=false", *CHEAP_STEPS)
    logs1 = sorted((out / "logs" / "slurm-4242.1").glob("node-*.log"))
    assert again.returncode == 0, again.stdout + again.stderr + logs1[0].read_text()[-3000:]
    assert "checkpoint step 4" in again.stdout and "--resume" in again.stdout
    assert all("--resume" in p.read_text() for p in logs1)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r.get("kind") == "train"]
    assert train_steps == list(range(1, 7)), train_steps  # 1-4, then 5-6: not restarted at 1
    assert (
        json.loads((out / "checkpoints" / "step-00000006" / "meta.json").read_text())["world"] == 2
    )

"""pretrain.sbatch's requeue logic, with a stand-in for torchrun (no training): a crash after
a new checkpoint requeues the job, a crash without progress fails it, and USR1 (Slurm's
warning before the time limit, `--signal=B:USR1@300`) requeues it and stops the step."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "cluster" / "slurm" / "pretrain.sbatch"


@pytest.fixture
def fake_python(tmp_path):
    """`python -m torch.distributed.run ...` does $FAKE_ACTION; anything else is python."""
    exe = tmp_path / "bin" / "python3"
    exe.parent.mkdir()
    exe.write_text(f"""#!/bin/bash
if [[ $1 == -m && $2 == torch.distributed.run ]]; then
    case $FAKE_ACTION in
        progress) mkdir -p "$OUT/checkpoints/step-00000010" && echo {{}} >"$OUT/checkpoints/step-00000010/meta.json"; exit 1 ;;
        crash) exit 3 ;;
        hang) exec sleep 60 ;;
    esac
fi
exec {sys.executable} "$@"
""")  # fmt: skip
    exe.chmod(0o755)
    return exe


def _requeues(env) -> int:
    with open(env["SLURM_SHIM_LOG"]) as f:
        return sum(json.loads(x).get("args", [None])[0] == "requeue" for x in f)


@pytest.mark.parametrize(("action", "rc", "requeued"), [("progress", 0, 1), ("crash", 3, 0)])
def test_crash_requeues_only_after_progress(slurm_env, fake_python, tmp_path, action, rc, requeued):
    out = tmp_path / "run"
    env = slurm_env(MANIFEST="m.json", OUT=str(out), PYTHON=str(fake_python), FAKE_ACTION=action)
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == rc, r.stdout + r.stderr
    assert _requeues(env) == requeued
    assert ("requeueing" in r.stdout) == bool(requeued)


def test_usr1_before_time_limit_requeues(slurm_env, fake_python, tmp_path):
    out = tmp_path / "run"
    env = slurm_env(MANIFEST="m.json", OUT=str(out), PYTHON=str(fake_python), FAKE_ACTION="hang")
    p = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    logs = out / "logs" / "slurm-4242.0"
    deadline = time.monotonic() + 60
    while len(list(logs.glob("node-*.log"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    p.send_signal(signal.SIGUSR1)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stdout + stderr
    assert "time limit near" in stdout and _requeues(env) == 1

"""Pretraining end to end on CPU: 2 ranks (torchrun, gloo), shards served by the moto S3
endpoint, exact kill/resume, resume with another number of ranks (2 -> 1 -> 2, universal
checkpoints), ZeRO 1/2/3, the logged LR and TensorBoard scalars. Export and tokenize-once:
``test_pretrain_export.py``; the shared runs: ``conftest.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.train.pretrain_run import (
    CHEAP_STEPS,
    ROOT,
    TOK_ARGS,
    free_port,
    records,
    samples,
    tok,
)

pytest.importorskip("deepspeed", reason="pretraining needs DeepSpeed (see docs/pretraining.md)")
pytestmark = [pytest.mark.multinode, pytest.mark.slow]


def test_kill_and_resume_reproduces_losses_and_sample_order(s3_data, tok_run, tok_killed, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(tok_killed, out)
    steps = sorted(int(d.name.split("-")[1]) for d in (out / "checkpoints").iterdir())
    assert steps == [3]  # mid-epoch (4 steps per epoch); step 6 never started
    tok(s3_data, out, *TOK_ARGS, "plots=false", "--resume")  # plots: tok_run
    a, b = records(tok_run, "train"), records(out, "train")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert a == b  # every loss, every step, bit for bit
    assert records(tok_run, "val") == records(out, "val")
    for r in (0, 1):
        assert samples(tok_run, r) == samples(out, r)
    # the two ranks never share a sample within an epoch (4 steps x 8 samples)
    keys = [k for r in (0, 1) for s in range(1, 5) for mb in samples(tok_run, r)[s] for k in mb]
    assert len(keys) == len(set(keys)) == 32
    assert {p.name for p in (tok_run / "plots").iterdir()} >= {
        "recon-val-step-00000004.png",
        "recon-unseen-ds005697-step-00000008.png",
    }
    val = records(tok_run, "val")[8]
    assert {
        "val/EEG/mse",
        "val/EEG/pcc",
        "val/EEG/amp",
        "val/EEG/phase",
        "unseen-ds005697/EEG/mae",
    } <= set(val)


# Rank 0 of a 1-rank run resuming the 2-rank checkpoint at step 3: checks what was loaded
# against the checkpoint's own files, then trains on (the test kills it after step 7).
_RESUME_ON_ONE_RANK = """
import json, sys
from pathlib import Path
import torch
from safetensors.torch import load_file
from deepspeed.checkpoint.constants import (BASE_OPTIMIZER_STATE, OPTIMIZER_STATE_DICT,
    PARAM_SLICE_MAPPINGS, SINGLE_PARTITION_OF_FP32_GROUPS)
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state
from brainomni.train.config import TrainConfig
from brainomni.train.trainer import Trainer
from tests.train.pretrain_run import kill_after

out, lr4 = Path(sys.argv[1]), float(sys.argv[2])  # the LR step 4 uses
ck = out / "checkpoints" / "step-00000003"
cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text())["train"])
tr = Trainer(cfg, out, resume=True, callbacks=[kill_after(7)])
assert tr.resumed_from == ck and tr.world == 1 and tr.accum == 4, (tr.resumed_from, tr.accum)
assert tr.step == 3 and tr.engine.global_steps == 3
ds_state = torch.load(ck / "ds" / "mp_rank_00_model_states.pt", weights_only=True)
assert tr.scheduler.state_dict() == ds_state["lr_scheduler"]
assert [g["lr"] for g in tr.engine.optimizer.param_groups] == [lr4, lr4]
# weights and buffers (the RVQ's EMA statistics) are the checkpoint's fp32 model
saved = load_file(str(ck / "model.safetensors"))
state = tr.model.state_dict()
assert set(state) == set(saved) and any("_codebook.cluster_size" in k for k in saved)
for k, v in saved.items():
    assert torch.equal(state[k], v), k
# Adam moments and master weights are the 2-rank ZeRO partitions, reassembled here
from deepspeed.runtime.fp16.loss_scaler import LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address
DS_GLOBALS = [LossScaler, ZeroStageEnum, fragment_address]
parts = {}
for r in range(2):
    f = ck / "ds" / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
    with torch.serialization.safe_globals(DS_GLOBALS):  # no arbitrary unpickling
        sd = torch.load(f, weights_only=True)[OPTIMIZER_STATE_DICT]
    for g, slices in enumerate(sd[PARAM_SLICE_MAPPINGS]):
        flat = dict(sd[BASE_OPTIMIZER_STATE]["state"][g])
        assert int(flat.pop("step")) == 3
        flat["fp32"] = sd[SINGLE_PARTITION_OF_FP32_GROUPS][g]
        for name, fr in slices.items():
            for key, t in flat.items():
                parts.setdefault((name, key), []).append(t.narrow(0, fr.start, fr.numel))
n = 0
for name, p in tr.model.named_parameters():
    for key in ("exp_avg", "exp_avg_sq", "fp32"):
        got = safe_get_full_fp32_param(p) if key == "fp32" else safe_get_full_optimizer_state(p, key)
        want = torch.cat(parts[(name, key)]).view_as(p)
        assert torch.equal(got, want) and got.abs().sum() > 0, (name, key)
    n += 1
opt = tr.engine.optimizer.optimizer
assert all(int(opt.state[g["params"][0]]["step"]) == 3 for g in opt.param_groups)
print(f"CHECKED {n} parameters", flush=True)
tr.train()
"""


def test_resume_with_another_number_of_ranks(s3_data, tok_run, tok_killed, tmp_path):
    """2 ranks (killed after step 5, checkpoint 3) -> 1 rank (killed after step 7, checkpoint
    6) -> 2 ranks to the end: ZeRO state through universal checkpoints, the step count and LR
    schedule continue, every sample of each epoch is seen exactly once."""
    out = tmp_path / "run"
    shutil.copytree(tok_killed, out)
    ref = records(tok_run, "train")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    p = subprocess.run(
        [sys.executable, "-c", _RESUME_ON_ONE_RANK, str(out), repr(ref[4]["lr"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "CHECKED" in p.stdout, p.stderr[-6000:]
    assert p.returncode == -9, p.stderr[-6000:]  # killed after step 7
    assert (out / "checkpoints" / "step-00000003" / "ds-universal" / "zero").is_dir()
    assert (
        json.loads((out / "checkpoints" / "step-00000006" / "meta.json").read_text())["world"] == 1
    )
    p = tok(s3_data, out, *TOK_ARGS, "plots=false", "--resume")  # plots: tok_run
    assert "(step 6, saved with 1 ranks, now 2)" in p.stderr
    got = records(out, "train")
    assert sorted(got) == list(range(1, 9))
    # the same LR at every step as the unbroken run (global batch and schedule unchanged)
    assert [got[s]["lr"] for s in got] == [ref[s]["lr"] for s in got]
    # steps 1-3 ran before the checkpoint; step 4's loss is that of the checkpoint's weights
    # on the epoch's remaining samples, split into other micro-batches: close, not identical
    assert all(got[s] == ref[s] for s in (1, 2, 3))
    assert got[4]["loss"] == pytest.approx(ref[4]["loss"], rel=2e-3)
    assert all(np.isfinite(r["loss"]) for r in got.values())
    assert 8 in records(out, "val")
    # ranks per step: 2 (steps 1-3), 1 (4-6), 2 (7-8); the logs keep the last record per
    # step, and the killed runs' records after their checkpoint were redone
    world = {s: 2 if s <= 3 or s >= 7 else 1 for s in range(1, 9)}
    logs = {r: samples(out, r) for r in (0, 1)}
    all_keys = {
        k for r in (0, 1) for s in (1, 2, 3, 4) for mb in samples(tok_run, r)[s] for k in mb
    }
    assert len(all_keys) == 32
    for epoch in ((1, 2, 3, 4), (5, 6, 7, 8)):  # 4 steps x 8 samples per epoch
        keys = [k for s in epoch for r in range(world[s]) for mb in logs[r][s] for k in mb]
        assert len(keys) == len(set(keys)) == 32 and set(keys) == all_keys


def test_logged_lr_is_the_lr_each_step_used(tok_run):
    """metrics.jsonl's ``lr`` at step s is what the update of step s used: the schedule of
    the run's own DeepSpeed config, stepped s - 1 times on a fresh optimizer."""
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    ds = json.loads((tok_run / "config.json").read_text())["deepspeed"]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=ds["optimizer"]["params"]["lr"])
    sched = WarmupCosineLR(opt, **ds["scheduler"]["params"])
    recs = records(tok_run, "train")
    for step in sorted(recs):
        assert recs[step]["lr"] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), step
        opt.step()
        sched.step()
    assert recs[1]["lr"] < recs[2]["lr"]  # warming up


@pytest.mark.parametrize("stage", [1, 3])
def test_zero_stages_run(s3_data, tmp_path, stage):
    out = tmp_path / f"z{stage}"
    # plots only where they take another path: under ZeRO-3 every rank gathers the weights
    # for the reconstruction example (tok_run checks the plots of ZeRO-2)
    plots = f"plots={str(stage == 3).lower()}"
    args = ["--zero-stage", str(stage), "max_steps=2", "val_every=2", "ckpt_every=2", plots]
    tok(s3_data, out, *args, *CHEAP_STEPS)
    assert (
        json.loads((out / "config.json").read_text())["deepspeed"]["zero_optimization"]["stage"]
        == stage
    )
    assert 2 in records(out, "train") and 2 in records(out, "val")
    assert (out / "plots" / "recon-val-step-00000002.png").exists() == (stage == 3)
    # one more step on 1 rank: the 2-rank ZeRO state goes through a universal checkpoint (the
    # trainer stops if the loaded model differs from the checkpoint's model.safetensors)
    args = ["--zero-stage", str(stage), "max_steps=3", "val_every=2", "ckpt_every=2", "plots=false"]
    p = tok(s3_data, out, *args, *CHEAP_STEPS, "--resume", nproc=1)
    assert "(step 2, saved with 2 ranks, now 1)" in p.stderr
    assert (out / "checkpoints" / "step-00000002" / "ds-universal" / "zero").is_dir()
    assert 3 in records(out, "train") and 3 in records(out, "val")


def test_tensorboard_event_files_hold_the_logged_scalars(tok_run):
    """The run leaves TensorBoard event files with every numeric value of metrics.jsonl's
    train and val records, at the same steps (read back with TensorBoard's reader)."""
    pytest.importorskip("tensorboard", reason="tensorboard is in the train extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list((tok_run / "tensorboard").glob("events.out.tfevents.*"))
    ea = EventAccumulator(str(tok_run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    n = 0
    for kind in ("train", "val"):
        for step, rec in records(tok_run, kind).items():
            for k, v in rec.items():
                if k in ("kind", "step") or isinstance(v, bool) or not isinstance(v, int | float):
                    continue
                tag = f"{kind}/{k}"
                assert tag in tags, (tag, sorted(tags))
                got = {e.step: e.value for e in ea.Scalars(tag)}
                # TensorBoard stores float32
                assert got[step] == pytest.approx(v, rel=1e-6, abs=1e-30), (tag, step)
                n += 1
    assert n > 0 and any(t.startswith("train/loss") for t in tags)

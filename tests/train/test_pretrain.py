"""Pretraining end to end on CPU: 2 ranks (torchrun, gloo), shards served by the moto S3
endpoint, exact kill/resume, resume with another number of ranks (2 -> 1 -> 2, universal
checkpoints), ZeRO 1/2/3, export without DeepSpeed, tokenize-once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import MEEG_DIR, SKIP_REASON
from tests.models.codes import (
    DIST_SLACK,
    assert_codes_equal_where_clear,
    clear,
    moved,
    rvq_walk,
)

pytest.importorskip("deepspeed", reason="pretraining needs DeepSpeed (see docs/pretraining.md)")
pytestmark = [pytest.mark.multinode, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
# how far (Euclidean, unit latents) a batch of 3 instead of 1 may move a latent: float32
# rounding of the same sums in another order (~1e-6), with room to spare
BATCH_TOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int = 2) -> list[str]:
    port = _free_port()
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "brainomni",
    ]


def _run(
    args: list[str], env: dict | None = None, ok: bool = True, nproc: int = 2
) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    p = subprocess.run(
        _torchrun(nproc) + args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=300
    )
    if ok and p.returncode != 0:
        raise AssertionError(f"{args}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


def _records(out: Path, kind: str) -> dict[int, dict]:
    """Last record per step (a resumed run re-logs the steps after its checkpoint)."""
    recs = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == kind:
            r.pop("samples_per_s", None)
            recs[r["step"]] = r
    return recs


def _samples(out: Path, rank: int) -> dict[int, list]:
    """Keys of every micro-batch per step (last record per step, as for ``_records``)."""
    recs = {}
    for line in (out / f"samples-{rank:05d}.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs[r["step"]] = r["keys"]
    return recs


@pytest.fixture(scope="module")
def s3_data(s3_server, tmp_path_factory):
    """Both packs uploaded to a bucket; their manifests; ``{profile: (manifest, s3 root)}``."""
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    from tests.loader.data import packed_manifest

    bucket = s3_server.make_bucket("train")
    out = {}
    for profile in ("tokenizer-10s", "omni-30s"):
        m = packed_manifest(profile)
        root = json.loads(m.read_text())["shards_root"]
        out[profile] = (m, s3_server.upload_dir(root, f"{bucket}/{profile}"))
    out["bucket"] = bucket
    return out


TOK_ARGS = ["max_steps=8", "ckpt_every=3", "val_every=4", "log_samples=true"]


def _tok(s3_data, out: Path, *extra: str, env=None, ok=True, nproc=2):
    m, root = s3_data["tokenizer-10s"]
    sets = [a for a in extra if "=" in a]
    opts = [a for a in extra if "=" not in a]
    return _run(
        [
            "pretrain",
            "tokenizer",
            *sets,
            "--manifest",
            str(m),
            "--out",
            str(out),
            "--recipe",
            "cpu-test-tokenizer",
            "--shards-root",
            root,
            *opts,
        ],
        env=env,
        ok=ok,
        nproc=nproc,
    )


@pytest.fixture(scope="module")
def tok_run(s3_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "run"
    _tok(s3_data, out, *TOK_ARGS)
    return out


KILL = "BRAINOMNI_TEST_KILL_AFTER_STEP"


@pytest.fixture(scope="module")
def tok_killed(s3_data, tmp_path_factory):
    """``tok_run`` SIGKILLed after step 5 (its last checkpoint is step 3); tests resume copies."""
    out = tmp_path_factory.mktemp("tok-killed") / "run"
    p = _tok(s3_data, out, *TOK_ARGS, env={KILL: "5"}, ok=False)
    assert p.returncode != 0
    return out


def test_kill_and_resume_reproduces_losses_and_sample_order(s3_data, tok_run, tok_killed, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(tok_killed, out)
    steps = sorted(int(d.name.split("-")[1]) for d in (out / "checkpoints").iterdir())
    assert steps == [3]  # mid-epoch (4 steps per epoch); step 6 never started
    assert max(_records(out, "train")) == 5
    _tok(s3_data, out, *TOK_ARGS, "--resume")
    a, b = _records(tok_run, "train"), _records(out, "train")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert a == b  # every loss, every step, bit for bit
    assert _records(tok_run, "val") == _records(out, "val")
    for r in (0, 1):
        assert _samples(tok_run, r) == _samples(out, r)
    # the two ranks never share a sample within an epoch (4 steps x 8 samples)
    keys = [k for r in (0, 1) for s in range(1, 5) for mb in _samples(tok_run, r)[s] for k in mb]
    assert len(keys) == len(set(keys)) == 32
    assert {p.name for p in (tok_run / "plots").iterdir()} >= {
        "recon-val-step-00000004.png",
        "recon-unseen-ds005697-step-00000008.png",
    }
    val = _records(tok_run, "val")[8]
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

out, lr4 = Path(sys.argv[1]), float(sys.argv[2])  # the LR step 4 uses
ck = out / "checkpoints" / "step-00000003"
cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text())["train"])
tr = Trainer(cfg, out, resume=True)
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
    ref = _records(tok_run, "train")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        KILL: "7",
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
    p = _tok(s3_data, out, *TOK_ARGS, "--resume")
    assert "(step 6, saved with 1 ranks, now 2)" in p.stderr
    got = _records(out, "train")
    assert sorted(got) == list(range(1, 9))
    # the same LR at every step as the unbroken run (global batch and schedule unchanged)
    assert [got[s]["lr"] for s in got] == [ref[s]["lr"] for s in got]
    # steps 1-3 ran before the checkpoint; step 4's loss is that of the checkpoint's weights
    # on the epoch's remaining samples, split into other micro-batches: close, not identical
    assert all(got[s] == ref[s] for s in (1, 2, 3))
    assert got[4]["loss"] == pytest.approx(ref[4]["loss"], rel=2e-3)
    assert all(np.isfinite(r["loss"]) for r in got.values())
    assert 8 in _records(out, "val")
    # ranks per step: 2 (steps 1-3), 1 (4-6), 2 (7-8); the logs keep the last record per
    # step, and the killed runs' records after their checkpoint were redone
    world = {s: 2 if s <= 3 or s >= 7 else 1 for s in range(1, 9)}
    logs = {r: _samples(out, r) for r in (0, 1)}
    all_keys = {
        k for r in (0, 1) for s in (1, 2, 3, 4) for mb in _samples(tok_run, r)[s] for k in mb
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
    recs = _records(tok_run, "train")
    for step in sorted(recs):
        assert recs[step]["lr"] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), step
        opt.step()
        sched.step()
    assert recs[1]["lr"] < recs[2]["lr"]  # warming up


@pytest.mark.parametrize("stage", [1, 3])
def test_zero_stages_run(s3_data, tmp_path, stage):
    out = tmp_path / f"z{stage}"
    _tok(s3_data, out, "--zero-stage", str(stage), "max_steps=2", "val_every=2", "ckpt_every=2")
    assert (
        json.loads((out / "config.json").read_text())["deepspeed"]["zero_optimization"]["stage"]
        == stage
    )
    assert 2 in _records(out, "train") and 2 in _records(out, "val")
    # one more step on 1 rank: the 2-rank ZeRO state goes through a universal checkpoint (the
    # trainer stops if the loaded model differs from the checkpoint's model.safetensors)
    args = ["--zero-stage", str(stage), "max_steps=3", "val_every=2", "ckpt_every=2"]
    p = _tok(s3_data, out, *args, "--resume", nproc=1)
    assert "(step 2, saved with 2 ranks, now 1)" in p.stderr
    assert (out / "checkpoints" / "step-00000002" / "ds-universal" / "zero").is_dir()
    assert 3 in _records(out, "train") and 3 in _records(out, "val")


_LOAD_NO_DS = """
import sys, json, torch
sys.modules["deepspeed"] = None  # importing DeepSpeed would fail
from brainomni.train.export import load_export
m = load_export(sys.argv[1])
d = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    z = m.encode(d["x"], d["pos"], d["st"])
    _, idx = m.tokenize(d["x"], d["pos"], d["st"])
    # decoding the caller's codes: a continuous function of the weights
    rec = m.decode(m.quantizer.lookup(d["idx"]), d["pos"], d["st"])
torch.save({"z": z, "rec": rec, "idx": idx}, sys.argv[3])
"""


def _first_batch(manifest, root, n=2):
    from brainomni.loader.loader import ShardLoader

    ld = ShardLoader(
        str(manifest), "val", micro_batch=n, chunk=n, shuffle=False, max_epochs=1, shards_root=root
    )
    return next(iter(ld))


def test_export_loads_without_deepspeed_with_identical_outputs(s3_data, tok_run, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from brainomni.train.export import build_model

    exp = tmp_path / "export"
    _export(tok_run, exp)
    cfg = json.loads((exp / "config.json").read_text())
    assert cfg["kind"] == "tokenizer" and cfg["step"] == 8
    # the reference: DeepSpeed's own fp32 reconstruction of the final checkpoint
    ck = tok_run / "checkpoints" / "step-00000008"
    params = get_fp32_state_dict_from_zero_checkpoint(str(ck), tag="ds")
    ref = build_model(json.loads((ck / "model.json").read_text()))
    buffers = torch.load(next((ck / "ds").glob("mp_rank_00_model_states.pt")), weights_only=True)[
        "module"
    ]
    ref.load_state_dict({**buffers, **params})
    ref.eval()
    b = _first_batch(*s3_data["tokenizer-10s"])
    x, pos, st = b["x"].float(), b["pos"], b["sensor_type"]
    with torch.no_grad():
        z_ref = ref.encode(x, pos, st)
        _, idx_ref = ref.tokenize(x, pos, st)
        rec_ref = ref.decode(ref.quantizer.lookup(idx_ref), pos, st)
    torch.save({"x": x, "pos": pos, "st": st, "idx": idx_ref}, tmp_path / "in.pt")
    subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_NO_DS,
            str(exp),
            str(tmp_path / "in.pt"),
            str(tmp_path / "o.pt"),
        ],
        cwd=ROOT,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    got = torch.load(tmp_path / "o.pt", weights_only=True)
    # the same weights: the same latents and decoding (to float32 rounding: another process
    # may sum in another order), and the same codes wherever the nearest code is decided
    torch.testing.assert_close(got["z"], z_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["rec"], rec_ref, atol=1e-4, rtol=1e-4)
    _, margin = rvq_walk(ref.quantizer.codebooks, z_ref)
    decided = clear(margin, 2 * moved(got["z"], z_ref) + DIST_SLACK)
    assert_codes_equal_where_clear(got["idx"], idx_ref, decided, min_fraction=0.5)
    from safetensors.torch import load_file

    for k, v in load_file(str(exp / "model.safetensors")).items():
        assert v.dtype == torch.float32 or not v.is_floating_point(), k


def _export(run: Path, out: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "brainomni", "export", str(run), str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_tokenize_once_then_train_brainomni(s3_data, tok_run, tmp_path):
    from brainomni.loader.loader import read_manifest
    from brainomni.loader.reader import ShardSource, decode_raw, decode_tokens, read_shard
    from brainomni.models import BrainOmni
    from brainomni.storage import join_url
    from brainomni.train.export import load_export

    exp = tmp_path / "tok-export"
    _export(tok_run, exp)
    m30, root30 = s3_data["omni-30s"]
    dest = f"{s3_data['bucket']}/tokens"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "brainomni",
            "tokenize",
            "--tokenizer",
            str(exp),
            "--manifest",
            str(m30),
            "--dest",
            dest,
            "--shards-root",
            root30,
            "--batch-size",
            "3",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    tm = read_manifest(join_url(dest, "manifest.json"))
    src = read_manifest(str(m30))
    assert (
        tm["tokenizer"]["sha256"] == json.loads((exp / "config.json").read_text())["weights_sha256"]
    )
    assert tm["source"]["content_hash"] == src["content_hash"]
    assert {k: v["samples"] for k, v in tm["splits"].items()} == {
        k: v["samples"] for k, v in src["splits"].items()
    }
    # token shards == the inline tokenizer (what stage 2 would compute on the fly), exactly
    tok = load_export(exp)
    omni = BrainOmni("tiny", tokenizer=tok, lm_dim=16, lm_head=4, lm_depth=2, num_quantizers_used=2)
    n, n_decided, n_codes = 0, 0, 0
    for s_tok, s_raw in zip(tm["shards"], src["shards"], strict=True):
        assert s_tok["path"] == s_raw["path"]
        toks = read_shard(
            ShardSource(join_url(dest, s_tok["path"]), s_tok["sha256"], s_tok["samples"]),
            None,
            decode_tokens,
            _rc(),
        )
        raws = read_shard(
            ShardSource(join_url(root30, s_raw["path"]), s_raw["sha256"], s_raw["samples"]),
            None,
            decode_raw,
            _rc(),
        )
        for i, r in raws.items():
            x = torch.from_numpy(r["signal"].astype(np.float32))[None]
            pos = torch.from_numpy(r["sensors"])[None]
            st = torch.from_numpy(r["sensor_type"].astype(np.int64))[None]
            _, idx = omni.tokens(x, pos, st)
            assert toks[i]["key"] == r["key"]
            # the shards were tokenized in batches of 3: another summation order, so codes
            # are compared where the nearest code wins by more than such a change can move
            with torch.no_grad():
                z = tok.encode(x, pos, st, overlap_ratio=omni.config.overlap_ratio)
            _, margin = rvq_walk(tok.quantizer.codebooks, z)
            decided = clear(margin, BATCH_TOL)
            got = torch.from_numpy(toks[i]["tokens"].astype(np.int64))[None]
            assert_codes_equal_where_clear(got, idx, decided, min_fraction=0.0)
            n_decided += int(decided.sum())
            n_codes += decided.numel()
            n += 1
    assert n == src["totals"]["samples"]
    assert n_decided >= 0.5 * n_codes, (n_decided, n_codes)
    assert toks[0]["tokens"].shape == (4, 160, 2)  # 30 s, overlap 0.25 -> 20 windows x 8
    # stage 2 from the token shards (default), and from raw shards under ZeRO-3
    for name, args in (
        ("tokens", ["--manifest", join_url(dest, "manifest.json")]),
        (
            "raw",
            [
                "--manifest",
                str(m30),
                "--source",
                "raw",
                "--shards-root",
                root30,
                "--zero-stage",
                "3",
            ],
        ),
    ):
        out = tmp_path / f"omni-{name}"
        _run(
            [
                "pretrain",
                "omni",
                "--out",
                str(out),
                "--recipe",
                "cpu-test-omni",
                "--tokenizer",
                str(exp),
                *args,
            ]
        )
        tr, val = _records(out, "train"), _records(out, "val")
        assert sorted(tr) == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in tr.values())
        assert {"val/acc_0", "val/acc_1", "val/acc_all"} <= set(val[4])
    exp2 = tmp_path / "omni-export"
    _export(tmp_path / "omni-tokens", exp2)
    model = load_export(exp2)
    assert type(model).__name__ == "BrainOmni" and model.config.lm_depth == 2


def _rc():
    from brainomni.loader.reader import ReadConfig

    return ReadConfig(attempts=1)


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
        for step, rec in _records(tok_run, kind).items():
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

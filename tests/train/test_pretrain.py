"""Pretraining end to end on CPU: 2 ranks (torchrun, gloo), shards served by the moto S3
endpoint, exact kill/resume, ZeRO 1/2/3, export without DeepSpeed, tokenize-once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import MEEG_DIR, SKIP_REASON

pytest.importorskip("deepspeed", reason="pretraining needs DeepSpeed (see docs/pretraining.md)")
pytestmark = [pytest.mark.multinode, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _torchrun() -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "brainomni",
    ]


def _run(args: list[str], env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    p = subprocess.run(
        _torchrun() + args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=300
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


def _tok(s3_data, out: Path, *extra: str, env=None, ok=True):
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
    )


@pytest.fixture(scope="module")
def tok_run(s3_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "run"
    _tok(s3_data, out, *TOK_ARGS)
    return out


def test_kill_and_resume_reproduces_losses_and_sample_order(s3_data, tok_run, tmp_path):
    out = tmp_path / "killed"
    p = _tok(s3_data, out, *TOK_ARGS, env={"BRAINOMNI_TEST_KILL_AFTER_STEP": "5"}, ok=False)
    assert p.returncode != 0
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


@pytest.mark.parametrize("stage", [1, 3])
def test_zero_stages_run(s3_data, tmp_path, stage):
    out = tmp_path / f"z{stage}"
    _tok(s3_data, out, "--zero-stage", str(stage), "max_steps=2", "val_every=2", "ckpt_every=2")
    assert (
        json.loads((out / "config.json").read_text())["deepspeed"]["zero_optimization"]["stage"]
        == stage
    )
    assert 2 in _records(out, "train") and 2 in _records(out, "val")


_LOAD_NO_DS = """
import sys, json, torch
sys.modules["deepspeed"] = None  # importing DeepSpeed would fail
from brainomni.train.export import load_export
m = load_export(sys.argv[1])
d = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    rec = m.reconstruct(d["x"], d["pos"], d["st"])
    _, idx = m.tokenize(d["x"], d["pos"], d["st"])
torch.save({"rec": rec, "idx": idx}, sys.argv[3])
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
    torch.save({"x": x, "pos": pos, "st": st}, tmp_path / "in.pt")
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
    with torch.no_grad():
        assert torch.equal(got["rec"], ref.reconstruct(x, pos, st))
        assert torch.equal(got["idx"], ref.tokenize(x, pos, st)[1])
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
    n = 0
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
            np.testing.assert_array_equal(toks[i]["tokens"], idx[0].numpy())
            n += 1
    assert n == src["totals"]["samples"]
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

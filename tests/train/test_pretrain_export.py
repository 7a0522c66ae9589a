"""Pretrained runs leave the pipeline: export without DeepSpeed (identical outputs), and the
30-s shards tokenized once then BrainOmni trained from the tokens (and from raw shards under
ZeRO-3). The shared tokenizer run: ``conftest.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models.codes import (
    DIST_SLACK,
    assert_codes_equal_where_clear,
    clear,
    moved,
    rvq_walk,
)
from tests.train.pretrain_run import ROOT, records, run

pytest.importorskip("deepspeed", reason="pretraining needs DeepSpeed (see docs/pretraining.md)")
pytestmark = [pytest.mark.multinode, pytest.mark.slow]
# how far (Euclidean, unit latents) a batch of 3 instead of 1 may move a latent: float32
# rounding of the same sums in another order (~1e-6), with room to spare
BATCH_TOL = 1e-4


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


@pytest.fixture(scope="module")
def tok_export(tok_run, tmp_path_factory) -> Path:
    """``brainomni export`` of the shared tokenizer run, made once: both tests only read it."""
    exp = tmp_path_factory.mktemp("tok-export") / "export"
    _export(tok_run, exp)
    return exp


def test_export_loads_without_deepspeed_with_identical_outputs(
    s3_data, tok_run, tok_export, tmp_path
):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from brainomni.train.export import build_model

    exp = tok_export
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


def test_tokenize_once_then_train_brainomni(s3_data, tok_export, tmp_path):
    from brainomni.formats.sample import decode_raw, decode_tokens
    from brainomni.io.fs import join_url
    from brainomni.loader.loader import read_manifest
    from brainomni.loader.reader import ShardSource, read_shard
    from brainomni.models import BrainOmni
    from brainomni.train.export import load_export

    exp = tok_export
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
        run(
            [
                "pretrain",
                "omni",
                "max_steps=2",  # a step, a validation and a checkpoint are what is checked
                "--out",
                str(out),
                "--recipe",
                "cpu-test-omni",
                "--tokenizer",
                str(exp),
                *args,
            ]
        )
        tr, val = records(out, "train"), records(out, "val")
        assert sorted(tr) == [1, 2] and all(np.isfinite(r["loss"]) for r in tr.values())
        assert {"val/acc_0", "val/acc_1", "val/acc_all"} <= set(val[2])
        assert (out / "checkpoints" / "step-00000002" / "meta.json").is_file()
    # in this process (`brainomni export` itself: the tok_export fixture)
    from brainomni.train.export import export

    model = load_export(export(tmp_path / "omni-tokens", tmp_path / "omni-export"))
    assert type(model).__name__ == "BrainOmni" and model.config.lm_depth == 2


def _rc():
    from brainomni.loader.reader import ReadConfig

    return ReadConfig(attempts=1)

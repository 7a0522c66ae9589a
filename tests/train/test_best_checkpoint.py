"""Best validation checkpoint: ``best.json`` names the step of the lowest logged validation
loss, that checkpoint is kept from pruning, and ``brainomni export --best`` exports it."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import MEEG_DIR, SKIP_REASON

pytest.importorskip("deepspeed", reason="pretraining needs DeepSpeed")


@pytest.fixture(scope="module")
def run() -> Path:
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    from tests.train.best_run import trained_run

    return trained_run()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_best_json_names_the_lowest_logged_validation_loss(run):
    from brainomni.train import checkpoint as ckpt
    from tests.train.best_run import val_records

    vals = val_records(run)
    assert sorted(vals) == [1, 2, 3, 4]  # validation after every step
    losses = {s: r["val/loss"] for s, r in vals.items()}
    lowest = min(losses.values())
    best = ckpt.read_best(run)
    assert best["metric"] == "val/loss"
    assert best["value"] == lowest and losses[best["step"]] == lowest
    assert best["step"] == min(s for s, v in losses.items() if v == lowest)  # first of ties
    d = ckpt.best_dir(run)
    assert d == ckpt.step_dir(run, best["step"])
    assert ckpt.verify(d)["step"] == best["step"]  # complete and hashed
    # keep_last=1, yet every checkpoint that was the best when it was saved was kept until
    # a newer best was recorded: the best is never pruned
    assert best["step"] in ckpt.complete_steps(run)


def test_tokenizer_validation_loss_is_the_judge_loss_of_the_pooled_rows():
    from brainomni.train.metrics import tokenizer_report

    g = torch.Generator().manual_seed(0)
    sums = torch.rand(3, 6, generator=g, dtype=torch.float64)
    sums[:, -1] = torch.tensor([10.0, 0.0, 30.0])  # no MAG rows
    rep = tokenizer_report(sums)
    assert not any(k.startswith("MAG/") for k in rep)
    n = 40.0
    mae, pcc = (sums[0, 1] + sums[2, 1]) / n, (sums[0, 2] + sums[2, 2]) / n
    amp, phase = (sums[0, 3] + sums[2, 3]) / n, (sums[0, 4] + sums[2, 4]) / n
    expect = float(mae) + math.exp(-float(pcc)) + float(amp) + 0.5 * float(phase)
    assert rep["loss"] == pytest.approx(expect, rel=1e-12)
    assert rep["GRAD/mse"] == pytest.approx(float(sums[2, 0]) / 30.0)


def _fake_checkpoint(out: Path, step: int, keep_last: int, keep=()) -> None:
    from brainomni.train import checkpoint as ckpt

    d = ckpt.step_dir(out, step)
    d.mkdir(parents=True)
    (d / "model.json").write_text("{}")
    ckpt.finish(d, {"step": step, "world": 1}, keep_last, keep=keep)


def test_pruning_keeps_the_best_checkpoint(tmp_path):
    from brainomni.train import checkpoint as ckpt

    _fake_checkpoint(tmp_path, 1, keep_last=2)
    _fake_checkpoint(tmp_path, 2, keep_last=2, keep=(1,))
    _fake_checkpoint(tmp_path, 3, keep_last=2, keep=(1,))
    _fake_checkpoint(tmp_path, 4, keep_last=2, keep=(1,))
    assert ckpt.complete_steps(tmp_path) == [1, 3, 4]  # 2 pruned, the best (1) kept
    _fake_checkpoint(tmp_path, 5, keep_last=2, keep=(4,))  # a newer best: 1 may go now
    assert ckpt.complete_steps(tmp_path) == [4, 5]


def test_export_best_and_latest(run, tmp_path):
    from brainomni.cli import main
    from brainomni.train import checkpoint as ckpt

    r = tmp_path / "run"
    shutil.copytree(run, r)
    steps = ckpt.complete_steps(r)
    assert len(steps) >= 2, steps  # the previous best is kept until the next prune
    # make an earlier complete checkpoint the best: --best must follow best.json, the
    # default must stay the latest (the one a resume continues from)
    best = json.loads((r / "best.json").read_text())
    best["step"] = steps[0]
    (r / "best.json").write_text(json.dumps(best))
    assert main(["export", str(r), str(tmp_path / "best"), "--best"]) == 0
    assert main(["export", str(r), str(tmp_path / "latest")]) == 0
    for name, step in (("best", steps[0]), ("latest", steps[-1])):
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        assert cfg["step"] == step
        src = ckpt.step_dir(r, step) / "model.safetensors"
        assert cfg["weights_sha256"] == _sha(src) == _sha(tmp_path / name / "model.safetensors")
    assert json.loads((tmp_path / "best" / "config.json").read_text())["best"]["step"] == steps[0]


@pytest.mark.parametrize(
    "record, words",
    [
        (None, "records no best checkpoint"),
        ({"step": 999, "metric": "val/loss", "value": 1.0}, "not a complete checkpoint"),
        ({"step": "../../etc", "metric": "val/loss", "value": 1.0}, "not a best-checkpoint"),
        ({"step": 1, "metric": "val/loss", "value": float("nan")}, "not a best-checkpoint"),
        ([1, 2], "not a best-checkpoint"),
    ],
    ids=["missing", "pruned", "path", "nan", "not-object"],
)
def test_export_best_refuses_what_it_cannot_trust(run, tmp_path, record, words):
    from brainomni.cli import main

    r = tmp_path / "run"
    shutil.copytree(run, r)
    if record is None:
        (r / "best.json").unlink()
    else:
        (r / "best.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit) as exc:
        main(["export", str(r), str(tmp_path / "out"), "--best"])
    assert words in str(exc.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_export_best_takes_a_run_folder(run, tmp_path):
    from brainomni.cli import main
    from brainomni.train import checkpoint as ckpt

    d = ckpt.latest(run)
    with pytest.raises(SystemExit, match="--best takes the run folder"):
        main(["export", str(d), str(tmp_path / "out"), "--best"])


def test_resume_keeps_or_rebuilds_the_best_record(run, tmp_path):
    """A resume at step 3 whose best.json names step 4 (its checkpoint deleted) takes the
    best remaining checkpoint from the log; at the end best.json again names the argmin of
    the logged validation losses."""
    import os

    import torch.distributed as dist

    from brainomni.train import checkpoint as ckpt
    from brainomni.train.config import TrainConfig
    from brainomni.train.trainer import Trainer
    from tests.train.best_run import _free_port, val_records

    r = tmp_path / "run"
    shutil.copytree(run, r)
    assert ckpt.read_best(r)["step"] == 4 and ckpt.complete_steps(r)[-2:] == [3, 4]
    shutil.rmtree(ckpt.step_dir(r, 4))
    cfg = TrainConfig.from_dict(json.loads((r / "config.json").read_text())["train"])
    mp = pytest.MonkeyPatch()
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for k, v in {**env, "MASTER_PORT": str(_free_port())}.items():
        mp.setenv(k, v)
    try:
        tr = Trainer(cfg, r, resume=True)
        assert tr.step == 3 and tr.best is not None and tr.best["step"] == 3
        assert ckpt.read_best(r)["step"] == 3  # rewritten at once: nothing names a gone step
        tr.train()
    finally:
        if dist.is_initialized():  # DeepSpeed's too: it caches groups of the old one
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()
        mp.undo()
    losses = {s: rec["val/loss"] for s, rec in val_records(r).items()}
    assert sorted(losses) == [1, 2, 3, 4]
    lowest = min(losses.values())
    best = ckpt.read_best(r)
    assert losses[best["step"]] == lowest == best["value"]
    assert (ckpt.step_dir(r, best["step"]) / "meta.json").is_file()
    assert os.path.exists(ckpt.best_dir(r))

"""Checkpoints are data, never code (issue #15, defects 1 and 12).

One tiny tokenizer run (1 rank, gloo, ZeRO-2, 3 steps, checkpoints at steps 2 and 3) is
trained in this process once; every test works on a copy. A tampered DeepSpeed file carries
a pickle whose load would run ``os.system("touch MARKER")``: it must be refused on resume,
on universal conversion and on export, and the marker must never appear, whether
``meta.json`` still holds the old hash or was rewritten to match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
from pathlib import Path

import pytest
import torch

from tests.conftest import MEEG_DIR, SKIP_REASON
from tests.train.pretrain_run import CHEAP_STEPS

pytest.importorskip("deepspeed", reason="pretraining needs DeepSpeed")

MODEL_STATES = "ds/mp_rank_00_model_states.pt"
OPTIM_STATES = "ds/zero_pp_rank_0_mp_rank_00_optim_states.pt"  # this rank's ZeRO partition
PICKLED = [MODEL_STATES, OPTIM_STATES, "rng-00000.pt"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config, run folder) of a finished 3-step run; the process group lives for the module."""
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    import torch.distributed as dist

    from brainomni.train.config import apply_overrides, get_recipe
    from brainomni.train.trainer import Trainer
    from tests.loader.data import packed_manifest

    mp = pytest.MonkeyPatch()
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for k, v in {**env, "MASTER_PORT": str(_free_port())}.items():
        mp.setenv(k, v)
    m = packed_manifest("tokenizer-10s")
    sets = [f"data.manifest={json.dumps(str(m))}", "max_steps=3", "ckpt_every=2", "val_every=2"]
    sets.append("plots=false")  # what is checked is the checkpoint (tok_run checks the plots)
    sets += CHEAP_STEPS
    cfg = apply_overrides(get_recipe("cpu-test-tokenizer"), [*sets, "log_samples=true"])
    out = tmp_path_factory.mktemp("secure") / "run"
    Trainer(cfg, out).train()
    yield cfg, out
    if dist.is_initialized():  # DeepSpeed's too: it caches groups of the old one
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()
    mp.undo()


def _copy(run, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the run folder and its latest checkpoint (step 3)."""
    out = tmp_path / "run"
    shutil.copytree(run[1], out)
    return out, out / "checkpoints" / "step-00000003"


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _tamper(d: Path, rel: str, marker: Path, *, rehash: bool) -> None:
    """Add the payload to ``d/rel`` (everything else kept); with ``rehash`` the attacker also
    rewrites meta.json's entry so that the hash matches."""
    from brainomni.train import checkpoint as ckpt

    p = d / rel
    with torch.serialization.safe_globals(ckpt.DS_SAFE_GLOBALS):
        sd = torch.load(p, weights_only=True)
    sd["payload"] = _Payload(marker)
    torch.save(sd, p)
    assert "posix.system" in torch.serialization.get_unsafe_globals_in_checkpoint(str(p))
    if rehash:
        meta = json.loads((d / "meta.json").read_text())
        meta["files"][rel] = {"sha256": _sha(p), "bytes": p.stat().st_size}
        (d / "meta.json").write_text(json.dumps(meta))


def test_meta_json_records_every_file_hash(run, tmp_path):
    from brainomni.train.export import export

    d = run[1] / "checkpoints" / "step-00000003"
    meta = json.loads((d / "meta.json").read_text())
    files = {
        p.relative_to(d).as_posix(): {"sha256": _sha(p), "bytes": p.stat().st_size}
        for p in d.rglob("*")
        if p.is_file() and p.name != "meta.json"
    }
    assert meta["files"] == files and meta["format"] == "brainomni.checkpoint/2"
    assert {MODEL_STATES, OPTIM_STATES, "model.safetensors", "loader-00000.json"} <= set(files)
    exp = export(run[1], tmp_path / "export")  # a verified checkpoint exports
    cfg = json.loads((exp / "config.json").read_text())
    assert cfg["step"] == 3 and cfg["weights_sha256"] == files["model.safetensors"]["sha256"]


@pytest.mark.parametrize("rehash", [False, True], ids=["stale-hash", "meta-rewritten"])
@pytest.mark.parametrize("rel", PICKLED)
def test_tampered_file_refused_on_resume_conversion_and_export(run, tmp_path, rel, rehash):
    from brainomni.cli import main
    from brainomni.train import checkpoint as ckpt
    from brainomni.train.trainer import Trainer

    out, d = _copy(run, tmp_path)
    marker = tmp_path / "PWNED"
    _tamper(d, rel, marker, rehash=rehash)
    why = "posix.system" if rehash else "changed after the checkpoint was written"
    with pytest.raises(ckpt.CheckpointError, match=why) as e:
        Trainer(run[0], out, resume=True)
    assert str(d / rel) in str(e.value)
    with pytest.raises(ckpt.CheckpointError, match=why):
        ckpt.to_universal(d)
    assert not (d / "ds-universal").exists()
    with pytest.raises(SystemExit, match="checkpoint refused") as e:
        main(["export", str(out), str(tmp_path / "export")])
    assert str(d / rel) in str(e.value) and not (tmp_path / "export" / "config.json").exists()
    assert not marker.exists()


@pytest.mark.parametrize("rel", [MODEL_STATES, OPTIM_STATES])
def test_weights_only_stops_a_payload_the_scan_missed(run, tmp_path, monkeypatch, rel):
    """With the static scan switched off, DeepSpeed's own torch.load (weights_only turned off there) of the
    payload (engine.load_checkpoint, ds_to_universal) still runs nothing."""
    from brainomni.train import checkpoint as ckpt
    from brainomni.train import integrity
    from brainomni.train.trainer import Trainer

    out, d = _copy(run, tmp_path)
    marker = tmp_path / "PWNED"
    _tamper(d, rel, marker, rehash=True)
    monkeypatch.setattr(integrity, "scan_pickles", lambda *a: None)
    force = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    with pytest.raises(ckpt.CheckpointError, match="not plain data.*posix.system"):
        ckpt.to_universal(d)
    assert not marker.exists()
    with pytest.raises(ckpt.CheckpointError, match="not plain data.*posix.system"):
        Trainer(run[0], out, resume=True)
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == force  # restored afterwards


def test_unrecorded_or_invalid_entries_refused(run, tmp_path):
    from brainomni.train import checkpoint as ckpt

    _, d = _copy(run, tmp_path)
    ckpt.verify(d)
    planted = d / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"  # DeepSpeed globs these
    shutil.copy(d / OPTIM_STATES, planted)
    with pytest.raises(ckpt.CheckpointError, match="not recorded.*zero_pp_rank_1"):
        ckpt.verify(d)
    planted.unlink()
    meta = json.loads((d / "meta.json").read_text())
    good = meta["files"][MODEL_STATES]
    for bad in (
        {"../meta.json": good},
        {"/etc/passwd": good},
        {MODEL_STATES: {"sha256": "x" * 64, "bytes": good["bytes"]}},
        {MODEL_STATES: {"sha256": good["sha256"], "bytes": "12"}},
    ):
        (d / "meta.json").write_text(json.dumps({**meta, "files": {**meta["files"], **bad}}))
        with pytest.raises(ckpt.CheckpointError, match="invalid file entry"):
            ckpt.verify(d)
    (d / "meta.json").write_text(json.dumps({**meta, "world": "2"}))
    with pytest.raises(ckpt.CheckpointError, match="'world' is '2'"):
        ckpt.verify(d)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="meta.json is not a readable"):
        ckpt.verify(d)
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "model.json").unlink()
    (d / "model.json").symlink_to(run[1] / "checkpoints" / "step-00000003" / "model.json")
    with pytest.raises(ckpt.CheckpointError, match="model.json is recorded .* not a regular"):
        ckpt.verify(d)


def test_checkpoint_without_hashes_needs_trust_unhashed(run, tmp_path):
    from brainomni.train import checkpoint as ckpt
    from brainomni.train.trainer import Trainer

    out, d = _copy(run, tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    del meta["files"], meta["format"]
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="no file hashes.*--trust-unhashed"):
        Trainer(run[0], out, resume=True)
    tr = Trainer(run[0], out, resume=True, trust_unhashed=True)
    assert tr.resumed_from == d and tr.step == 3 and tr.engine.global_steps == 3
    # trusted or not, a payload is still refused and never runs
    marker = tmp_path / "PWNED"
    _tamper(d, OPTIM_STATES, marker, rehash=False)
    with pytest.raises(ckpt.CheckpointError, match="posix.system"):
        Trainer(run[0], out, resume=True, trust_unhashed=True)
    assert not marker.exists()


def test_universal_conversion_is_recorded_and_checked_before_reuse(run, tmp_path):
    from brainomni.train import checkpoint as ckpt

    _, d = _copy(run, tmp_path)
    u = ckpt.to_universal(d)
    rec = json.loads((d / "ds-universal.json").read_text())["files"]
    on_disk = {p.relative_to(d).as_posix(): _sha(p) for p in u.rglob("*") if p.is_file()}
    assert {k: v["sha256"] for k, v in rec.items()} == on_disk
    assert "ds-universal/zero/optimizer_state.pt" in on_disk
    ckpt.verify(d)  # the universal form is not part of meta.json's record
    # a payload planted into the universal form (hash record rewritten too) is never loaded:
    # refused by the scan, converted again from the verified ds/
    marker = tmp_path / "PWNED"
    _tamper(d, "ds-universal/zero/optimizer_state.pt", marker, rehash=False)
    p = d / "ds-universal/zero/optimizer_state.pt"
    rec["ds-universal/zero/optimizer_state.pt"] = {"sha256": _sha(p), "bytes": p.stat().st_size}
    (d / "ds-universal.json").write_text(json.dumps({"files": rec}))
    with pytest.raises(ckpt.CheckpointError, match="posix.system"):
        ckpt.verify_universal(d)
    ckpt.to_universal(d)
    ckpt.verify_universal(d)
    assert _sha(p) == on_disk["ds-universal/zero/optimizer_state.pt"]
    assert not marker.exists()


def _lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_resume_logs_every_step_once(run, tmp_path):
    """The run reached step 3; its step-3 checkpoint is lost, so the resume starts at step 2
    and redoes step 3: metrics.jsonl and the samples log hold each step once."""
    from brainomni.train.trainer import Trainer

    out, d = _copy(run, tmp_path)
    shutil.rmtree(d)
    before = (out / "metrics.jsonl").read_text().splitlines()
    recs = _lines(out / "metrics.jsonl")
    assert {(r["kind"], r["step"]) for r in recs} >= {("train", 3), ("val", 3), ("loader", 3)}
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "st')  # a record torn by a kill
    Trainer(run[0], out, resume=True).train()
    after = _lines(out / "metrics.jsonl")
    keys = [(r["kind"], r["step"]) for r in after]
    assert len(keys) == len(set(keys)) and {k for k in keys} == {
        (r["kind"], r["step"]) for r in recs
    }
    n_kept = sum(r["step"] <= 2 for r in recs)
    assert (out / "metrics.jsonl").read_text().splitlines()[:n_kept] == before[:n_kept]
    old = {(r["kind"], r["step"]): r for r in recs}
    new = {(r["kind"], r["step"]): r for r in after}
    assert new[("train", 3)]["loss"] == pytest.approx(old[("train", 3)]["loss"], rel=1e-6)
    steps = [r["step"] for r in _lines(out / "samples-00000.jsonl")]
    assert steps == [1, 2, 3]
    assert not list(out.glob(".*.tmp"))


def test_truncate_jsonl_keeps_foreign_lines_and_drops_a_torn_tail(tmp_path):
    from brainomni.train.logs import truncate_jsonl

    p = tmp_path / "m.jsonl"
    rows = [{"step": 1}, {"step": 2, "kind": "val"}, {"step": 3}, {"note": "no step"}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + "not json\n"
    p.write_text(text + '{"step": 4')
    assert truncate_jsonl(p, 2) == 1
    assert p.read_text() == text.replace(json.dumps({"step": 3}) + "\n", "")
    assert truncate_jsonl(p, 2) == 0 and truncate_jsonl(tmp_path / "absent.jsonl", 0) == 0

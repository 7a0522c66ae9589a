"""Step-N checkpoints: DeepSpeed state, every rank's loader state and RNG states, and a
consolidated fp32 model. A checkpoint exists only once its ``meta.json`` is written (last,
by rank 0, after every rank has finished writing).

Layout::

    OUT/checkpoints/step-00000040/
        ds/                      DeepSpeed engine state (model, optimizer, scheduler)
        ds-universal/            the same as a DeepSpeed universal checkpoint: made by the
                                 first resume with another number of ranks (ZeRO 1-3)
        loader-00000.json        loader state of rank 0 (one per rank)
        rng-00000.pt             torch / python / CUDA RNG states of rank 0
        model.safetensors        fp32 weights of the whole model (rank 0)
        model.json               model kind and config (see :mod:`.export`)
        meta.json                step, samples, world size, config: written last

ZeRO partitions the optimizer state (and under ZeRO-3 the weights) per rank, so ``ds/`` only
loads into as many ranks as wrote it. :func:`to_universal` rewrites it once with DeepSpeed's
``ds_to_universal`` into one file per parameter and state (``exp_avg``, ``exp_avg_sq``,
``fp32``, ``step``), which DeepSpeed loads into any number of ranks
(``"checkpoint": {"load_universal": true}``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

META = "meta.json"
UNIVERSAL = "ds-universal"  # tag of the universal form of ``ds/``
_STEP = re.compile(r"^step-(\d+)$")


def step_dir(out: str | Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step-{step:08d}"


def complete_steps(out: str | Path) -> list[int]:
    """Steps whose checkpoint is complete (has its metadata file), ascending."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        m = _STEP.match(p.name)
        if m and (p / META).is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest(out: str | Path) -> Path | None:
    steps = complete_steps(out)
    return step_dir(out, steps[-1]) if steps else None


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=1))
    os.replace(tmp, path)


def save_rank_files(d: Path, rank: int, loader_state: dict[str, Any]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / f"loader-{rank:05d}.json", loader_state)
    torch.save(rng_state(), d / f"rng-{rank:05d}.pt")


def load_rank_files(d: Path, rank: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every rank's loader state (sorted by rank) and this rank's RNG state (None when the
    saved run had fewer ranks)."""
    loaders = [json.loads(p.read_text()) for p in sorted(d.glob("loader-*.json"))]
    rng_path = d / f"rng-{rank:05d}.pt"
    rng = torch.load(rng_path, weights_only=True) if rng_path.exists() else None
    return loaders, rng


def finish(d: Path, meta: dict[str, Any], keep_last: int) -> None:
    """Rank 0, after a barrier: write the marker, then prune older complete checkpoints."""
    write_json(d / META, meta)
    out = d.parent.parent
    steps = complete_steps(out)
    for s in steps[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(step_dir(out, s), ignore_errors=True)
    log.info("checkpoint %s complete", d)


def save_model(d: Path, state: dict[str, torch.Tensor], model_json: dict[str, Any]) -> None:
    """fp32 safetensors of ``state`` plus ``model.json`` (rank 0)."""
    from safetensors.torch import save_file

    tensors = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
        for k, v in state.items()
    }
    tmp = d / ".model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, d / "model.safetensors")
    write_json(d / "model.json", model_json)


def to_universal(d: Path) -> Path:
    """``d/ds`` as a DeepSpeed universal checkpoint ``d/ds-universal`` (rank 0 only).

    Converted once with DeepSpeed's ``ds_to_universal`` (in this process, one worker: no
    process pool inside a training rank) into a temporary folder that is renamed when
    complete, so an existing ``ds-universal`` is always whole and is reused. Its console
    output goes to the debug log.
    """
    out = d / UNIVERSAL
    if out.is_dir():
        return out
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    tmp = d / f".{UNIVERSAL}.tmp"  # the converter also writes a latest_universal beside it
    shutil.rmtree(tmp, ignore_errors=True)
    args = argparse.Namespace(
        input_folder=str(d / "ds"),
        output_folder=str(tmp / UNIVERSAL),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # no Megatron-style UNIVERSAL_CHECKPOINT_INFO in ours
    )
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            ds_to_universal(args)
        os.replace(tmp / UNIVERSAL, out)
    finally:
        log.debug("ds_to_universal %s:\n%s", d, buf.getvalue())
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s to a universal checkpoint", d / "ds")
    return out

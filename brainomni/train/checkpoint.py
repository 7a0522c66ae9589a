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
        meta.json                step, samples, world size, the sha256 and size of every
                                 other file: written last (the commit marker)
        ds-universal.json        sha256 of every file of ds-universal/ (after a conversion)

ZeRO partitions the optimizer state (and under ZeRO-3 the weights) per rank, so ``ds/`` only
loads into as many ranks as wrote it. :func:`to_universal` rewrites it once with DeepSpeed's
``ds_to_universal`` into one file per parameter and state (``exp_avg``, ``exp_avg_sq``,
``fp32``, ``step``), which DeepSpeed loads into any number of ranks
(``"checkpoint": {"load_universal": true}``).

What is checked before a checkpoint is used (hashes, pickles, ``weights_only`` loads) is
in :mod:`.integrity`; its names are re-exported here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..io.commit import atomic_write_bytes, move_into, staged_path
from .integrity import (  # noqa: F401 - re-exported: callers use checkpoint.<name>
    FORMAT,
    MAX_META_BYTES,
    MAX_PICKLE_BYTES,
    META,
    UNIVERSAL,
    UNIVERSAL_META,
    CheckpointError,
    _check_table,
    _ds_safe_globals,
    _listed,
    _read_json,
    file_sha256,
    file_table,
    scan_pickles,
    verify,
    weights_only_loads,
)

log = logging.getLogger(__name__)

_STEP = re.compile(r"^step-(\d+)$")


def __getattr__(name: str) -> Any:  # DS_SAFE_GLOBALS imports DeepSpeed on first use only
    if name == "DS_SAFE_GLOBALS":
        return _ds_safe_globals()
    raise AttributeError(name)


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
    atomic_write_bytes(str(path), json.dumps(obj, sort_keys=True, indent=1).encode())


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


def finish(d: Path, meta: dict[str, Any], keep_last: int, keep: tuple[int, ...] = ()) -> None:
    """Rank 0, after a barrier: record every file's sha256, write the marker, then prune
    older complete checkpoints (except the steps in ``keep``: the best checkpoint)."""
    write_json(d / META, {**meta, "format": FORMAT, "files": file_table(d)})
    out = d.parent.parent
    steps = complete_steps(out)
    for s in steps[:-keep_last] if keep_last > 0 else []:
        if s not in keep:
            shutil.rmtree(step_dir(out, s), ignore_errors=True)
    log.info("checkpoint %s complete", d)


# --------------------------------------------------------------------------- best checkpoint

BEST = "best.json"  # OUT/best.json: the step whose validation loss is the lowest so far


def write_best(out: str | Path, record: dict[str, Any]) -> None:
    """Rank 0: ``OUT/best.json`` (atomic), written once that step's checkpoint is complete."""
    write_json(Path(out) / BEST, record)


def read_best(out: str | Path) -> dict[str, Any] | None:
    """``OUT/best.json`` checked (a step count, a finite value, a metric name), or None when
    the run has none. A record that is not one raises :class:`CheckpointError` naming it;
    the checkpoint it names is not checked here (see :func:`best_dir`)."""
    p = Path(out) / BEST
    if not p.exists():
        return None
    rec = _read_json(p, "best-checkpoint record")
    step, value, metric = rec.get("step"), rec.get("value"), rec.get("metric")
    ok = (
        type(step) is int
        and step >= 0
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
        and isinstance(metric, str)
    )
    if not ok:
        raise CheckpointError(
            f"{p} is not a best-checkpoint record (step {step!r}, value {value!r}, metric "
            f"{metric!r}): delete it (the next validation writes a new one) or export a step "
            f"folder instead"
        )
    return rec


def best_dir(out: str | Path) -> Path:
    """The complete checkpoint ``OUT/best.json`` names; :class:`CheckpointError` (saying
    what to do) when the run records none or it is gone. Only the step number is taken from
    the record: the folder is always ``OUT/checkpoints/step-N``."""
    rec = read_best(out)
    if rec is None:
        raise CheckpointError(
            f"{out} records no best checkpoint ({Path(out) / BEST} is missing: the run never "
            f"validated, or was written by an older brainomni); export the latest checkpoint "
            f"(without --best) or a step folder"
        )
    d = step_dir(out, rec["step"])
    if not (d / META).is_file():
        raise CheckpointError(
            f"{Path(out) / BEST} names step {rec['step']}, but {d} is not a complete "
            f"checkpoint (deleted?): export another step folder"
        )
    return d


def save_model(d: Path, state: dict[str, torch.Tensor], model_json: dict[str, Any]) -> None:
    """fp32 safetensors of ``state`` plus ``model.json`` (rank 0)."""
    from safetensors.torch import save_file

    tensors = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
        for k, v in state.items()
    }
    with staged_path(d / "model.safetensors") as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    write_json(d / "model.json", model_json)


def verify_universal(d: Path) -> None:
    """``d/ds-universal`` is what :func:`to_universal` wrote (``ds-universal.json``) and
    plain data; raises :class:`CheckpointError` otherwise."""
    src = d / UNIVERSAL_META
    table = _read_json(src, "universal checkpoint record").get("files")
    _check_table(d, table, src, UNIVERSAL)
    scan_pickles(d, sorted(table))


def to_universal(d: Path, *, trust_unhashed: bool = False) -> Path:
    """``d/ds`` as a DeepSpeed universal checkpoint ``d/ds-universal`` (rank 0 only).

    ``d`` is verified first (:func:`verify`) and the conversion runs inside
    :func:`weights_only_loads`. Converted once with DeepSpeed's ``ds_to_universal`` (in this
    process, one worker: no process pool inside a training rank) into a temporary folder
    that is renamed when complete; ``ds-universal.json`` (its files' sha256) is written
    after it, and an existing ``ds-universal`` is reused only when it matches that record
    (otherwise it is converted again). Its console output goes to the debug log.
    """
    verify(d, trust_unhashed=trust_unhashed)
    out = d / UNIVERSAL
    if out.is_dir():
        try:
            verify_universal(d)
            return out
        except CheckpointError as exc:
            log.warning("%s is not the recorded conversion (%s): converting again", out, exc)
            (d / UNIVERSAL_META).unlink(missing_ok=True)
            shutil.rmtree(out)
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
        with (
            weights_only_loads(d / "ds"),
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
        ):
            ds_to_universal(args)
        move_into([tmp / UNIVERSAL], d)  # onto d / UNIVERSAL (removed above)
        write_json(d / UNIVERSAL_META, {"format": FORMAT, "files": file_table(d, UNIVERSAL)})
    finally:
        log.debug("ds_to_universal %s:\n%s", d, buf.getvalue())
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s to a universal checkpoint", d / "ds")
    return out

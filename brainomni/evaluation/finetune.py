"""Fine-tuning BrainOmni on a labelled set under cross-subject folds (spec §5.2).

One *unit* is (model init, LR, seed, fold): build the classifier (BrainOmni's ``encode`` ->
mean over time -> flatten (S x lm_dim) -> Dropout -> Linear(lm_dim) -> SELU ->
Linear(n_classes); the tokenizer is always frozen, the backbone too with ``frozen``), train
it under DeepSpeed with the trainer's configuration builder
(:func:`brainomni.train.optim.deepspeed_config`: AdamW, WarmupCosineLR, ZeRO 0-2) with the
head's LR ten times the backbone's, label smoothing, and early stopping on validation
balanced accuracy; the checkpoint (epoch) with the best validation balanced accuracy is
evaluated on the test subjects.

A run is every unit of a grid (LRs x seeds x folds). It is resumable: a unit exists once its
``result.json`` is written (last, atomically); a relaunch skips finished units. The LR is
chosen by mean *validation* balanced accuracy over seeds and folds, never by test (the
official ``metrics_stat.py`` selects by test; spec §5.2 caveat).

One process per device under ``torchrun`` or the ``deepspeed`` launcher, or a single
process: every rank trains on its share of each global batch (gradient accumulation makes
micro x world x accum the recipe's global batch) and evaluates a slice of the windows.
bf16 autocast on CUDA, fp32 on CPU.

Here: the grid (a run of units, resumable, and the LR selection). The classifier and its
backbone are in :mod:`.classifier`, one unit in :mod:`.unit`, the configuration in
:mod:`.protocols`; their names are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from .classifier import (  # noqa: F401 - re-exported for callers of this module
    Backbone,
    Classifier,
    _check_export,
    build_backbone,
    weights_sha256,
)
from .data import LabelledSet
from .folds import folds_for

# The configuration (FinetuneConfig, the protocols and key=value overrides) lives in
# protocols.py; re-exported here for callers of this module.
from .protocols import (  # noqa: F401
    RECIPES,
    FinetuneConfig,
    _json_hash,
    apply_overrides,
    cpu_test_finetune,
    get_recipe,
    paper_finetune,
    paper_frozen,
    paper_v1,
)
from .unit import (  # noqa: F401 - re-exported for callers of this module
    Dist,
    _engine,
    _inputs,
    collate,
    predict,
    setup_distributed,
    train_unit,
)

log = logging.getLogger(__name__)

RESULT, PREDICTIONS = "result.json", "predictions.npz"
RUN_FORMAT = "brainomni.finetune/1"


def set_hash(windows: LabelledSet) -> str:
    """Identity of a labelled set: its classes, meta and every window's recording, onset,
    subject, label and shape (not the signal bytes; the meta names the data's own hashes)."""
    h = hashlib.sha256()
    h.update(json.dumps([windows.classes, windows.meta], sort_keys=True, default=str).encode())
    for w in windows.windows:
        h.update(
            f"{w.recording_id}|{w.onset_s!r}|{w.subject}|{w.label}|{w.signal.shape}\n".encode()
        )
    return h.hexdigest()


# --------------------------------------------------------------------------- a grid run


def unit_dir(out: Path, model: str, lr: float, seed: int, fold: int) -> Path:
    return out / "units" / model / f"lr-{lr:.3g}" / f"seed-{seed:05d}" / f"fold-{fold:02d}"


def _write_json(path: Path, obj: Any) -> None:
    from ..io.commit import atomic_write_bytes

    # the completion marker appears whole or not at all
    atomic_write_bytes(
        str(path), json.dumps(obj, indent=1, sort_keys=True, default=_jsonable).encode()
    )


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple | np.ndarray):
        return list(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


def read_unit(d: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """A finished unit's record, or None. A record from another run identity (config, data,
    weights) is refused: the output folder belongs to another run."""
    p = d / RESULT
    if not p.exists():
        return None
    if p.stat().st_size > 64 << 20:
        raise ValueError(f"{p} is larger than 64 MiB: not a unit result; delete the folder")
    rec = json.loads(p.read_text())
    if rec.get("identity") != identity:
        raise ValueError(
            f"{p} was written by another run (config, data set or weights differ); use a new "
            "--out folder or delete this one"
        )
    return rec


def load_predictions(d: Path) -> dict[str, np.ndarray]:
    with np.load(d / PREDICTIONS, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def run_grid(
    windows: LabelledSet,
    out: str | Path,
    cfg: FinetuneConfig,
    spec: Backbone,
    *,
    ctx: Dist | None = None,
    trainer: Callable[..., tuple[dict[str, Any], dict[str, np.ndarray]]] = train_unit,
) -> dict[str, Any]:
    """Every (LR, seed, fold) unit of ``spec`` into ``out/units/<model>/...`` (finished ones
    are skipped), then the LR chosen on validation. Returns the model's entry for the report:
    ``{"model", "identity", "selection", "units" (of the chosen LR), "all_units"}``."""
    out = Path(out)
    check_finite(windows)
    ctx = ctx or setup_distributed()
    identity = {
        "format": RUN_FORMAT,
        "model": spec.label,
        "init": spec.init,
        "weights_sha256": weights_sha256(spec),
        "set_hash": set_hash(windows),
        "config": cfg.to_dict(),
    }
    identity = json.loads(json.dumps(identity, default=_jsonable))  # as read back from disk
    units: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        for fold in folds_for(windows, k=cfg.folds, seed=seed):
            for lr in cfg.lrs:
                d = unit_dir(out, spec.label, lr, seed, fold.index)
                # rank 0 decides (ranks need not share a filesystem), every rank follows
                got: list[Any] = [read_unit(d, identity) if ctx.rank == 0 else None]
                if ctx.world > 1:
                    dist.broadcast_object_list(got, src=0)
                rec = got[0]
                if rec is None:
                    rec, preds = trainer(windows, fold, lr, seed, cfg, spec, ctx)
                    rec = {**rec, "identity": identity}
                    if ctx.rank == 0:
                        d.mkdir(parents=True, exist_ok=True)
                        np.savez(d / PREDICTIONS, **{k: np.asarray(v) for k, v in preds.items()})
                        _write_json(d / RESULT, rec)  # last: the unit's completion marker
                    ctx.barrier()
                else:
                    log.info("%s: finished before, skipped", d)
                rec["dir"] = str(d)
                units.append(rec)
    lr, table = select_lr(units)
    return {
        "model": spec.label,
        "identity": identity,
        "selection": {"by": "mean validation balanced accuracy", "lr": lr, "table": table},
        "units": [u for u in units if u["lr"] == lr],
        "all_units": units,
    }


def check_finite(windows: LabelledSet) -> None:
    """Refuse a set with non-finite samples or positions (they would turn every loss NaN)."""
    bad = [
        w.recording_id
        for w in windows.windows
        if not (np.isfinite(w.signal).all() and np.isfinite(w.sensors).all())
    ]
    if bad:
        raise ValueError(
            f"{len(bad)} windows hold NaN or infinite values (recordings {sorted(set(bad))[:5]}); "
            "rebuild the labelled set (its windows must pass the pretraining window checks)"
        )


def select_lr(units: Sequence[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """The LR with the best mean *validation* balanced accuracy over seeds and folds (ties: the
    smaller LR). Test results are not read."""
    by: dict[float, list[float]] = {}
    for u in units:
        by.setdefault(float(u["lr"]), []).append(float(u["val"]["balanced_accuracy"]))
    table = {f"{lr:.3g}": float(np.mean(v)) for lr, v in sorted(by.items())}
    best = max(sorted(by), key=lambda lr: (np.mean(by[lr]), -lr))
    return best, table

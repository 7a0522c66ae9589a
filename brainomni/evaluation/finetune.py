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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data import LabelledSet, Window
from .folds import Fold, folds_for
from .metrics import classification_metrics

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

log = logging.getLogger(__name__)

RESULT, PREDICTIONS = "result.json", "predictions.npz"
RUN_FORMAT = "brainomni.finetune/1"


# --------------------------------------------------------------------------- model


class Classifier(nn.Module):
    """BrainOmni backbone + the official head (spec §5.2)."""

    def __init__(
        self, backbone: nn.Module, n_classes: int, *, dropout: float = 0.1, frozen: bool = False
    ) -> None:
        super().__init__()
        self.backbone, self.frozen = backbone, frozen
        S, E = backbone.tokenizer.config.n_neuro, backbone.config.lm_dim
        self.head = nn.Sequential(
            nn.Flatten(1),
            nn.Dropout(dropout),
            nn.Linear(S * E, E),
            nn.SELU(),
            nn.Linear(E, n_classes),
        )
        # PyTorch's default (fan-in) initialisation: with the backbone's std-0.02 init, two
        # small layers on L2-normalised features start on a plateau (tiny logits and gradients)
        # not used by encode(): no gradient would ever reach them (ZeRO needs every trainable
        # parameter to get one)
        backbone.mask_token.requires_grad_(False)
        backbone.predict_head.requires_grad_(False)
        backbone.blocks[-1].requires_grad_(False)  # encode() drops the last block
        if frozen:
            backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def features(self, x, pos, sensor_type, mask=None) -> torch.Tensor:
        """(B, S, lm_dim): the backbone's features averaged over time."""
        ctx = torch.no_grad() if self.frozen else nullcontext()
        with ctx:
            return self.backbone.encode(x, pos, sensor_type, mask).mean(2)

    def forward(self, x, pos, sensor_type, mask=None) -> torch.Tensor:
        """Logits (B, n_classes) of signals ``x`` (B, C, T) at ``pos`` (B, C, 6)."""
        return self.head(self.features(x, pos, sensor_type, mask))


@dataclass(frozen=True)
class Backbone:
    """Where a backbone comes from: an export folder and ``init`` ``pretrained`` (its weights)
    or ``random`` (the same architecture and the same frozen tokenizer, BrainOmni re-drawn from
    the unit's seed; with a tokenizer-only export, ``omni`` gives the BrainOmni config)."""

    path: str
    init: str = "pretrained"
    size: str = "tiny"
    omni: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.init not in ("pretrained", "random"):
            raise ValueError(f"init={self.init!r}: use 'pretrained' or 'random'")

    @property
    def label(self) -> str:
        return "brainomni" if self.init == "pretrained" else "random-init"


def _check_export(path: str | Path) -> Path:
    p = Path(path)
    if not (p / "model.safetensors").is_file() or not (p / "config.json").is_file():
        raise ValueError(
            f"{p} is not an exported model (model.safetensors + config.json); make one with "
            "`brainomni export CHECKPOINT OUT`"
        )
    return p


def weights_sha256(spec: Backbone) -> str:
    from brainomni.train.export import file_sha256

    return file_sha256(_check_export(spec.path) / "model.safetensors")


def build_backbone(spec: Backbone, seed: int) -> nn.Module:
    """The backbone of one unit (fp32, on CPU)."""
    from brainomni.models import BrainOmni
    from brainomni.train.export import load_export

    model = load_export(_check_export(spec.path))
    is_omni = hasattr(model, "tokenizer")
    if spec.init == "pretrained":
        if not is_omni:
            raise ValueError(
                f"{spec.path} is a tokenizer export: fine-tune a BrainOmni export, or use "
                "--init random to train BrainOmni from scratch over this tokenizer"
            )
        return model
    tok = model.tokenizer if is_omni else model
    cfg = asdict(model.config) if is_omni else {}
    cfg.update(dict(spec.omni))
    torch.manual_seed(seed)
    return BrainOmni(spec.size, tokenizer=tok, **cfg)


# --------------------------------------------------------------------------- data


def collate(windows: Sequence[Window]) -> dict[str, torch.Tensor]:
    """Pad a batch to its largest channel count: ``x`` (B, C, T) float32, ``pos`` (B, C, 6),
    ``sensor_type`` (B, C) long, ``mask`` (B, C) True on real channels (None if unpadded),
    ``y`` (B,)."""
    B, T = len(windows), windows[0].signal.shape[1]
    C = max(w.signal.shape[0] for w in windows)
    x = np.zeros((B, C, T), np.float32)
    pos = np.zeros((B, C, 6), np.float32)
    st = np.zeros((B, C), np.int64)
    mask = np.zeros((B, C), bool)
    for i, w in enumerate(windows):
        c = w.signal.shape[0]
        x[i, :c], pos[i, :c], st[i, :c], mask[i, :c] = w.signal, w.sensors, w.sensor_type, True
    out = {
        "x": torch.from_numpy(x),
        "pos": torch.from_numpy(pos),
        "sensor_type": torch.from_numpy(st),
        "mask": None if mask.all() else torch.from_numpy(mask),
        "y": torch.as_tensor([w.label for w in windows], dtype=torch.long),
    }
    return out


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


# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device
    deepspeed: Any

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed() -> Dist:
    """Join the launcher's process group (``torchrun``: RANK, WORLD_SIZE, ...), or start a
    single-process one (gloo on CPU)."""
    from brainomni.train.trainer import _import_deepspeed

    deepspeed = _import_deepspeed()
    if not dist.is_initialized():
        for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
            os.environ.setdefault(k, v)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(s.getsockname()[1])
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), device, deepspeed)


# --------------------------------------------------------------------------- one unit


@torch.no_grad()
def predict(
    module: nn.Module, windows: LabelledSet, index: np.ndarray, batch: int, ctx: Dist
) -> np.ndarray:
    """Class probabilities (len(index), n_classes); each rank runs a slice, all get all."""
    was = module.training
    module.eval()
    mine = np.arange(len(index))[ctx.rank :: ctx.world]
    parts = []
    for s in range(0, len(mine), batch):
        b = collate([windows.windows[int(index[j])] for j in mine[s : s + batch]])
        with ctx.autocast():
            logits = module(*_inputs(b, ctx.device))
        parts.append(torch.softmax(logits.float(), -1).cpu().numpy())
    n_cls = len(windows.classes)
    prob = np.concatenate(parts) if parts else np.zeros((0, n_cls), np.float32)
    if ctx.world > 1:
        got: list[Any] = [None] * ctx.world
        dist.all_gather_object(got, (mine, prob))
        full = np.zeros((len(index), n_cls), np.float32)
        for m, p in got:
            full[m] = p
        prob = full
    module.train(was)
    return prob


def _inputs(b: dict[str, Any], device: torch.device) -> tuple:
    mask = b["mask"].to(device) if b["mask"] is not None else None
    return b["x"].to(device), b["pos"].to(device), b["sensor_type"].to(device), mask


def _engine(model: Classifier, cfg: FinetuneConfig, lr: float, seed: int, total: int, ctx: Dist):
    """A DeepSpeed engine built the way pretraining builds one (same config builder, same
    AdamW groups), with the head's groups at ``head_lr_scale`` x the backbone LR."""
    from brainomni.train.config import DataConfig, OptimConfig, TrainConfig
    from brainomni.train.optim import deepspeed_config, param_groups

    tc = TrainConfig(
        kind="omni",
        recipe=cfg.recipe,
        global_batch=cfg.global_batch,
        data=DataConfig(micro_batch=cfg.micro_batch, chunk=cfg.micro_batch, workers=0),
        optim=OptimConfig(
            lr=lr,
            betas=cfg.betas,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            warmup_ratio=cfg.warmup_ratio,
            warmup_min_ratio=cfg.warmup_min_ratio,
            cos_min_ratio=cfg.cos_min_ratio,
            grad_clip=cfg.grad_clip,
        ),
        zero_stage=cfg.zero_stage,
        seed=seed,
    )
    ds_cfg = deepspeed_config(tc, ctx.world, total)
    groups = [
        {**g, "lr": lr} for g in param_groups(model.backbone, cfg.weight_decay) if g["params"]
    ] + [
        {**g, "lr": lr * cfg.head_lr_scale}
        for g in param_groups(model.head, cfg.weight_decay)
        if g["params"]
    ]
    engine, _, _, _ = ctx.deepspeed.initialize(model=model, model_parameters=groups, config=ds_cfg)
    return engine


def train_unit(
    windows: LabelledSet,
    fold: Fold,
    lr: float,
    seed: int,
    cfg: FinetuneConfig,
    spec: Backbone,
    ctx: Dist,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train one (LR, seed, fold) and evaluate its best-validation epoch on the test subjects.

    Returns the unit's record (history, validation and test metrics at the chosen epoch) and
    its validation and test predictions."""
    tr, va, te = fold.indices(windows)
    if len(tr) == 0 or len(va) == 0 or len(te) == 0:
        raise ValueError(
            f"fold {fold.index}: a part without windows (train/val/test {len(tr)}/{len(va)}/{len(te)})"
        )
    torch.manual_seed(seed)
    model = Classifier(
        build_backbone(spec, seed),
        len(windows.classes),
        dropout=cfg.head_dropout,
        frozen=cfg.frozen,
    ).to(ctx.device)
    G = cfg.global_batch
    steps_per_epoch = max(1, len(tr) // G)
    engine = _engine(model, cfg, lr, seed, cfg.epochs * steps_per_epoch, ctx)
    accum = G // (cfg.micro_batch * ctx.world)
    if accum < 1 or G % (cfg.micro_batch * ctx.world):
        raise ValueError(
            f"global_batch={G} is not a multiple of micro_batch {cfg.micro_batch} x world "
            f"{ctx.world}; change global_batch or micro_batch"
        )
    trainable = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
    y_val, y_test = windows.labels[va], windows.labels[te]
    best, best_state, history, bad = -math.inf, None, [], 0
    t_train, n_train, t_eval, n_eval = 0.0, 0, 0.0, 0
    for epoch in range(cfg.epochs):
        order = np.random.default_rng([seed, fold.index, epoch]).permutation(len(tr))
        engine.train()
        t0, loss_sum = time.perf_counter(), 0.0
        for s in range(steps_per_epoch):
            step_idx = tr[order[(s * G + np.arange(G)) % len(tr)]]
            for a in range(accum):
                lo = (a * ctx.world + ctx.rank) * cfg.micro_batch
                b = collate([windows.windows[int(i)] for i in step_idx[lo : lo + cfg.micro_batch]])
                with ctx.autocast():
                    logits = engine(*_inputs(b, ctx.device))
                loss = F.cross_entropy(
                    logits.float(), b["y"].to(ctx.device), label_smoothing=cfg.label_smoothing
                )
                engine.backward(loss)
                engine.step()
                loss_sum += float(loss.detach()) / accum
        t_train += time.perf_counter() - t0
        n_train += steps_per_epoch * G
        t0 = time.perf_counter()
        p_val = predict(engine.module, windows, va, cfg.eval_batch, ctx)
        t_eval += time.perf_counter() - t0
        n_eval += len(va)
        m_val = classification_metrics(y_val, p_val)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / steps_per_epoch, "val": m_val})
        log.info(
            "fold %d seed %d lr %g epoch %d: loss %.4f val BACC %.4f",
            fold.index,
            seed,
            lr,
            epoch + 1,
            loss_sum / steps_per_epoch,
            m_val["balanced_accuracy"],
        )
        if m_val["balanced_accuracy"] > best:  # the first best epoch wins ties
            best, bad = m_val["balanced_accuracy"], 0
            best_state = {n: p.detach().clone() for n, p in trainable}
            best_epoch, best_val, best_pval = epoch + 1, m_val, p_val
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(best_state[n])
    t0 = time.perf_counter()
    p_test = predict(engine.module, windows, te, cfg.eval_batch, ctx)
    t_eval += time.perf_counter() - t0
    n_eval += len(te)
    record = {
        "lr": lr,
        "head_lr": lr * cfg.head_lr_scale,
        "seed": seed,
        "fold": fold.index,
        "subjects": {"train": fold.train, "val": fold.val, "test": fold.test},
        "windows": {"train": int(len(tr)), "val": int(len(va)), "test": int(len(te))},
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "history": history,
        "val": best_val,
        "test": classification_metrics(y_test, p_test),
        "trainable_parameters": sum(p.numel() for _, p in trainable),
        "train_samples_per_s": n_train / max(t_train, 1e-9),
        "eval_windows_per_s": n_eval / max(t_eval, 1e-9),
    }
    preds = {"val_labels": y_val, "val_prob": best_pval, "test_labels": y_test, "test_prob": p_test}
    del engine
    return record, preds


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

"""One fine-tuning unit, (model init, LR, seed, fold): batches, the process group, the
DeepSpeed engine built as pretraining builds one, training with early stopping on validation
balanced accuracy, and predictions (see :mod:`.finetune` for the grid of units)."""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .classifier import Backbone, Classifier, build_backbone
from .data import LabelledSet, Window
from .folds import Fold
from .metrics import classification_metrics
from .protocols import FinetuneConfig

log = logging.getLogger(__name__)


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

"""AdamW parameter groups and the DeepSpeed configuration of a run (spec §4)."""

from __future__ import annotations

from typing import Any

import torch

from .config import TrainConfig

NO_DECAY_NAMES = ("mask_token", "predict_head", "projection", "sensor_embedding_layer", "neuros")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on norms, biases, embeddings of type, the mask token, the
    prediction head and the projection (spec §4)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name or any(k in name for k in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def deepspeed_config(
    cfg: TrainConfig, world: int, total_steps: int, *, load_universal: bool = False
) -> dict[str, Any]:
    """``load_universal``: the engine will load a universal checkpoint (a resume with another
    number of ranks, see :func:`.checkpoint.to_universal`)."""
    o = cfg.optim
    zero: dict[str, Any] = {"stage": cfg.zero_stage, "overlap_comm": False}
    if cfg.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.data.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum(world),
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": o.lr,
                "betas": list(o.betas),
                "eps": o.eps,
                "weight_decay": o.weight_decay,
                "torch_adam": not cfg.offload,
                "adam_w_mode": True,
            },
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": total_steps,
                "warmup_num_steps": max(1, int(o.warmup_ratio * total_steps)),
                "warmup_min_ratio": o.warmup_min_ratio,
                "cos_min_ratio": o.cos_min_ratio,
            },
        },
        "gradient_clipping": o.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": load_universal},
    }

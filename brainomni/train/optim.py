"""AdamW parameter groups and the DeepSpeed configuration of a run (spec §4)."""

from __future__ import annotations

from typing import Any

import torch

from .config import TrainConfig

# The official code's exemptions from weight decay, by parameter name (OpenTSLab/BrainOmni,
# ``get_parameters_groups`` of each model): a name containing "norm" (RMSNorm gains), plus
#   - BrainTokenizer: exactly ``sensor_embed.sensor_embedding_layer.weight`` (the type
#     embedding); parameters under ``quantizer`` go to a separate codebook group without
#     decay (empty with EMA codebooks, which are buffers);
#   - BrainOmni: a name containing ``predict_head``, and exactly ``projection.weight``,
#     ``projection.bias`` (absent for tiny, where the projection is the identity) and
#     ``mask_token``; the frozen tokenizer is not optimised at all.
# Everything else decays, biases, LSTM biases and the source queries (``encoder.neuros``)
# included: the released checkpoints were trained so.
TOKENIZER_NO_DECAY = ("sensor_embed.sensor_embedding_layer.weight",)
OMNI_NO_DECAY = ("projection.weight", "projection.bias", "mask_token")


def no_decay(name: str, *, omni: bool) -> bool:
    """Whether the official grouping exempts parameter ``name`` from weight decay."""
    if "norm" in name:
        return True
    if omni:
        return "predict_head" in name or name in OMNI_NO_DECAY
    return name in TOKENIZER_NO_DECAY or "quantizer" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups ``[decay, no_decay]`` exactly as the official code forms them (see
    ``no_decay``); frozen parameters are left out. ``model`` is a BrainTokenizer or a
    BrainOmni."""
    from ..models import BrainOmni

    omni = isinstance(model, BrainOmni)
    decay, exempt = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (exempt if no_decay(name, omni=omni) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": exempt, "weight_decay": 0.0},
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

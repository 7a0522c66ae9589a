"""The fine-tuning protocols (``brainomni finetune --protocol NAME``): the frozen, hashed
configuration of a run and the paper's settings (spec §5.2), with ``key=value`` overrides.
Separate from :mod:`.finetune` (the training itself) so that reading a protocol needs no
torch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .folds import PAPER_SEEDS


def _json_hash(d: Any) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning protocol. Defaults: the official code's (spec §5.2, camera-ready)."""

    recipe: str = "paper-finetune"
    lrs: tuple[float, ...] = (3e-6, 1e-5, 3e-5)  # backbone LR grid, chosen on validation
    head_lr_scale: float = 10.0  # head LR = 10 x backbone LR
    seeds: tuple[int, ...] = PAPER_SEEDS
    folds: int = 5
    epochs: int = 30
    patience: int = 5  # stop after this many epochs without a better validation BACC
    global_batch: int = 128
    micro_batch: int = 16
    eval_batch: int = 64
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-6
    weight_decay: float = 0.05
    warmup_ratio: float = 0.1
    warmup_min_ratio: float = 0.0
    cos_min_ratio: float = 0.1
    grad_clip: float = 0.0
    label_smoothing: float = 0.1
    head_dropout: float = 0.1
    frozen: bool = False  # freeze the backbone (the head stays a 2-layer MLP, spec §5.2)
    zero_stage: int = 2

    def __post_init__(self) -> None:
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"lrs={self.lrs}: give at least one LR > 0")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if self.zero_stage not in (0, 1, 2):
            raise ValueError(f"zero_stage={self.zero_stage}: fine-tuning supports 0, 1 or 2")
        if self.epochs < 1 or self.patience < 1 or self.eval_batch < 1:
            raise ValueError("epochs, patience and eval_batch must be >= 1")
        if self.micro_batch < 1 or self.global_batch % self.micro_batch:
            raise ValueError(
                f"global_batch={self.global_batch} must be a multiple of "
                f"micro_batch={self.micro_batch}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown fine-tuning config fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def hash(self) -> str:
        return _json_hash(self.to_dict())


def paper_finetune() -> FinetuneConfig:
    """The official code's protocol: 5 folds x seeds 42/3407, LR grid {3e-6, 1e-5, 3e-5},
    head 10x, global batch 128 (micro 16), AdamW (0.9, 0.99) eps 1e-6 wd 0.05, warmup 0.1,
    cosine to 0.1, label smoothing 0.1, 30 epochs, ZeRO-2."""
    return FinetuneConfig()


def paper_frozen() -> FinetuneConfig:
    """As :func:`paper_finetune` with the backbone frozen (AD65/TUAB/TUEV "frozen" rows)."""
    return replace(FinetuneConfig(), recipe="paper-frozen", frozen=True)


def paper_v1() -> FinetuneConfig:
    """The v1 paper's protocol (spec §5.2): 3 folds, seed 42, global batch 64, AdamW
    (0.9, 0.95), warmup 0.05. The v1 paper does not say how it splits validation from the
    3 folds; here each fold is 1 train / 1 val / 1 test group."""
    return replace(
        FinetuneConfig(),
        recipe="paper-v1",
        folds=3,
        seeds=(42,),
        global_batch=64,
        betas=(0.9, 0.95),
        warmup_ratio=0.05,
        patience=30,
    )


def cpu_test_finetune() -> FinetuneConfig:
    """Seconds on a CPU: small batches, few epochs, 3 folds, one seed."""
    return FinetuneConfig(
        recipe="cpu-test-finetune",
        lrs=(1e-3,),
        seeds=(42,),
        folds=3,
        epochs=12,
        patience=6,
        global_batch=8,
        micro_batch=8,
        eval_batch=32,
        warmup_ratio=0.1,
        label_smoothing=0.1,
    )


RECIPES: dict[str, Callable[[], FinetuneConfig]] = {
    "paper-finetune": paper_finetune,
    "paper-frozen": paper_frozen,
    "paper-v1": paper_v1,
    "cpu-test-finetune": cpu_test_finetune,
}


def get_recipe(name: str) -> FinetuneConfig:
    if name not in RECIPES:
        raise ValueError(f"unknown fine-tuning recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]()


def apply_overrides(cfg: FinetuneConfig, items: Sequence[str]) -> FinetuneConfig:
    """``field=value`` overrides (values parse as JSON: ``lrs=[1e-4,3e-4]``, ``frozen=true``)."""
    from brainomni.cli_common import parse_kv  # the one KEY=VALUE parser and typing rule

    d = cfg.to_dict()
    for key, value in parse_kv(items, "override (e.g. epochs=10)").items():
        if key not in d:
            raise ValueError(f"unknown fine-tuning config field {key!r}")
        value = tuple(value) if isinstance(value, list) else value
        if key in ("lrs", "seeds") and not isinstance(value, tuple):
            value = (value,)
        d[key] = value
    return FinetuneConfig.from_dict(d)

"""Training configuration as code: nested dataclasses checked when built, recipes as functions.

A recipe returns the whole :class:`TrainConfig` of a run; ``k=v`` overrides on the command
line (``optim.lr=1e-3``, ``data.micro_batch=8``, ``model.n_filters=8``) are applied with
:func:`apply_overrides` and the result is validated again. Numbers follow spec §4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

KINDS = ("tokenizer", "omni")


@dataclass(frozen=True)
class DataConfig:
    manifest: str = ""  # shard manifest (tokenizer, omni --source raw) or token manifest
    train_split: str = "train"
    val_splits: tuple[str, ...] = ("val",)
    unseen_splits: bool = True  # also validate on every ``unseen-*`` split (tokenizer)
    source: str = "tokens"  # omni: "tokens" (token manifest) or "raw" (30-s signal shards)
    micro_batch: int = 16
    workers: int = 2
    chunk: int = 512  # bounded shuffle buffer, samples per stream
    bucket: bool = True
    verify_sha256: bool = True
    read_attempts: int = 3
    shards_root: str | None = None  # read shards from here instead of the manifest's root
    val_max_batches: int = 50  # per rank and split
    # training batches only (tokenizer): at most this many random real channels per
    # recording (0: all) and a random crop of this many samples (0: the whole sample);
    # validation always sees whole samples. Cheaper steps for short CPU runs (the demo).
    train_channels: int = 0
    train_crop: int = 0

    def __post_init__(self) -> None:
        if self.train_channels < 0 or self.train_crop < 0:
            raise ValueError("data.train_channels and data.train_crop must be >= 0 (0: off)")
        if self.source not in ("tokens", "raw"):
            raise ValueError(f"data.source={self.source!r}: use 'tokens' or 'raw'")
        if self.micro_batch < 1 or self.chunk < self.micro_batch:
            raise ValueError(f"data.micro_batch={self.micro_batch} must be in [1, data.chunk]")
        if self.workers < 0 or self.read_attempts < 1:
            raise ValueError("data.workers must be >= 0 and data.read_attempts >= 1")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = 1e-5
    weight_decay: float = 1e-2
    warmup_ratio: float = 0.1  # of the total optimizer steps
    warmup_min_ratio: float = 0.1
    cos_min_ratio: float = 0.05
    grad_clip: float = 0.0  # 0: none (the official runs do not clip)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr={self.lr} must be > 0")
        if not (0 <= self.warmup_ratio < 1 and 0 <= self.cos_min_ratio <= 1):
            raise ValueError("optim.warmup_ratio must be in [0, 1) and cos_min_ratio in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    kind: str = "tokenizer"
    recipe: str = ""
    size: str = "tiny"  # omni: tiny | base
    model: dict[str, Any] = field(
        default_factory=dict
    )  # TokenizerConfig / BrainOmniConfig overrides
    tokenizer: str | None = None  # omni: exported tokenizer (directory from `brainomni export`)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    global_batch: int = 512
    epochs: float = 16.0
    max_steps: int | None = None  # overrides epochs when set
    zero_stage: int = 2
    offload: bool = False
    seed: int = 42
    val_every: int = 1000
    ckpt_every: int = 1000
    keep_last: int = 3
    log_every: int = 10
    plots: bool = True
    log_samples: bool = False  # write the keys of every micro-batch (tests, audits)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: choose one of {KINDS}")
        if self.size not in ("tiny", "base"):
            raise ValueError(f"size={self.size!r}: choose tiny or base")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage={self.zero_stage}: use 0, 1, 2 or 3")
        if self.global_batch < 1 or self.global_batch % self.data.micro_batch:
            raise ValueError(
                f"global_batch={self.global_batch} must be a multiple of data.micro_batch="
                f"{self.data.micro_batch}"
            )
        for name in ("val_every", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.kind == "omni" and self.data.source == "raw" and not self.tokenizer:
            raise ValueError("omni with data.source=raw needs tokenizer=EXPORT_DIR")

    def grad_accum(self, world: int) -> int:
        """Micro-batches per optimizer step so that micro x world x accum = global batch."""
        per = self.data.micro_batch * world
        if self.global_batch % per:
            raise ValueError(
                f"global_batch={self.global_batch} is not a multiple of micro_batch "
                f"{self.data.micro_batch} x world {world}; change data.micro_batch or global_batch"
            )
        return self.global_batch // per

    def total_steps(self, train_samples: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, int(-(-self.epochs * train_samples // self.global_batch)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["data"] = DataConfig(**_tuples(d.get("data", {}), DataConfig))
        d["optim"] = OptimConfig(**_tuples(d.get("optim", {}), OptimConfig))
        return cls(**d)


def _tuples(d: dict[str, Any], cls: type) -> dict[str, Any]:
    """JSON lists back to tuples for tuple-typed fields."""
    names = {f.name: f.type for f in fields(cls)}
    return {
        k: tuple(v) if isinstance(v, list) and "tuple" in str(names.get(k)) else v
        for k, v in d.items()
    }


# --------------------------------------------------------------------------- overrides


def apply_overrides(cfg: TrainConfig, items: Sequence[str]) -> TrainConfig:
    """Apply ``section.field=value`` (or ``field=value``) overrides; values typed by
    :func:`brainomni.cli_common.parse_value` (JSON, else true/false/none, else text).

    ``model.X=V`` sets a model field (TokenizerConfig / BrainOmniConfig). All overrides are
    applied first and the result is validated once; unknown fields raise ``ValueError``.
    """
    d = cfg.to_dict()
    top = {f.name for f in fields(TrainConfig)}
    subs = {
        "data": {f.name for f in fields(DataConfig)},
        "optim": {f.name for f in fields(OptimConfig)},
    }
    from brainomni.cli_common import parse_kv  # the one KEY=VALUE parser and typing rule

    for key, value in parse_kv(items, "override (e.g. optim.lr=1e-4)").items():
        value = tuple(value) if isinstance(value, list) else value  # config fields hold tuples
        parts = key.split(".")
        if parts[0] == "model" and len(parts) == 2:
            d["model"] = {**d["model"], parts[1]: value}
        elif len(parts) == 1 and parts[0] in top and parts[0] not in subs:
            d[parts[0]] = value
        elif len(parts) == 2 and parts[1] in subs.get(parts[0], ()):
            d[parts[0]] = {**d[parts[0]], parts[1]: value}
        else:
            raise ValueError(f"unknown config field {key!r}")
    return TrainConfig.from_dict(d)


# --------------------------------------------------------------------------- recipes


def paper_tokenizer() -> TrainConfig:
    """BrainTokenizer as in the paper (spec §4): global batch 512 (micro 16), 16 epochs,
    AdamW (0.5, 0.9) eps 1e-5 wd 1e-2, peak 2e-4, warmup 10 % from 0.1, cosine to 0.05,
    ZeRO-2."""
    return TrainConfig(
        kind="tokenizer",
        recipe="paper-tokenizer",
        global_batch=512,
        epochs=16,
        data=DataConfig(micro_batch=16, val_splits=("val",)),
        optim=OptimConfig(
            lr=2e-4,
            betas=(0.5, 0.9),
            eps=1e-5,
            weight_decay=1e-2,
            warmup_ratio=0.1,
            warmup_min_ratio=0.1,
            cos_min_ratio=0.05,
        ),
        zero_stage=2,
    )


def _paper_omni(size: str, lr: float) -> TrainConfig:
    return TrainConfig(
        kind="omni",
        recipe=f"paper-omni-{size}",
        size=size,
        global_batch=256,
        epochs=32,
        data=DataConfig(micro_batch=8, val_splits=("val",), unseen_splits=False, chunk=256),
        optim=OptimConfig(
            lr=lr,
            betas=(0.9, 0.95),
            eps=1e-6,
            weight_decay=0.05,
            warmup_ratio=0.1,
            warmup_min_ratio=0.1,
            cos_min_ratio=0.1,
        ),
        zero_stage=2,
    )


def paper_omni_tiny() -> TrainConfig:
    """BrainOmni tiny (spec §4): global 256 (micro 8), 32 epochs, AdamW (0.9, 0.95) eps 1e-6
    wd 0.05, peak 5e-4, cosine to 0.1, ZeRO-2."""
    return _paper_omni("tiny", 5e-4)


def paper_omni_base() -> TrainConfig:
    """BrainOmni base: as tiny with peak LR 4e-4."""
    return _paper_omni("base", 4e-4)


TEST_TOKENIZER_MODEL = {
    "n_filters": 2,
    "n_dim": 16,
    "n_neuro": 4,
    "n_head": 2,
    "codebook_size": 16,
    "num_quantizers": 2,
    "kmeans_iters": 2,
}


def cpu_test_tokenizer() -> TrainConfig:
    """A few-second CPU run: a very small tokenizer, global batch 8 (micro 2)."""
    return TrainConfig(
        kind="tokenizer",
        recipe="cpu-test-tokenizer",
        model=dict(TEST_TOKENIZER_MODEL),
        global_batch=8,
        max_steps=6,
        val_every=3,
        ckpt_every=2,
        log_every=1,
        data=DataConfig(micro_batch=2, workers=0, chunk=8, val_max_batches=2, read_attempts=2),
        optim=OptimConfig(lr=1e-3, betas=(0.5, 0.9), eps=1e-5, weight_decay=1e-2),
        zero_stage=2,
    )


def cpu_test_omni() -> TrainConfig:
    """A few-second CPU run of a 2-block BrainOmni over the test tokenizer's tokens."""
    return TrainConfig(
        kind="omni",
        recipe="cpu-test-omni",
        model={"lm_dim": 16, "lm_head": 4, "lm_depth": 2, "num_quantizers_used": 2},
        global_batch=4,
        max_steps=4,
        val_every=2,
        ckpt_every=2,
        log_every=1,
        data=DataConfig(
            micro_batch=2,
            workers=0,
            chunk=4,
            val_max_batches=2,
            unseen_splits=False,
            read_attempts=2,
        ),
        optim=OptimConfig(
            lr=1e-3, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.05, cos_min_ratio=0.1
        ),
        zero_stage=2,
    )


RECIPES: dict[str, Callable[[], TrainConfig]] = {
    "paper-tokenizer": paper_tokenizer,
    "paper-omni-tiny": paper_omni_tiny,
    "paper-omni-base": paper_omni_base,
    "cpu-test-tokenizer": cpu_test_tokenizer,
    "cpu-test-omni": cpu_test_omni,
}
DEFAULT_RECIPE = {"tokenizer": "paper-tokenizer", "omni": "paper-omni-tiny"}


def get_recipe(name: str) -> TrainConfig:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]()

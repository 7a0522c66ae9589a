"""The fine-tuning classifier: BrainOmni's ``encode`` -> mean over time -> flatten
(S x lm_dim) -> Dropout -> Linear(lm_dim) -> SELU -> Linear(n_classes) (spec §5.2), and where
its backbone comes from (:class:`Backbone`: an export, pretrained or re-drawn)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


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
